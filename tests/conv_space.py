"""A plug-in model family outside gas and search_spaces: plain conv nets (stride-2 3x3 convs, a pooled head).

The module declares all gas needs of a family (genome, rules, sampler, model, cost, and the parts the
latency model times), and gas loads it by module path (`tests.conv_space`) as it would a user's own.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping

import optuna
import torch
from torch import nn

from gas import cost as count
from gas.errors import GenomeError
from gas.genome import Genome
from gas.space import Key, Part, PartKind, SearchSpace

WIDTHS = (8, 32, 8)  # low, high, step
DEPTHS = (1, 3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvGenome(Genome):
    space: str = "tests.conv_space"
    widths: tuple[int, ...]


def halve(side: int) -> int:
    """Side after a 3x3 conv of stride 2 and padding 1."""
    return (side - 1) // 2 + 1


class PooledHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.mean(dim=(2, 3)))


def conv_layer(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, 2, 1), nn.ReLU())


def _conv_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    side, dim_in, dim_out = key
    return conv_layer(dim_in, dim_out), (dim_in, side, side)


def _conv_features(key: Key) -> tuple[float, ...]:
    side, dim_in, dim_out = key
    pixels = halve(side) ** 2
    return (1.0, pixels * dim_out * dim_in * 9, side * side * dim_in + 2 * pixels * dim_out)


def _head_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    side, dim, num_classes = key
    return PooledHead(dim, num_classes), (dim, side, side)


def _head_features(key: Key) -> tuple[float, ...]:
    side, dim, num_classes = key
    return (1.0, dim * num_classes, side * side * dim)


CONV = PartKind("conv.layer", ("side", "dim_in", "dim_out"), ("calls", "macs", "elements"), _conv_features, _conv_build)
HEAD = PartKind("conv.head", ("side", "dim", "num_classes"), ("calls", "macs", "elements"), _head_features, _head_build)


class ConvSpace(SearchSpace):
    name = "tests.conv_space"
    genome_type = ConvGenome

    @property
    def references(self) -> Mapping[str, Genome]:
        return {}

    def check(self, genome: Genome) -> None:
        if not isinstance(genome, ConvGenome):
            raise GenomeError(f"a {type(genome).__name__} is not a conv genome")
        if not genome.widths or min(genome.widths) < 1:
            raise GenomeError(f"widths must be positive and at least one, got {list(genome.widths)}")

    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> ConvGenome:
        depth = trial.suggest_int("depth", *DEPTHS)
        low, high, step = WIDTHS
        widths = tuple(trial.suggest_int(f"width{index}", low, high, step=step) for index in range(depth))
        return ConvGenome(resolution=resolution, num_classes=num_classes, widths=widths)

    def build(self, genome: Genome) -> nn.Module:
        assert isinstance(genome, ConvGenome)
        dims = (3, *genome.widths)
        layers = [conv_layer(dim_in, dim_out) for dim_in, dim_out in itertools.pairwise(dims)]
        return nn.Sequential(*layers, PooledHead(dims[-1], genome.num_classes))

    def cost(self, genome: Genome) -> count.Cost:
        assert isinstance(genome, ConvGenome)
        rows, side, dim_in = [], genome.resolution, 3
        for index, width in enumerate(genome.widths):
            side = halve(side)
            rows.append(count.Row(f"conv {index}", f"{dim_in}→{width}", count.conv2d(dim_in, width, 3, side * side)))
            dim_in = width
        rows.append(count.Row("head", f"linear {dim_in}", count.linear(1, dim_in, genome.num_classes)))
        return count.Cost(genome.resolution, tuple(rows))

    def describe(self, genome: Genome) -> dict[str, str]:
        assert isinstance(genome, ConvGenome)
        return {"widths": "-".join(map(str, genome.widths))}

    def parts(self, genome: Genome) -> list[Part]:
        assert isinstance(genome, ConvGenome)
        parts, side, dim_in = [], genome.resolution, 3
        for width in genome.widths:
            parts.append(Part(CONV, (side, dim_in, width)))
            side, dim_in = halve(side), width
        return [*parts, Part(HEAD, (side, dim_in, genome.num_classes))]


SPACE = ConvSpace
