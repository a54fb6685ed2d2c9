"""The Pareto front of a study (accuracy against its cost axis): where a trial sits on that axis, and the picks.

The cost axis is the study's objective: FLOPs unless the search said params or measured latency. Tables,
CSV, the plot and its page are drawn from here by gas.front_report.

The front is made of feasible, fully trained trials only: Optuna's `study.best_trials` on the study's two
values, accuracy and the objective (gas.study.front). The study contract keeps infeasible proposals out of
COMPLETE (they are PRUNED with a positive constraint), so that front and optuna-dashboard's Pareto plot
(which looks at COMPLETE trials only) agree.

Picking one trial off the front (`gas export --pick`):
    best               the most accurate trial on the front.
    knee               where the front bends: with accuracy and cost each scaled to [0, 1] over the front,
                       the trial that gains the most scaled accuracy over scaled cost (equivalently, the
                       one farthest above the straight line from the cheapest to the most accurate trial).
                       Both ends score 0; ties go to the more accurate trial, so a front of one or two
                       trials has its most accurate trial as the knee.
    max-acc-under B    the most accurate front trial with FLOPs <= B, whatever the study's axis (on a
                       FLOPs front also the most accurate of all feasible trained trials within B, since
                       anything dominating it is cheaper still).
    fastest-over A     the front trial with the lowest measured latency among those with proxy accuracy
                       >= A (e.g. 0.9 or 90%); by the cost axis where the study measured no latency.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas import record
from gas.errors import GasError
from gas.study import front
from gas.units import format_count, parse_count

PICKS = ("best", "knee", "max-acc-under", "fastest-over")


# ---- a trial on the axis ---------------------------------------------------------------------------


def accuracy_of(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def cost_of(trial: FrozenTrial) -> float:
    """A trained trial's value on the study's cost axis (FLOPs, params or seconds)."""
    return float(trial.values[1])


def flops_of(trial: FrozenTrial) -> int:
    flops = record.trial_record(trial).flops
    return int(trial.values[1] if flops is None else flops)


def measured_latency_of(trial: FrozenTrial) -> float | None:
    """Seconds the trained network took on the study's target device, if it was measured there."""
    return record.trial_record(trial).measured_latency


def axis_value(trial: FrozenTrial, objective: str) -> float | None:
    """Where any trial sits on the `objective` axis: its cost value once trained, else what its proposal recorded.

    A trial not measured on the target device sits at its predicted latency.
    """
    if trial.state == TrialState.COMPLETE and trial.values:
        return cost_of(trial)
    recorded = record.trial_record(trial)
    places = {
        "flops": (recorded.flops,),
        "params": (recorded.params,),
        "latency": (recorded.measured_latency, recorded.predicted_latency),
    }
    return next((float(value) for value in places[objective] if value is not None), None)


def axis_limit(study: optuna.Study, objective: str) -> float | None:
    """The limit the search held on the `objective` axis: the FLOPs budget, the params cap or the latency limit."""
    searched = record.study_record(study)
    if objective == "flops":
        return None if searched.budget is None else float(searched.budget)
    if objective == "params":
        value = searched.max_params
    else:
        latency = record.latency_record(study)
        value = None if latency is None else latency.limit
    return float(value) if value else None


# ---- choosing a trial ------------------------------------------------------------------------------


def knee_point(front_trials: Sequence[FrozenTrial]) -> FrozenTrial:
    """The front's knee (see the module docstring for the definition)."""
    if not front_trials:
        raise GasError("the front is empty, so it has no knee")
    accuracies = [accuracy_of(trial) for trial in front_trials]
    costs = [cost_of(trial) for trial in front_trials]
    accuracy_span = (max(accuracies) - min(accuracies)) or 1.0
    cost_span = (max(costs) - min(costs)) or 1.0

    def gain(trial: FrozenTrial) -> float:
        scaled_accuracy = (accuracy_of(trial) - min(accuracies)) / accuracy_span
        scaled_cost = (cost_of(trial) - min(costs)) / cost_span
        return scaled_accuracy - scaled_cost

    return max(front_trials, key=lambda trial: (gain(trial), accuracy_of(trial), -cost_of(trial), -trial.number))


def parse_pick(words: Sequence[str]) -> tuple[str, float | None]:
    """('best', None), ('knee', None), ('max-acc-under', FLOPs) or ('fastest-over', accuracy) from `--pick` words."""
    text = " ".join(words).strip()
    kind, _, rest = text.replace("=", " ", 1).partition(" ")
    rest = rest.strip()
    if kind in ("best", "knee") and not rest:
        return kind, None
    if kind == "max-acc-under" and rest:
        return kind, parse_count(rest, "max-acc-under budget")
    if kind == "fastest-over" and rest:
        try:
            accuracy = float(rest.removesuffix("%")) / (100 if rest.endswith("%") else 1)
        except ValueError:
            accuracy = -1.0
        if not 0.0 <= accuracy <= 1.0:
            raise GasError(f"--pick fastest-over {rest!r}: give an accuracy like 0.9 or 90%")
        return kind, accuracy
    raise GasError(
        f"--pick {text!r} is not one of: best, knee, max-acc-under BUDGET (e.g. max-acc-under 2G), "
        "fastest-over ACCURACY (e.g. fastest-over 90%)"
    )


def pick_trial(study: optuna.Study, kind: str, budget: float | None = None) -> FrozenTrial:
    """The front trial that `--pick kind [value]` names (value: FLOPs for max-acc-under, accuracy for fastest-over)."""
    front_trials = front(study)
    if not front_trials:
        raise GasError(f"study {study.study_name!r} has no feasible, fully trained trials yet, so nothing to pick")
    if kind == "best":
        return max(front_trials, key=lambda trial: (accuracy_of(trial), -cost_of(trial), -trial.number))
    if kind == "knee":
        return knee_point(front_trials)
    if kind == "max-acc-under" and budget is not None:
        within = [trial for trial in front_trials if flops_of(trial) <= budget]
        if not within:
            cheapest = front_trials[0]
            raise GasError(
                f"no front trial of {study.study_name!r} has at most {format_count(budget)} FLOPs; the cheapest, "
                f"trial {cheapest.number}, has {format_count(flops_of(cheapest))}"
            )
        return max(within, key=lambda trial: (accuracy_of(trial), -flops_of(trial), -trial.number))
    if kind == "fastest-over" and budget is not None:
        over = [trial for trial in front_trials if accuracy_of(trial) >= budget]
        if not over:
            best = max(accuracy_of(trial) for trial in front_trials)
            raise GasError(
                f"no front trial of {study.study_name!r} reaches {budget:.2%} proxy accuracy; the best has {best:.2%}"
            )

        def speed(trial: FrozenTrial) -> float:
            measured = measured_latency_of(trial)
            return cost_of(trial) if measured is None else measured

        return min(over, key=lambda trial: (speed(trial), -accuracy_of(trial), trial.number))
    raise GasError(f"unknown pick {kind!r}; choose one of {', '.join(PICKS)}")
