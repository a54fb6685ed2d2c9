"""Genome JSON round trips, and every rule names itself in one line when broken."""

import copy
import json

import optuna
import pytest
import torch

from gas.errors import GasError, GenomeError
from gas.space import get_space, load_genome
from search_spaces.turbovit import MAX_Q_POOLS


def turbovit_dict():
    return load_genome("turbovit").to_dict()


def test_json_round_trip_is_exact(tmp_path):
    for name in ["turbovit", "hiera_tiny", "hiera_base"]:
        genome = load_genome(name)
        path = tmp_path / f"{name}.json"
        path.write_text(genome.to_json())
        again = load_genome(path)
        assert again == genome
        assert again.to_json() == genome.to_json()


def _break(edit):
    data = copy.deepcopy(turbovit_dict())
    edit(data)
    return data


BROKEN = [
    # (edit, expected fragment of the single-line message)
    (lambda d: d["blocks"][4].update(heads=3), "block 4: heads=3 does not divide dim=128"),
    (lambda d: d["blocks"][2].update(heads="4"), "block 2.heads: must be an integer"),
    (lambda d: d["blocks"][0].pop("dim"), "block 0: missing field 'dim'"),
    (lambda d: d["blocks"][0].update(width=3), "block 0: unknown field 'width'"),
    (lambda d: d["blocks"][0].update(attention="local"), "block 0.attention: must be one of"),
    (lambda d: d["blocks"][0].update(q_pool=1), "block 0.q_pool: must be true or false"),
    (lambda d: d["stem"].update(dim=2.5), "stem.dim: must be an integer"),
    (lambda d: d.update(blocks={}), "blocks: must be a list"),
    (lambda d: d.update(resolution=0), "resolution must be positive"),
    (lambda d: d.update(num_classes=0), "num_classes must be positive"),
    (lambda d: d["stem"].update(stride=0), "stem: dim, kernel and stride must be positive"),
    (lambda d: (d.update(resolution=1), d["stem"].update(padding=0)), "stem: a 7x7/4 conv leaves no tokens at 1px"),
    (lambda d: d.update(mask_unit=6), "mask_unit=6 must be a power of two"),
    (lambda d: d.update(blocks=d["blocks"][:1]), "the space admits 2 to 32 blocks, got 1"),
    (lambda d: d.update(resolution=240), "mask_unit=8 does not divide the 60x60 token grid at 240px"),
    (lambda d: d["blocks"][3].update(dim=2048, heads=4), "block 3: dim=2048 is outside the space's range"),
    (lambda d: d["blocks"][3].update(mlp_ratio=16), "block 3: mlp_ratio=16 is outside the space's range"),
    (lambda d: d.update(mask_unit=2), "block 3: after 1 Q-pool a mask unit is 1x1 token"),
    (lambda d: d["blocks"][8].update(attention="mask_unit"), "block 8: after 3 Q-pools a mask unit is 1x1"),
    (
        lambda d: d["blocks"][3].update(attention="global"),
        "block 4: mask-unit attention after global attention in block 3",
    ),
    (lambda d: d["blocks"][2].update(q_pool=False), "needs exactly 3 Q-pool blocks, found 2 (blocks 5, 7)"),
    (lambda d: d.update(space="nope"), "unknown space 'nope'"),
]


@pytest.mark.parametrize(("edit", "message"), BROKEN, ids=[message for _, message in BROKEN])
def test_broken_genome_names_the_first_broken_rule(edit, message):
    with pytest.raises(GasError) as error:
        load_genome(_break(edit))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_q_pool_needs_an_even_grid_at_the_resolution():
    with pytest.raises(GenomeError, match=r"block 7: Q-pool needs an even token grid, but it is 5x5 here"):
        load_genome(_break(lambda d: d.update(resolution=80, mask_unit=4)))


def test_q_pools_option_changes_the_design_rule():
    data = _break(lambda d: d["blocks"][7].update(q_pool=False))
    with pytest.raises(GenomeError, match="exactly 3 Q-pool blocks"):
        load_genome(data)
    genome = load_genome({**data, "space": "turbovit:q_pools=2"})
    assert genome.space == "turbovit:q_pools=2"
    assert get_space(genome.space).q_pools == 2


@pytest.mark.parametrize("q_pools", range(1, MAX_Q_POOLS + 1))
def test_every_accepted_q_pools_value_samples_at_224(q_pools):
    space = get_space(f"turbovit:q_pools={q_pools}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=q_pools))
    for _ in range(8):
        genome = space.sample(study.ask(), resolution=224)
        assert genome.resolution == 224 and sum(block.q_pool for block in genome.blocks) == q_pools
        assert load_genome(json.loads(genome.to_json())) == genome
        assert space.cost(genome).flops > 0
    with torch.no_grad():
        assert space.build(genome).eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_a_fourth_q_pool_cannot_happen_at_224():
    """The 56x56 grid of a 224px image is 7x7 after three pools, which is why the option stops at 3."""
    assert MAX_Q_POOLS == 3
    data = load_genome("hiera_tiny").to_dict()
    data["blocks"] = [*data["blocks"], {**data["blocks"][-1], "q_pool": True}]
    with pytest.raises(GenomeError, match=r"block 12: Q-pool needs an even token grid, but it is 7x7 here"):
        load_genome(data)


@pytest.mark.parametrize("q_pools", [4, 5, 0, "true"])
def test_q_pools_values_that_cannot_sample_at_224_are_refused(q_pools):
    with pytest.raises(GasError) as error:
        get_space(f"turbovit:q_pools={q_pools}")
    expected = "turbovit: q_pools must be an integer from 1 to 3 (3 is the most that samples at 224px), got "
    assert str(error.value) == expected + {"true": "True"}.get(q_pools, str(q_pools))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cost", "no_such_model"], "neither a genome file nor a reference"),
        (["cost", "missing.json"], "cannot read genome missing.json"),
        (["sample", "--budget", "abc", "--out", "x"], "budget 'abc' is not a count"),
        (["sample", "--space", "nope", "--out", "x"], "unknown space 'nope'"),
        (["sample", "--space", "turbovit:q_pools=4", "--out", "x"], "q_pools must be an integer from 1 to 3"),
        (["sample", "--budget", "1M", "--out", "x"], "the cheapest turbovit genomes at 224px have 38.92M FLOPs"),
        (["sample", "--max-params", "100K", "--out", "x"], "have 291.34K params, over 100K params"),
        (["cost", "hiera_tiny", "--resolution", "100"], "mask_unit=8 does not divide the 25x25 token grid"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(gas_cli, tmp_path, args, message):
    result = gas_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_broken_genome_file(gas_cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_break(lambda d: d["blocks"][4].update(heads=3))))
    result = gas_cli("cost", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == "gas cost: error: block 4: heads=3 does not divide dim=128"
    path.write_text("{not json")
    result = gas_cli("cost", str(path))
    assert result.returncode == 2 and "is not valid JSON" in result.stderr
