"""`gas cost --check`: the analytic count beside fvcore's count of the built module, through the CLI.

This module is also a plug-in search space (`tests.test_cost_check:fault=...`): the turbovit space with a
cost model that miscounts on purpose, so the check has something real to catch.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from gas.cost import Cost, Count
from gas.space import load_genome
from search_spaces.turbovit import TurboViTGenome, TurboViTSpace
from tests.conftest import run_gas


class MiscountedSpace(TurboViTSpace):
    """turbovit, except its cost model forgets the stem's bias (`params`) or the stem's FLOPs (`flops`)."""

    def __init__(self, fault: str = "params") -> None:
        super().__init__()
        self.fault = fault
        self.name = f"tests.test_cost_check:fault={fault}"

    def cost(self, genome: TurboViTGenome) -> Cost:
        cost = super().cost(genome)
        stem, *rest = cost.rows
        params, flops = stem.count.params, stem.count.flops
        if self.fault == "params":
            params -= genome.stem.dim
        else:
            flops = 0
        return dataclasses.replace(cost, rows=(dataclasses.replace(stem, count=Count(params, flops)), *rest))


SPACE = MiscountedSpace


def _check_json(*args: str) -> tuple[int, dict]:
    result = run_gas("cost", *args, "--check", "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_turbovit_agrees_with_fvcore():
    result = run_gas("cost", "turbovit", "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("as built"))
    # Analytic and built parameters, analytic and fvcore FLOPs, the difference and the verdict.
    assert row.split() == ["as", "built", "12,659,352", "12,659,352", "2,258,995,968", "2,258,995,968", "+0.000%", "ok"]
    assert not any(line.startswith("fused") for line in lines), "hiera-style models have no fused form"


def test_efficientvit_checks_the_built_and_the_fused_model():
    status, report = _check_json("efficientvit_m0")
    assert status == 0
    assert [check["form"] for check in report["check"]] == ["as built", "fused"]
    built, fused = report["check"]
    assert built["analytic"] == {"params": report["params"], "flops": report["flops"]}
    assert fused["analytic"] == report["fused"]
    for check in (built, fused):
        assert check["agrees"] is True and check["built"]["params"] == check["analytic"]["params"]
        assert abs(check["flops_difference"]) <= 0.005
        assert check["flops_difference"] == pytest.approx(
            (check["analytic"]["flops"] - check["built"]["flops"]) / check["built"]["flops"]
        )


def test_json_without_check_is_unchanged():
    result = run_gas("cost", "efficientvit_m0", "--json")
    assert result.returncode == 0, result.stderr
    assert "check" not in json.loads(result.stdout)


@pytest.mark.parametrize("fault", ["params", "flops"])
def test_a_miscount_fails_the_check(tmp_path, fault):
    # The turbovit reference, costed by the miscounting space.
    path = tmp_path / "genome.json"
    document = json.loads(load_genome("turbovit").to_json())
    path.write_text(json.dumps({**document, "space": f"tests.test_cost_check:fault={fault}"}))

    status, report = _check_json(str(path))
    assert status == 1
    (check,) = report["check"]
    assert check["agrees"] is False
    if fault == "params":
        assert check["built"]["params"] - check["analytic"]["params"] == 64  # the stem conv's bias
        assert check["flops_difference"] == 0.0
    else:
        assert check["built"]["params"] == check["analytic"]["params"]
        assert check["flops_difference"] == pytest.approx(-29.5e6 / 2.259e9, rel=0.01)

    table = run_gas("cost", str(path), "--check")
    assert table.returncode == 1
    assert "DIFFERS" in table.stdout and "Traceback" not in table.stderr
    assert table.stderr.strip().splitlines() == [
        "gas cost: the analytic count differs from the built model's (parameters must be equal, FLOPs within "
        "0.5% of fvcore's)"
    ]
