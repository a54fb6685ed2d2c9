"""Early stopping that keeps the front: asynchronous successive halving on Pareto rank.

Every trial trains on the longest schedule (`max_epochs`; its learning-rate schedule is that run's) and
reports validation accuracy after each epoch. At a rung (1, 3, 9, ... epochs for η = 3, below
`max_epochs`) it is compared with every trial that has reached that rung so far, in this search or an
earlier run of the same study, itself included: n trials. They are ranked, best first, by

    1. non-dominated front on (accuracy at the rung, cost): the front first, then the front of the rest, ...
    2. within a front, crowding distance, larger first (NSGA-II: the gaps to the two neighbours along the
       front, each axis divided by the front's span on it); a front's two ends are infinitely far, so both
       ends rank before its middle
    3. accuracy at the rung, higher first (the ends of a front, and interior points crowded alike)
    4. trial number, lower first (identical points: the earlier trial)

and the trial goes on only if it is among the first ⌈n/η⌉. The order is total, so of any n trials at a
rung exactly ⌈n/η⌉ would go on; a front that straddles the cut is split by 2-4, never let through whole.
That is successive halving (ASHA, arXiv 1810.05934) with MO-ASHA's ranking (arXiv 2106.12639): a cheap
network competes on the front with other cheap ones instead of losing to every bigger one, so early
stopping thins the dominated interior and keeps both ends of the front. The decision is taken when the
trial reaches the rung (no waiting for the rung to fill), so workers never idle, and, as in ASHA, the
first trials at a rung go on more easily than the fraction says, since fewer are there to beat them.

A stopped trial is recorded PRUNED with a feasible constraint, the rung it reached and its accuracy per
epoch: it is never on the front, and Optuna's TPE ranks it below every complete trial (see
gas.record.write_stopped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ETA = 3
DEFAULT_MAX_EPOCHS = 12


@dataclass(frozen=True)
class EarlyStopping:
    """Where trials are compared (`rungs`, in epochs) and how many go on from each (1/`eta`)."""

    max_epochs: int = DEFAULT_MAX_EPOCHS
    eta: int = DEFAULT_ETA
    min_epochs: int = 1

    @property
    def rungs(self) -> tuple[int, ...]:
        """min_epochs · η^k for every k that stays below max_epochs (the last epoch is not a rung)."""
        rungs, epochs = [], self.min_epochs
        while epochs < self.max_epochs:
            rungs.append(epochs)
            epochs *= self.eta
        return tuple(rungs)

    def settings(self) -> dict[str, int]:
        return {"max_epochs": self.max_epochs, "eta": self.eta, "min_epochs": self.min_epochs}


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, cost) `a` is at least as good as `b` on both and better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front_index(points: Mapping[int, tuple[float, float]]) -> dict[int, int]:
    """Non-dominated sorting: 0 for the front, 1 for the front of what remains, and so on."""
    remaining = dict(points)
    index: dict[int, int] = {}
    level = 0
    while remaining:
        front = [key for key, point in remaining.items() if not any(dominates(o, point) for o in remaining.values())]
        for key in front:
            index[key] = level
            del remaining[key]
        level += 1
    return index


def crowding_distance(front: Mapping[int, tuple[float, float]]) -> dict[int, float]:
    """NSGA-II's crowding distance of each point of one front; identical points share theirs.

    Along a front, distinct points ordered by accuracy are ordered by cost too, so both neighbours are
    the same on either axis.
    """
    distinct = sorted(set(front.values()))
    if len(distinct) <= 2:
        return dict.fromkeys(front, math.inf)
    spans = (distinct[-1][0] - distinct[0][0], distinct[-1][1] - distinct[0][1])
    distance = {distinct[0]: math.inf, distinct[-1]: math.inf}
    for before, point, after in zip(distinct, distinct[1:], distinct[2:], strict=False):
        distance[point] = sum((after[axis] - before[axis]) / spans[axis] for axis in (0, 1))
    return {key: distance[point] for key, point in front.items()}


def ranking(points: Mapping[int, tuple[float, float]]) -> list[int]:
    """The trials of `points` ({trial: (accuracy, cost)}), best first, by the order the module docstring gives."""
    levels = front_index(points)
    crowding: dict[int, float] = {}
    for level in set(levels.values()):
        crowding.update(crowding_distance({key: points[key] for key, at in levels.items() if at == level}))
    return sorted(points, key=lambda key: (levels[key], -crowding[key], -points[key][0], key))


def goes_on(points: Mapping[int, tuple[float, float]], trial: int, eta: int) -> bool:
    """Whether `trial` is among the best ⌈n/η⌉ of the n `points` (its rung's (accuracy, cost) so far, itself too)."""
    return ranking(points).index(trial) < math.ceil(len(points) / eta)


class Rungs:
    """The (accuracy, cost) every trial reached at each rung; decides whether a trial at a rung goes on."""

    def __init__(self, policy: EarlyStopping) -> None:
        self.policy = policy
        self.reached: dict[int, dict[int, tuple[float, float]]] = {rung: {} for rung in policy.rungs}

    def add_history(self, trial: int, history: tuple[float, ...] | list[float], cost: float) -> None:
        """A finished trial's accuracies per epoch (from the study, on resume): its entry at every rung it passed."""
        for rung in self.policy.rungs:
            if len(history) >= rung:
                self.reached[rung][trial] = (float(history[rung - 1]), float(cost))

    def report(self, trial: int, epoch: int, accuracy: float, cost: float) -> bool:
        """Record `trial`'s accuracy after `epoch`; False when it is at a rung and does not go on."""
        if epoch not in self.reached:
            return True
        self.reached[epoch][trial] = (float(accuracy), float(cost))
        return goes_on(self.reached[epoch], trial, self.policy.eta)

    def forget(self, trial: int) -> None:
        """An interrupted trial starts again from its first epoch; its partial entries go."""
        for points in self.reached.values():
            points.pop(trial, None)
