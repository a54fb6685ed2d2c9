"""The hypervolume of an (accuracy, FLOPs) front under a budget: how the search benchmarks score a front."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
