"""Latency in a search: predicted for every proposal before training, measured for every trained trial after.

The prediction (gas.latency's model of the target device, microseconds per genome) decides feasibility
before anything trains, like FLOPs. The measurement is what the front and the limit hold to: each trained
trial's network is timed end to end on the target device, and a trial measured over the limit is
recorded infeasible even though its prediction was under it. Every measurement is taken in turns with the
reference network (`gas.latency.reference`) and fed back to the model (`observe`), which refits its
calibration and takes the reference's figure as its latest. The study records how well the model predicted
its own trained trials: median absolute error, share within ±10%, Kendall's τ between predicted and
measured; and beside them the machine's own repeatability, the share of consecutive measurements of the
reference (one per trained trial) that agree within ±10%. A prediction bridges about that span, from the
reference measured before it to the trial's own measurement, so a model that agrees with measurement as
often as the machine agrees with itself does as well as this machine allows.

Where measurements run: on the driver, on a device no trial uses. On the CPU, a local cluster is started
with the measuring threads fewer CPUs than the machine has (on 2 cores: one trial trains while the other
core measures). On CUDA, the driver measures on the machine's last GPU and Ray is given the others
(`gas.search.ray_tune.measuring_gpu`); a machine with one GPU measures on it only if the trials train on
CPUs. The in-process driver measures between trials. Either way no training shares the device a
measurement times, at the price of that device's training time.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gas.errors import GasError
from gas.genome import Genome
from gas.latency import DEFAULT_RUNS, BuildPlan, LatencyModel, LatencySettings, Measurement, fingerprint, measure
from gas.latency.device import settings_dict
from gas.record import LatencyAccuracy, LatencyRecord
from gas.search.sampling import sample_genomes
from gas.stats import kendall_tau
from gas.units import format_duration

# Random genomes whose predictions show whether a limit can be met at all, before anything trains.
FEASIBILITY_PROBES = 50
#: Predictions and repeated measurements "agree" within ±10% (nn-Meter's and LitePred's yardstick).
TOLERANCE = 0.10


@dataclass(frozen=True)
class LatencyTarget:
    """The device a search's networks must be fast on, and the limit (seconds) they must meet, if any."""

    settings: LatencySettings
    limit: float | None = None
    plan: BuildPlan | None = None  # how much the latency model measures when built (None: its defaults)
    runs: int = DEFAULT_RUNS  # timed runs whose median is a trained trial's measured latency

    def describe(self) -> str:
        limit = f"at most {format_duration(self.limit)}, " if self.limit is not None else ""
        return f"{limit}{self.settings.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "settings": settings_dict(self.settings),
            "fingerprint": fingerprint(self.settings),
        }


class LatencyJudge:
    """Predicts and measures latency on the target device for one search; tracks how good the predictions are."""

    def __init__(self, target: LatencyTarget, budget_flops: int | None = None) -> None:
        if target.settings.device == "cuda" and not torch.cuda.is_available():
            raise GasError("--latency-device cuda: latency is measured where the search runs, and it has no CUDA")
        self.target = target
        plan = dataclasses.replace(target.plan or BuildPlan(), max_flops=budget_flops)
        self.model = LatencyModel.for_device(target.settings, plan)
        # A cached model's latest reference figure is from the run that saved it, on a machine that may
        # have run at another speed then: predictions start from the reference as it runs now.
        self.model.measure_reference(target.runs)

    def predict(self, genome: Genome) -> float:
        return self.model.predict(genome)

    def measure(self, genome: Genome) -> Measurement:
        """End-to-end latency of `genome`'s network, measured in turns with the reference; the model learns
        from it, and takes its reference figure as the latest."""
        measured = measure(
            genome.at_resolution(224) if genome.resolution != 224 else genome,
            self.target.settings,
            self.target.runs,
            beside_reference=True,
        )
        self.model.observe(genome, measured)
        return measured

    def check_reachable(self, space: str, seed: int, budget_flops: int | None, max_params: int | None) -> None:
        """GasError in one line when no probe genome of the space is predicted within the limit."""
        if self.target.limit is None:
            return
        probes = sample_genomes(space, FEASIBILITY_PROBES, seed, 224, budget_flops, max_params)
        fastest = min(self.predict(genome) for genome, _ in probes)
        if fastest > self.target.limit:
            raise GasError(
                f"no genome of the {space} space is predicted to run in {format_duration(self.target.limit)} "
                f"({self.target.settings.describe()}); the fastest of {len(probes)} random genomes within the "
                f"other limits: {format_duration(fastest)}"
            )

    def save(self) -> None:
        self.model.save()


def agree(first: float, second: float) -> bool:
    """Whether two positive figures agree within ±`TOLERANCE` of the second."""
    return abs(first / second - 1) <= TOLERANCE


def repeatability(medians: Sequence[float]) -> float | None:
    """The share of consecutive pairs of repeated measurements of one network that agree within ±10%
    (None with fewer than two)."""
    pairs = list(itertools.pairwise(medians))
    return sum(agree(later, earlier) for earlier, later in pairs) / len(pairs) if pairs else None


def prediction_accuracy(
    pairs: Sequence[tuple[float, float]], references: Sequence[float] = ()
) -> dict[str, float | int | None]:
    """How well predictions matched measurements: (predicted, measured) seconds per trained trial; beside it,
    the `repeatability` of the reference's medians measured with them (`references`, in the order taken)."""
    shares = {"repeatability": repeatability(references), "repeat_pairs": max(len(references) - 1, 0)}
    if not pairs:
        return {"n": 0, "median_abs_error": None, "within_10": None, "kendall_tau": None, **shares}
    errors = [abs(predicted - measured) / measured for predicted, measured in pairs]
    tau = kendall_tau([p for p, _ in pairs], [m for _, m in pairs]) if len(pairs) > 1 else None
    return {
        "n": len(pairs),
        "median_abs_error": statistics.median(errors),
        "within_10": sum(agree(predicted, measured) for predicted, measured in pairs) / len(pairs),
        "kendall_tau": None if tau is None or tau != tau else tau,  # nan (constant) reads as no figure
        **shares,
    }


def describe_target(recorded: LatencyRecord) -> str:
    """'cpu fp32, 1 thread, batch 1 (AMD EPYC ...), limit 25.0ms' from a study's latency record."""
    threads = recorded.threads
    words = [
        f"{recorded.device} {recorded.dtype}".strip(),
        *([f"{threads} thread{'s' if threads != 1 else ''}"] if threads else []),
        f"batch {recorded.batch}",
    ]
    limit = recorded.limit
    return f"{', '.join(words)} ({recorded.hardware})" + (f", limit {format_duration(limit)}" if limit else "")


def describe_accuracy(accuracy: LatencyAccuracy | None) -> str:
    """'latency model on 12 trained trials: median error 4.1%, 83% within ±10% (the machine agrees with itself
    in 90% of 11 pairs of consecutive measurements of the reference), Kendall τ 0.91'.

    Records from before the reference was measured have no repeatability, and say nothing of it.
    """
    if accuracy is None or not accuracy.n:
        return "latency model: no trained trial measured yet"
    tau, repeated = accuracy.kendall_tau, accuracy.repeatability
    machine = (
        f" (the machine agrees with itself in {repeated:.0%} of {accuracy.repeat_pairs} pairs of consecutive "
        "measurements of the reference)"
        if repeated is not None
        else ""
    )
    return (
        f"latency model on {accuracy.n} trained trials: median error {accuracy.median_abs_error:.1%}, "
        f"{accuracy.within_10:.0%} within ±10%{machine}, Kendall τ {'-' if tau is None else f'{tau:.2f}'}"
    )
