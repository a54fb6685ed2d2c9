"""A study's limits, and reference networks scaled to just fit them: the fair baselines for what it found.

A search found its networks under limits (a FLOPs budget at 224px, a params cap, a latency limit measured
on its target device). A hand-designed network compared with them should meet the same limits, so
`scale` shrinks (or grows) a reference until it just fits: by width (every width alike) or by depth
(blocks of its deepest stage), as the reference's space knows how (`SearchSpace.scale`).

    limits = study_limits(study, runs=20)
    width = scale(load_genome("hiera_tiny"), "width", limits)   # the widest Hiera-T within them

Under a latency limit, "fits" means a measured median at or under it on this machine, which must be the
device the study measured on (its fingerprint); a scaler's steps measure each genome once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import torch

from gas import record
from gas.errors import GasError
from gas.genome import Genome
from gas.latency import LatencySettings, fingerprint, measure
from gas.latency.device import difference
from gas.space import get_space
from gas.units import compact_count, format_duration

__all__ = [
    "SCALINGS",
    "FlopsBudget",
    "Limit",
    "MeasuredLatency",
    "ParamsCap",
    "fits",
    "limits_text",
    "scale",
    "scale_depth",
    "scale_width",
    "study_latency_settings",
    "study_limits",
]

#: How a reference can be scaled to a study's limits.
SCALINGS = ("width", "depth")


@dataclass(frozen=True)
class FlopsBudget:
    """At most `flops` FLOPs at 224px."""

    flops: int

    def fits(self, genome: Genome) -> bool:
        return get_space(genome.space).cost(genome).flops <= self.flops

    def __str__(self) -> str:
        return f"{compact_count(self.flops)} FLOPs"


@dataclass(frozen=True)
class ParamsCap:
    """At most `params` parameters."""

    params: int

    def fits(self, genome: Genome) -> bool:
        return get_space(genome.space).cost(genome).params <= self.params

    def __str__(self) -> str:
        return f"{compact_count(self.params)} params"


class MeasuredLatency:
    """At most `seconds` of measured latency (the median of `runs` timed runs) with `settings` on this machine.

    Each genome is measured once; asking again gives the same answer, so a scaler's steps stay consistent.
    """

    def __init__(self, seconds: float, settings: LatencySettings, runs: int) -> None:
        self.seconds, self.settings, self.runs = seconds, settings, runs
        self._measured: dict[str, float] = {}

    def latency(self, genome: Genome) -> float:
        key = genome.to_json()
        if key not in self._measured:
            self._measured[key] = measure(genome, self.settings, self.runs).median
        return self._measured[key]

    def fits(self, genome: Genome) -> bool:
        return self.latency(genome) <= self.seconds

    def __str__(self) -> str:
        return f"{format_duration(self.seconds)} ({self.settings.describe()})"


Limit = FlopsBudget | ParamsCap | MeasuredLatency


def fits(genome: Genome, limits: Sequence[Limit]) -> bool:
    """Whether `genome` (at 224px) meets every limit; the cheap ones are asked first."""
    ordered = sorted(limits, key=lambda limit: isinstance(limit, MeasuredLatency))
    return all(limit.fits(genome) for limit in ordered)


def limits_text(limits: Sequence[Limit]) -> str:
    return " and ".join(str(limit) for limit in limits)


def study_latency_settings(study: optuna.Study) -> LatencySettings | None:
    """The device settings the study measured latency with, if it did; GasError if this machine is another.

    A latency holds on the device it was measured on: figures from another CPU or GPU, or other torch,
    would not compare with the study's.
    """
    latency = record.latency_record(study)
    if latency is None or not latency.settings:
        return None
    settings = LatencySettings(**latency.settings)
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise GasError(
            f"study {study.study_name!r} measured its latency on CUDA and this machine has none; run this where it "
            "searched"
        )
    mismatch = difference(fingerprint(settings), latency.fingerprint)
    if mismatch is not None:
        raise GasError(
            f"study {study.study_name!r} measured its latency on another device or settings "
            f"({mismatch.replace('in the file', 'in the study')}); run this where it searched"
        )
    return settings


def study_limits(study: optuna.Study, runs: int, budget: int | None = None) -> list[Limit]:
    """The limits the study searched under: its latency limit (measured here), FLOPs budget and params cap.

    `budget`, if given, must be the study's own; a study with no limit of its own needs it.
    """
    searched = record.study_record(study)
    searched_budget = searched.budget
    if budget is not None and searched_budget is not None and searched_budget != budget:
        raise GasError(
            f"study {study.study_name!r} searched under {compact_count(searched_budget)} FLOPs, not the "
            f"{compact_count(budget)} asked for; pass --budget {compact_count(searched_budget)} or another study"
        )
    limits: list[Limit] = []
    latency = record.latency_record(study)
    if latency is not None and latency.limit:
        settings = study_latency_settings(study)
        assert settings is not None
        limits.append(MeasuredLatency(float(latency.limit), settings, runs))
    flops = searched_budget or budget
    if flops is not None:
        limits.append(FlopsBudget(flops))
    if searched.max_params:
        limits.append(ParamsCap(searched.max_params))
    if not limits:
        raise GasError(f"study {study.study_name!r} records no FLOPs budget, params cap or latency limit")
    return limits


def scale(genome: Genome, how: str, limits: Sequence[Limit], name: str | None = None) -> Genome:
    """`genome` scaled by `how` ("width" or "depth") to the largest copy within `limits`; GasError if none fits.

    `name` names the genome in that error.
    """
    if how not in SCALINGS:
        raise GasError(f"cannot scale by {how!r}; scale by {' or '.join(SCALINGS)}")
    scaled = get_space(genome.space).scale(genome, how, lambda candidate: fits(candidate, limits))
    if scaled is None:
        name = name or f"this {genome.space} genome"
        raise GasError(f"no copy of {name} scaled by {how} fits {limits_text(limits)}")
    return scaled


def scale_width(genome: Genome, limits: Sequence[Limit]) -> Genome:
    """The widest copy of `genome` within `limits` (see `scale`)."""
    return scale(genome, "width", limits)


def scale_depth(genome: Genome, limits: Sequence[Limit]) -> Genome:
    """The deepest copy of `genome` within `limits` (see `scale`)."""
    return scale(genome, "depth", limits)
