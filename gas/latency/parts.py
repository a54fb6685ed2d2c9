"""A genome as the parts its network runs one after another (stem, blocks, head), each keyed by its shapes.

Each space declares its parts (`SearchSpace.parts`) and their kinds (`PartKind`: how to build a part's real
module, and the work figures the latency model regresses a kind's timings on); this module asks the
genome's space for them, and builds and describes a part through its kind.
"""

from __future__ import annotations

from functools import cache

from torch import nn

from gas.genome import Genome
from gas.space import Key, Part, PartKind, SearchSpace, get_space

__all__ = ["Key", "Part", "PartKind", "build", "decompose", "family", "features"]


def family(genome: Genome) -> str:
    """The space a genome belongs to, without options ('name:option=2' → 'name')."""
    return genome.space.partition(":")[0]


@cache
def _space(name: str) -> SearchSpace:
    """The space of that name, looked up once: a prediction takes microseconds, a lookup lists a folder."""
    return get_space(name)


def decompose(genome: Genome) -> list[Part]:
    """The parts `genome`'s network runs, in order; GasError for a space that does not declare its parts."""
    return _space(genome.space).parts(genome)


def features(part: Part) -> tuple[float, ...]:
    """The work figures of one example of `part`, in its kind's `feature_names` order."""
    return part.kind.features(part.key)


def build(part: Part) -> tuple[nn.Module, tuple[int, ...]]:
    """The real module of `part` and the shape of one example's input."""
    return part.kind.build(part.key)
