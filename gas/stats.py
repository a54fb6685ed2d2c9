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
# Fewer pairs than this give no tau interval: the variance below is undefined at n = 4 and too rough under 6.
MIN_TAU_INTERVAL_N = 6


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


def tau_interval(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """The CONFIDENCE interval of Kendall's tau between `x` and `y`; (nan, nan) where none can be honest.

    Fisher's z-transform with the Fieller-Hartley-Pearson variance, 0.437 / (n - 4), which holds up at
    the small n an audit affords (a percentile bootstrap does not: at n = 4 every resample of a perfectly
    kept order is perfect again, and it reports [1, 1]). It needs n of at least MIN_TAU_INTERVAL_N. A
    perfect tau has no z; its far bound is that of one swapped pair, the smallest step tau takes, and its
    near bound stays at +-1.

    >>> low, high = tau_interval(range(10), range(10))
    >>> round(low, 2), high
    (0.88, 1.0)
    """
    tau = kendall_tau(x, y)
    n = len(x)
    if math.isnan(tau) or n < MIN_TAU_INTERVAL_N:
        return math.nan, math.nan
    pairs = n * (n - 1) / 2
    shrunk = math.copysign(min(abs(tau), 1 - 2 / pairs), tau)
    half_width = _normal_quantile((1 + CONFIDENCE) / 2) * math.sqrt(0.437 / (n - 4))
    low = math.tanh(math.atanh(shrunk) - half_width)
    high = math.tanh(math.atanh(shrunk) + half_width)
    if abs(tau) == 1:
        low, high = (low, 1.0) if tau > 0 else (-1.0, high)
    return low, high


def tau_interval_width(tau: float, n: int) -> float:
    """How wide `tau_interval` is for `n` pairs at `tau`: what an audit of `n` trials can hope to say."""
    if n < MIN_TAU_INTERVAL_N:
        return math.inf
    half_width = _normal_quantile((1 + CONFIDENCE) / 2) * math.sqrt(0.437 / (n - 4))
    centre = math.atanh(max(-0.99, min(0.99, tau)))
    return math.tanh(centre + half_width) - math.tanh(centre - half_width)


def _normal_quantile(probability: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(probability)


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
    if len(a) < 2 or np.ptp(a - b) <= 1e-12:  # equal gaps up to rounding: nothing to test against
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


def seed_noise(accuracies: Sequence[Sequence[float]]) -> dict[str, float | int | None]:
    """How much a proxy's accuracy moves with the training seed, against how much it moves between genomes.

    `accuracies` holds one sequence per genome: its accuracy at each seed it was trained with. Genomes with
    a single seed count towards the spread between genomes only. Returns:

        genomes, replicated   genomes given, and those with 2+ seeds
        seed_sd               pooled within-genome standard deviation: the noise of one evaluation
        between_sd            standard deviation of the genomes' mean accuracies
        icc                   one-way random-effects intraclass correlation ICC(1): the share of the
                              variance of one evaluation that is the genome's, not its seed's (1: seeds
                              agree exactly; 0: a genome's accuracy is all seed); None without replicates
        retest_tau            Kendall tau between the genomes' first and second seeds' accuracies, and
        retest_low/high       its CONFIDENCE interval; None with fewer than 3 replicated genomes

    >>> noise = seed_noise([[0.5, 0.6], [0.7, 0.8], [0.9, 0.9]])
    >>> round(noise["seed_sd"], 4), round(noise["icc"], 3)
    (0.0577, 0.897)
    """
    groups = [np.asarray(group, dtype=float) for group in accuracies if len(group)]
    replicated = [group for group in groups if len(group) >= 2]
    means = np.array([group.mean() for group in groups])
    noise: dict[str, float | int | None] = {
        "genomes": len(groups),
        "replicated": len(replicated),
        "seed_sd": None,
        "between_sd": float(means.std(ddof=1)) if len(means) >= 2 else None,
        "icc": None,
        "retest_tau": None,
        "retest_low": None,
        "retest_high": None,
    }
    if not replicated:
        return noise
    within_squares = sum(float(((group - group.mean()) ** 2).sum()) for group in replicated)
    within_df = sum(len(group) - 1 for group in replicated)
    mean_square_within = within_squares / within_df
    noise["seed_sd"] = math.sqrt(mean_square_within)
    if len(replicated) >= 2:
        # One-way ANOVA over the replicated genomes; k0 is the per-genome count for unequal seeds.
        counts = np.array([len(group) for group in replicated])
        grand = np.concatenate(replicated).mean()
        between_squares = float(sum(len(group) * (group.mean() - grand) ** 2 for group in replicated))
        mean_square_between = between_squares / (len(replicated) - 1)
        k0 = (counts.sum() - (counts**2).sum() / counts.sum()) / (len(replicated) - 1)
        denominator = mean_square_between + (k0 - 1) * mean_square_within
        noise["icc"] = float((mean_square_between - mean_square_within) / denominator) if denominator > 0 else None
    if len(replicated) >= 3:
        first, second = [group[0] for group in replicated], [group[1] for group in replicated]
        tau = kendall_tau(first, second)
        noise["retest_tau"] = None if math.isnan(tau) else tau
        low, high = tau_interval(first, second)
        noise["retest_low"], noise["retest_high"] = (None, None) if math.isnan(low) else (low, high)
    return noise
