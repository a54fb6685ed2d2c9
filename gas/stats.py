"""The statistics gas reports: rank agreement with its interval, tests between arms, and hypervolume.

One interval convention everywhere: CONFIDENCE (95%), two-sided. The audit, the latency model's accuracy,
`gas compare` and every benchmark take their figures from here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

CONFIDENCE = 0.95


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences; nan when either is constant (no ranking to compare).

    tau-b = (concordant - discordant) / sqrt((pairs - pairs tied in x) (pairs - pairs tied in y)), the
    variant that stays in [-1, 1] with ties (the same as scipy.stats.kendalltau's default).

    >>> kendall_tau([1, 2, 3], [1, 3, 2])
    0.3333333333333333
    """
    first, second = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if first.ndim != 1 or first.shape != second.shape:
        raise ValueError(f"kendall_tau needs two sequences of one length, got shapes {first.shape} and {second.shape}")
    pairs = np.triu_indices(len(first), k=1)
    # Per pair: +1 if the first element is the larger, -1 if the smaller, 0 for a tie.
    order_x = np.sign(first[:, None] - first[None, :])[pairs]
    order_y = np.sign(second[:, None] - second[None, :])[pairs]
    untied_x, untied_y = np.count_nonzero(order_x), np.count_nonzero(order_y)
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float(np.dot(order_x, order_y) / math.sqrt(untied_x * untied_y))


def tau_interval(x: Sequence[float], y: Sequence[float], rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The CONFIDENCE percentile bootstrap interval of tau over pairs resampled with replacement, seeded.

    Resamples whose tau is undefined (every pick the same trial, or tied throughout) are left out; if all
    are, the interval is (nan, nan).
    """
    first, second = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if first.shape != second.shape or len(first) == 0:
        raise ValueError("tau_interval needs two non-empty sequences of one length")
    picks = np.random.default_rng(seed).integers(0, len(first), size=(rounds, len(first)))
    taus = np.array([kendall_tau(first[pick], second[pick]) for pick in picks])
    taus = taus[~np.isnan(taus)]
    if taus.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(taus, [tail, 100 - tail])
    return float(low), float(high)


def welch_p(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None with fewer than 2 values a side or no spread."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return None
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-identical values only make the p-value imprecise
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def paired_p(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired t-test (pairs share a seed); None with fewer than 2 pairs or constant gaps."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_p needs pairs, got {len(a)} and {len(b)} values")
    if len(a) < 2 or np.ptp(a - b) == 0:
        return None
    from scipy.stats import ttest_rel

    return float(ttest_rel(a, b).pvalue)


def hypervolume(points: Iterable[tuple[float, float]], budget: float) -> float:
    """Area that (accuracy, FLOPs) points dominate up to the reference point (accuracy 0, FLOPs = budget).

    FLOPs are divided by the budget first. Sweeping from the cheapest point up, the strip between one
    point's cost and the next one's is dominated up to the best accuracy seen so far.
    """
    usable = sorted((flops / budget, accuracy) for accuracy, flops in points if flops <= budget and accuracy > 0)
    edges = [cost for cost, _ in usable] + [1.0]  # each strip ends where the next point's begins
    area, best_accuracy = 0.0, 0.0
    for index, (cost, accuracy) in enumerate(usable):
        best_accuracy = max(best_accuracy, accuracy)
        area += (edges[index + 1] - cost) * best_accuracy
    return area


def hypervolume_curve(evaluations: Sequence[tuple[float, float] | None], budget: float) -> list[float]:
    """Hypervolume after each evaluation; a failed evaluation (None) adds nothing."""
    done = [point for point in evaluations if point is not None]
    curve, seen = [], 0
    for point in evaluations:
        seen += point is not None
        curve.append(hypervolume(done[:seen], budget))
    return curve
