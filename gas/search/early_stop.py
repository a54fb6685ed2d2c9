"""Early stopping that keeps the front: asynchronous successive halving on Pareto rank.

Every trial trains on the longest schedule (`max_epochs`; its learning-rate schedule is that run's) and
reports validation accuracy after each epoch. At a rung (1, 3, 9, ... epochs for η = 3, below
`max_epochs`) it is compared with every trial that has reached that rung so far, in this search or an
earlier run of the same study: the trials are sorted into non-dominated fronts on (accuracy at the rung,
cost), and a trial goes on only if fewer than ⌈n/η⌉ trials lie in fronts before its own. That is
successive halving (ASHA, arXiv 1810.05934) with MO-ASHA's ranking (arXiv 2106.12639): a cheap network
competes on the front with other cheap ones instead of losing to every bigger one, so early stopping
thins the dominated interior and keeps both ends of the front. The decision is taken when the trial
reaches the rung (no waiting for the rung to fill), so workers never idle.

A stopped trial is recorded PRUNED with a feasible constraint, the rung it reached and its accuracy per
epoch: it is never on the front, and Optuna's TPE counts it among the bad trials (see gas.record).
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


def goes_on(points: Mapping[int, tuple[float, float]], trial: int, eta: int) -> bool:
    """Whether `trial` ranks in the best 1/η of `points` (its rung's (accuracy, cost) so far, itself included)."""
    keep = max(1, math.ceil(len(points) / eta))
    levels = front_index(points)
    ahead = sum(1 for level in levels.values() if level < levels[trial])
    return ahead < keep


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
