"""The parts a space declares for the latency model: they do its network's work, and any family can declare them.

The latency model prices a genome as the sum of its parts, so parts that miss a block, or run one on the
wrong token grid or attention layout, would price another network than the one the genome builds. The
parts are checked here against the built model itself: their modules, chained, do the same multiply-adds.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gas.errors import GasError
from gas.genome import Genome
from gas.latency import BuildPlan, LatencyModel, LatencySettings, build_genomes, decompose
from gas.latency.parts import build
from gas.search.sampling import sample_genomes
from gas.space import SearchSpace, get_space, load_genome
from tests.conv_space import ConvSpace

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONE_THREAD = LatencySettings(device="cpu", threads=1)


@cache
def _genomes() -> dict[str, Genome]:
    """References and random genomes of every shipped space and option, small enough to run in a blink."""
    cases = {f"{name}@64": load_genome(name).at_resolution(64) for name in ("turbovit", "efficientvit_m5")}
    for space in ("turbovit", "turbovit:q_pools=2", "efficientvit", "efficientvit:stages=4"):
        cases[f"random {space}@64"] = sample_genomes(space, 1, seed=21, resolution=64)[0][0]
    return cases


def _flops(model: nn.Module, resolution: int) -> int:
    """FLOPs of one image through `model` as torch counts them: convs, matmuls and attention."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, resolution, resolution))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", _genomes())
def test_the_declared_parts_do_the_networks_work(name):
    """The parts' modules, chained, do the multiply-adds of the network the genome builds, layer for layer.

    Each part's module is built on its own from its key (the chain test in test_latency checks shapes and
    parameters), so a part on the wrong grid, with the wrong attention windows or pooling, or a part
    missing, counts other FLOPs.
    """
    genome = _genomes()[name]
    chained = nn.Sequential(*(build(part)[0] for part in decompose(genome)))
    assert _flops(chained, genome.resolution) == _flops(get_space(genome.space).build(genome), genome.resolution)


@pytest.mark.parametrize(("space", "max_flops"), [("turbovit", None), ("efficientvit", 300_000_000)])
def test_a_build_draws_the_genomes_a_search_samples(space, max_flops):
    """The latency model builds from the seeded random genomes `gas sample` draws with the same arguments."""
    plan = BuildPlan(genomes=6, calibrate=0, seed=4, max_flops=max_flops)
    drawn = sample_genomes(space, plan.genomes, plan.seed, plan.resolution, max_flops)
    assert [genome.to_json() for genome in build_genomes(space, plan)] == [genome.to_json() for genome, _ in drawn]


def test_a_family_declared_outside_gas_has_its_latency_predicted(tmp_path):
    """A family gas has never heard of (tests.conv_space) is built, predicted and cached from its declaration."""
    plan = BuildPlan(genomes=3, calibrate=3, part_runs=1, runs=1, warmup=0, resolution=32)
    genome = load_genome({"space": "tests.conv_space", "resolution": 32, "widths": [16, 24]})
    model = LatencyModel.for_device(ONE_THREAD, plan, cache=tmp_path)
    seconds = model.predict(genome)
    assert seconds > 0 and model.is_built("tests.conv_space")
    assert set(model.table) == {"conv.layer", "conv.head"}
    again = LatencyModel.for_device(ONE_THREAD, plan, cache=tmp_path)
    assert again.is_built("tests.conv_space") and again.predict(genome) == pytest.approx(seconds)


def test_a_space_that_declares_no_parts_is_refused_in_one_line():
    class Partless(ConvSpace):
        name = "partless"
        parts = SearchSpace.parts

    with pytest.raises(GasError) as error:
        Partless().parts(load_genome({"space": "tests.conv_space", "widths": [8]}))
    message = str(error.value)
    assert "does not know the partless space's networks; it knows efficientvit, turbovit" in message
    assert "\n" not in message
