"""The analytic cost model against published numbers and against fvcore on built models."""

import json
import random

import pytest

from gas.errors import GasError
from gas.fvcore_count import fvcore_flops
from gas.search import sampling
from gas.search.sampling import sample_genomes
from gas.space import get_space, load_genome

PUBLISHED = {  # params, FLOPs (fvcore MACs) at 224px: Hiera README / timm model cards
    "hiera_tiny": (27.91e6, 4.91e9),
    "hiera_small": (35.01e6, 6.42e9),
    "hiera_base": (51.52e6, 9.40e9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_cli_cost_matches_published_hiera(gas_cli, name):
    result = gas_cli("cost", name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    params, flops = PUBLISHED[name]
    assert report["params"] == pytest.approx(params, rel=1e-3)
    assert report["flops"] == pytest.approx(flops, rel=1e-2)
    assert sum(part["flops"] for part in report["parts"]) == report["flops"]


def test_turbovit_reference_is_turbovit_scale():
    cost = get_space("turbovit").cost(load_genome("turbovit"))
    assert cost.params == pytest.approx(12.7e6, rel=0.01)
    assert cost.flops <= 2.5e9


@pytest.fixture(scope="module")
def sampled_genomes(tmp_path_factory):
    """27 genomes written by `gas sample`, at 224px and three proxy resolutions."""
    from tests.conftest import run_gas

    out = tmp_path_factory.mktemp("genomes")
    paths = []
    for resolution, n, budget in [(224, 9, "2.5G"), (64, 6, None), (96, 6, None), (128, 6, None)]:
        folder = out / str(resolution)
        args = ["sample", "--n", str(n), "--seed", str(resolution), "--resolution", str(resolution)]
        result = run_gas(*args, *(["--budget", budget] if budget else []), "--out", str(folder))
        assert result.returncode == 0, result.stderr
        paths += sorted(folder.glob("*.json"))
    assert len(paths) == 27
    return paths


def test_analytic_cost_equals_built_model_and_fvcore(sampled_genomes):
    space = get_space("turbovit")
    for path in sampled_genomes:
        genome = load_genome(path)
        cost = space.cost(genome)
        model = space.build(genome)
        assert cost.params == sum(p.numel() for p in model.parameters()), path
        reference = fvcore_flops(model, genome.resolution)
        assert cost.flops == pytest.approx(reference, rel=0.005), path


def test_sample_respects_budget_and_is_seeded(sampled_genomes, gas_cli, tmp_path):
    space = get_space("turbovit")
    for path in sampled_genomes[:9]:
        assert space.cost(load_genome(path)).flops <= 2.5e9
    again = gas_cli("sample", "--n", "9", "--seed", "224", "--budget", "2.5G", "--out", str(tmp_path))
    assert again.returncode == 0
    assert [p.read_text() for p in sorted(tmp_path.glob("*.json"))] == [p.read_text() for p in sampled_genomes[:9]]


class NearCheapest:
    """Answers a space's sampler as an Optuna trial would, but keeps to genomes near the cheapest, which random
    draws over the full ranges almost never reach: every size at its lowest value 9 times in 10 (at the next
    otherwise), every parameter named in `free` (those that are not sizes) at any of its values."""

    def __init__(self, seed: int, free: tuple[str, ...]) -> None:
        self.random, self.free = random.Random(seed), free

    def _pick(self, name: str, values: list) -> object:
        if name.endswith(self.free):
            return self.random.choice(values)
        return values[0] if self.random.random() < 0.9 else values[1]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        return self._pick(name, list(range(low, high + 1, step)))

    def suggest_float(self, name: str, low: float, high: float, step: float) -> float:
        return self._pick(name, [low + i * step for i in range(round((high - low) / step) + 1)])

    def suggest_categorical(self, name: str, choices: tuple) -> object:
        return self._pick(name, sorted(choices))


CHOICES = {  # what each space's sampler draws that is not a size
    "turbovit": ("stem.kernel", "mask_unit", "global_from_stage", "head_dim"),
    "efficientvit": ("heads", "window", "q_kernel", "dw_kernel", "se_ratio"),
}


@pytest.mark.parametrize("space_name", ["turbovit", "turbovit:q_pools=2", "efficientvit", "efficientvit:stages=4"])
@pytest.mark.parametrize("resolution", [224, 64])
def test_no_drawn_genome_costs_less_than_the_space_says_is_least(space_name, resolution):
    """`least_cost` is what refuses a budget without drawing, so no genome may be cheaper: neither random draws
    nor genomes near the cheapest."""
    space = get_space(space_name)
    least = space.least_cost(resolution)
    free = CHOICES[space_name.split(":")[0]]
    near = [space.sample(NearCheapest(seed, free), resolution=resolution) for seed in range(400)]
    costs = [cost for _, cost in sample_genomes(space_name, 100, 0, resolution)] + [space.cost(g) for g in near]
    assert min(cost.flops for cost in costs) >= least.flops
    assert min(cost.params for cost in costs) >= least.params
    assert min(cost.flops for cost in costs) < 1.05 * least.flops, "genomes near the cheapest come close to it"


def test_a_budget_no_random_draw_meets_is_refused_after_the_draws(monkeypatch):
    """Just over the least cost, the cheapest genomes exist but random draws do not reach them."""
    monkeypatch.setattr(sampling, "MAX_DRAWS_PER_GENOME", 50)
    budget = get_space("turbovit").least_cost().flops + 1
    with pytest.raises(GasError, match=r"found only 0 of 1 genomes within \S+ FLOPs in 50 draws"):
        sampling.sample_genomes("turbovit", 1, 0, 224, budget)
