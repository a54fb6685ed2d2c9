"""Seed replicates and racing: which trained trials train again with other seeds, and when a trial's seeds suffice.

A proxy's accuracy moves with its training seed (initialisation and batch order) by about as much as it moves
between genomes, so a search that keeps each genome's first seed picks lucky seeds. The engine holds a trained
trial back until its seeds are in and tells the study their mean, so the front, every pick and what the sampler
learns are seed means:

    candidate    a trial whose first seed could put it on the front: no front trial as cheap or cheaper leads
                 it by more than the noise. It trains with `seeds` seeds in all.
    noise share  every `NOISE_EVERY`-th trained trial trains with `seeds` seeds too, whatever its accuracy,
                 so the noise is measured over the space, not only at the front.
    racing       a trial whose seed mean lies within the noise of a front neighbour's (the nearest as cheap
                 or cheaper, and the nearest dearer) gets one more seed, until the order settles or it has
                 `max_seeds`.

Until `MIN_REPLICATED` genomes have two seeds there is no noise to compare with: every trial is a candidate.
"Within the noise" is a difference of means under `Z` standard errors: the seed standard deviation pooled over
every genome with two seeds so far (the racing trial's own included), scaled by each side's seed count. A
trial is told once, so it races against the front as it stands then: the first trials, which find no front,
are told after `seeds` seeds.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gas.defaults import DEFAULT_MAX_SEEDS, DEFAULT_REPLICATES
from gas.errors import GasError
from gas.record import NoiseRecord
from gas.stats import seed_noise

NOISE_EVERY = 4  # every 4th trained trial is replicated whatever its accuracy
MIN_REPLICATED = 3  # genomes with two seeds before the measured noise is used
Z = 2.0  # standard errors within which two means are not yet ordered


@dataclass(frozen=True)
class Replicates:
    """How many seeds a trial trains with: `seeds` for a candidate, up to `max_seeds` while it races."""

    seeds: int = DEFAULT_REPLICATES
    max_seeds: int = DEFAULT_MAX_SEEDS

    def __post_init__(self) -> None:
        if self.seeds < 2:
            raise GasError(f"replicates need at least 2 seeds per candidate, got {self.seeds} (1 turns them off)")
        if self.max_seeds < self.seeds:
            raise GasError(f"--max-seeds ({self.max_seeds}) must be at least --replicates ({self.seeds})")

    def to_dict(self) -> dict[str, int]:
        return {"seeds": self.seeds, "max_seeds": self.max_seeds}


@dataclass(frozen=True)
class Standing:
    """A trial on the front as the study holds it: its cost on the objective's axis, seed mean and seed count."""

    number: int
    cost: float
    mean: float
    seeds: int


def front_of(points: Sequence[Standing]) -> list[Standing]:
    """The non-dominated standings (higher mean, lower cost), cheapest first."""

    def dominates(other: Standing, point: Standing) -> bool:
        as_good = other.cost <= point.cost and other.mean >= point.mean
        return as_good and (other.cost, other.mean) != (point.cost, point.mean)

    front = [point for point in points if not any(dominates(other, point) for other in points)]
    return sorted(front, key=lambda point: (point.cost, -point.mean))


def is_candidate(
    number: int, first: float, cost: float, front: Sequence[Standing], seed_sd: float | None, replicated: int
) -> bool:
    """Whether a trial's seeds are wanted: it could be on the front, or it falls in the noise share."""
    if seed_sd is None or replicated < MIN_REPLICATED or number % NOISE_EVERY == 0:
        return True
    # One seed against a mean of several: the difference's noise is sd * sqrt(1 + 1/n).
    return not any(
        point.cost <= cost and point.mean - first > Z * seed_sd * math.sqrt(1 + 1 / point.seeds) for point in front
    )


def neighbours(cost: float, front: Sequence[Standing], number: int) -> list[Standing]:
    """The front trials a trial at `cost` is ordered against: the nearest as cheap or cheaper, the nearest dearer."""
    others = [point for point in front if point.number != number]
    cheaper = [point for point in others if point.cost <= cost]
    dearer = [point for point in others if point.cost > cost]
    return ([max(cheaper, key=lambda point: point.cost)] if cheaper else []) + (
        [min(dearer, key=lambda point: point.cost)] if dearer else []
    )


