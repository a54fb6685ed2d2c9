"""The two fits of the latency model: a part kind's seconds from its work figures, and end-to-end calibration.

Both minimise relative error (each residual divided by the measured value), because a latency budget is a
ratio question ("within 10% of 25 ms") and a fit in absolute seconds would serve the largest networks only.
Work has no negative cost, so a kind's weights are fitted non-negative (Lawson and Hanson's active-set
method; a dozen lines of numpy, so gas needs no optimisation library for it).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def nonnegative_least_squares(matrix: np.ndarray, target: np.ndarray, iterations: int = 200) -> np.ndarray:
    """x ≥ 0 minimising ‖matrix·x − target‖₂ (Lawson–Hanson active set)."""
    columns = matrix.shape[1]
    solution = np.zeros(columns)
    free = np.zeros(columns, dtype=bool)  # the columns allowed to be positive
    for _ in range(iterations):
        gradient = matrix.T @ (target - matrix @ solution)
        candidates = ~free & (gradient > 1e-12 * max(1.0, float(np.abs(gradient).max())))
        if not candidates.any():
            break
        free[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:
            trial = np.zeros(columns)
            trial[free] = np.linalg.lstsq(matrix[:, free], target, rcond=None)[0]
            if (trial[free] > 0).all():
                solution = trial
                break
            # Step from the current solution toward the trial one until the first weight reaches zero,
            # then drop the columns at zero and solve again.
            blocked = free & (trial <= 0)
            steps = solution[blocked] / (solution[blocked] - trial[blocked])
            solution = solution + steps.min() * (trial - solution)
            free &= solution > 1e-15
            solution[~free] = 0.0
    return solution


def fit_weights(features: Sequence[Sequence[float]], seconds: Sequence[float]) -> tuple[float, ...]:
    """Non-negative weights w with features·w ≈ seconds, minimising relative error.

    Columns are scaled to a largest entry of 1 before the fit, so multiply-adds (around 1e8) and the
    constant 1 weigh alike in the solver; the weights returned are for the unscaled features.
    """
    matrix = np.asarray(features, dtype=float)
    measured = np.asarray(seconds, dtype=float)
    scale = np.abs(matrix).max(axis=0)
    scale[scale == 0] = 1.0
    weighted = (matrix / scale) / measured[:, None]  # row i divided by seconds_i: relative residuals
    weights = nonnegative_least_squares(weighted, np.ones(len(measured))) / scale
    return tuple(float(weight) for weight in weights)


@dataclass(frozen=True)
class Calibration:
    """measured ≈ offset + scale · (sum of the parts' predictions), in the latency model's unit.

    The parts, timed one at a time, miss what joins them in a whole network (the caches a block finds
    warm or cold, Python's dispatch between modules) and what a whole network shares (one allocation
    pass, the input copy). Over a space these effects move with the network's size, which a line absorbs.
    """

    offset: float = 0.0
    scale: float = 1.0
    low: float = 0.0  # the smallest sum the line was fitted on

    def __call__(self, summed: float) -> float:
        if self.offset < 0 and summed < self.low:
            # A line with a negative offset falls to zero, then below, for networks smaller than any it
            # saw; there it scales in proportion from its value at the smallest one, so stays positive.
            return (self.offset + self.scale * self.low) * summed / self.low
        return self.offset + self.scale * summed


def fit_calibration(summed: Sequence[float], measured: Sequence[float]) -> Calibration:
    """The line through (sum of parts, measured) pairs with the least relative error.

    One pair, or pairs too alike to place a line (or a line that would fall as networks grow), give a
    pure ratio instead: the median of measured / summed. No pairs leave the parts' sum as it is.
    """
    if not summed:
        return Calibration()
    ratio = Calibration(0.0, statistics.median(m / s for s, m in zip(summed, measured, strict=True)))
    if len(summed) < 3 or max(summed) < 1.2 * min(summed):
        return ratio
    sums, seconds = np.asarray(summed, dtype=float), np.asarray(measured, dtype=float)
    matrix = np.stack([np.ones_like(sums), sums], axis=1) / seconds[:, None]
    offset, scale = np.linalg.lstsq(matrix, np.ones_like(sums), rcond=None)[0]
    # A negative offset larger than the smallest network's time would predict nonsense below it.
    if scale <= 0 or offset + scale * float(sums.min()) <= 0:
        return ratio
    return Calibration(float(offset), float(scale), float(sums.min()))