def in_doubt(
    number: int, accuracies: Sequence[float], cost: float, front: Sequence[Standing], seed_sd: float | None
) -> bool:
    """Whether a trial's seed mean is still within the noise of a front neighbour's: it races on."""
    if seed_sd is None or not accuracies:
        return False
    mean, seeds = sum(accuracies) / len(accuracies), len(accuracies)
    return any(
        abs(mean - point.mean) < Z * seed_sd * math.sqrt(1 / seeds + 1 / point.seeds)
        for point in neighbours(cost, front, number)
    )


class SeedRuns:
    """One search's replicates: trials held back for more seeds, the seeds queued, and the front by seed means.

    The engine asks `wants_seeds` when a trial's first seed comes back and `wants_more` after each further one;
    `queue` holds the trials whose next seed is due, oldest first; `told` keeps the front and the noise current.
    """

    def __init__(self, policy: Replicates, first_seed: int) -> None:
        self.policy = policy
        self.first_seed = first_seed
        self.held: dict[int, list[float]] = {}  # accuracy per seed of trials held back, in seed order
        self.queue: deque[int] = deque()
        self.accuracies: dict[int, list[float]] = {}  # every told trained trial's seed accuracies
        self.points: dict[int, Standing] = {}  # told trials that can be on the front

    def runs(self, number: int) -> int:
        """How many trainings a held trial has had: the index of its next one."""
        return len(self.held[number])

    def seed_of(self, number: int) -> int:
        """The seed a held trial's next training uses: the search's proxy seed, plus one for each before it."""
        return self.first_seed + self.runs(number)

    def noise(self) -> dict[str, float | int | None]:
        """`gas.stats.seed_noise` over every told trial's seeds: the proxy's noise as measured so far."""
        return seed_noise(list(self.accuracies.values()))

    def _seed_sd(self, held: int | None = None) -> tuple[float | None, int]:
        """The seed standard deviation so far, counting a held trial's own seeds, and the genomes it covers."""
        groups = [*self.accuracies.values(), *([self.held[held]] if held is not None else [])]
        noise = seed_noise(groups)
        return noise["seed_sd"], int(noise["replicated"] or 0)

    def wants_seeds(self, number: int, accuracy: float, cost: float) -> bool:
        """A trial's first seed came back: hold it for `policy.seeds` seeds (True), or tell it as it is."""
        seed_sd, replicated = self._seed_sd()
        if not is_candidate(number, accuracy, cost, front_of(list(self.points.values())), seed_sd, replicated):
            return False
        self.held[number] = [accuracy]
        self.queue.append(number)
        return True

    def wants_more(self, number: int, accuracy: float | None, cost: float, may_race: bool) -> bool:
        """A held trial's further seed came back (None: it failed): True when it trains with one more."""
        seeds = self.held[number]
        if accuracy is None:
            return False
        seeds.append(accuracy)
        if len(seeds) < self.policy.seeds:
            self.queue.append(number)
            return True
        if not may_race or len(seeds) >= self.policy.max_seeds:
            return False
        seed_sd, _ = self._seed_sd(number)
        if in_doubt(number, seeds, cost, front_of(list(self.points.values())), seed_sd):
            self.queue.append(number)
            return True
        return False

    def release(self, number: int) -> list[float]:
        """A held trial is told now: its seed accuracies, in seed order."""
        return self.held.pop(number)

    def told(self, number: int, accuracies: Sequence[float], cost: float | None) -> None:
        """A trained trial was told with these seeds; `cost` is None when it cannot be on the front."""
        self.accuracies[number] = list(accuracies)
        if cost is not None:
            self.points[number] = Standing(number, cost, sum(accuracies) / len(accuracies), len(accuracies))


def describe_noise(noise: NoiseRecord) -> str:
    """'proxy noise over 12 genomes with 2+ seeds: seed sd 4.4 points, between genomes 8.0, ICC 0.59, ...'."""
    if not noise.replicated or noise.seed_sd is None:
        return f"proxy noise: not measured ({noise.genomes} trained genomes, none with two seeds)"
    parts = [f"seed sd {100 * noise.seed_sd:.1f} points"]
    if noise.between_sd is not None:
        parts.append(f"between genomes {100 * noise.between_sd:.1f}")
    if noise.icc is not None:
        parts.append(f"ICC {noise.icc:.2f}")
    if noise.retest_tau is not None:
        interval = noise.retest_interval
        shown = f" (95% {interval[0]:.2f} to {interval[1]:.2f})" if interval else " (too few genomes for an interval)"
        parts.append(f"test-retest Kendall τ {noise.retest_tau:.2f}{shown}")
    return f"proxy noise over {noise.replicated} genomes with 2+ seeds: " + ", ".join(parts)
