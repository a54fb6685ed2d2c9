"""Selections over a study's trials: which trained, failed, were proposed or stopped, the front, a trial by number.

What each trial records, and how, is gas.record's; this module only counts and chooses by it. Where
studies are kept, and how they are opened, is gas.storage's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas.errors import GasError
from gas.record import TrialRecord, genome_key, study_record, trial_record
from gas.units import compact_count, format_duration


def default_study_name(
    space: str, budget: int | None, max_params: int | None = None, max_latency: float | None = None
) -> str:
    """'turbovit-2.5G', 'turbovit-2.5G-15M' with a params cap, 'turbovit-25ms' with a latency limit alone."""
    parts = [space.replace(":", "-").replace("=", "")]
    parts += [compact_count(limit) for limit in (budget, max_params) if limit]
    if max_latency:
        parts.append(format_duration(max_latency))
    return "-".join(parts)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, fully trained, non-dominated trials, by FLOPs ascending."""
    return sorted(study.best_trials, key=lambda trial: trial.values[1])


def find_trial(study: optuna.Study, number: int, states: Sequence[TrialState] = (TrialState.COMPLETE,)) -> FrozenTrial:
    """Trial `number` of `study` if it is in one of `states`; otherwise one line saying what it is instead."""
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.number != number:
            continue
        if trial.state in states:
            return trial
        recorded = trial_record(trial)
        why = recorded.infeasible_reason or recorded.error
        wanted = " or ".join(state.name for state in states)
        raise GasError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}{f' ({why})' if why else ''}, "
            f"not {wanted}"
        )
    span = f"trials 0 to {len(trials) - 1}" if trials else "no trials"
    raise GasError(f"study {study.study_name!r} has no trial {number}; it has {span}")


def running_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def interrupted_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were interrupted and re-queued (by this version or an earlier one)."""
    records = [trial_record(t) for t in trials]
    requeued = {r.requeued_from for r in records if r.requeued_from is not None}
    return requeued | {r.number for r in records if r.interrupted}


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that spent a worker's time (trained, stopped early or failed; not interrupted, not repeats).

    What --trials counts.
    """
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    return [
        t
        for t, r in zip(trials, map(trial_record, trials), strict=True)
        if (t.state in (TrialState.COMPLETE, TrialState.FAIL) or r.is_stopped or r.is_trained_out_of_limit)
        and t.number not in interrupted
        and r.duplicate_of is None
    ]


def rung_cost(trial: TrialRecord, objective: str) -> float:
    """A trial's cost where early stopping compares it at a rung: the front's axis.

    Under the latency objective it is the predicted latency, the only one a trial has before it is trained
    to the end; so every trial at a rung, of this run or an earlier one, is costed alike.
    """
    cost = {"latency": trial.predicted_latency, "params": trial.params}.get(objective, trial.flops)
    if cost is None:
        raise GasError(f"trial {trial.number} records no {objective} to compare it on at a rung")
    return float(cost)


def rung_histories(study: optuna.Study) -> list[tuple[int, list[float], float]]:
    """(trial, accuracy after each epoch, rung cost) of every trial trained to the end or stopped at a rung."""
    objective = study_record(study).objective
    return [
        (r.number, list(r.accuracy_history), rung_cost(r, objective))
        for r in map(trial_record, trained_trials(study))
        if r.state != TrialState.FAIL and r.accuracy_history is not None
    ]


def failed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials whose training raised, ran out of memory or diverged (interruptions excluded)."""
    return [t for t in trained_trials(study) if t.state == TrialState.FAIL]


def trial_error(trial: FrozenTrial) -> str:
    return trial_record(trial).error or "no error recorded"


def failure_summary(failed: Sequence[FrozenTrial], most: int = 3) -> str:
    """'3 failed: 2x out of memory on cpu ...; 1x loss became nan ...', the commonest errors first."""
    counts = Counter(trial_error(trial) for trial in failed)
    parts = [f"{count}x {error}" for error, count in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f"{len(counts) - most} other errors")
    return f"{len(failed)} failed: " + "; ".join(parts)


def proposals(study: optuna.Study) -> list[FrozenTrial]:
    """Trials the sampler proposed (re-queued retrainings excluded), in order."""
    trials = study.get_trials(deepcopy=False)
    return [
        t
        for t, r in zip(trials, map(trial_record, trials), strict=True)
        if r.feasible is not None and r.requeued_from is None
    ]


def feasible_share_by_half(study: optuna.Study) -> tuple[float, float]:
    """Share of feasible proposals in the first and second half of the study: the sampler learning."""
    feasible = [bool(trial_record(t).feasible) for t in proposals(study)]
    half = len(feasible) // 2
    first, second = feasible[:half], feasible[half:]
    return (sum(first) / max(len(first), 1), sum(second) / max(len(second), 1))


def state_counts(study: optuna.Study) -> dict[str, int]:
    """How many trials are complete, stopped early, infeasible, failed, interrupted, running or waiting."""
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    counts: Counter[str] = Counter()
    for trial in trials:
        if trial.state == TrialState.PRUNED:
            recorded = trial_record(trial)
            counts["infeasible" if recorded.is_infeasible else "stopped" if recorded.is_stopped else "pruned"] += 1
        elif trial.state == TrialState.FAIL:
            counts["interrupted" if trial.number in interrupted else "failed"] += 1
        else:
            counts[trial.state.name.lower()] += 1
    order = ("complete", "stopped", "infeasible", "failed", "interrupted", "pruned", "running", "waiting")
    return {name: counts[name] for name in order if counts[name] or name in ("complete", "infeasible", "failed")}


def latency_pairs(study: optuna.Study) -> list[tuple[float, float]]:
    """(predicted, measured) latency in seconds of every trained trial that carries both."""
    return [
        (r.predicted_latency, r.measured_latency)
        for r in map(trial_record, trained_trials(study))
        if r.predicted_latency is not None and r.measured_latency is not None
    ]


def reference_latencies(study: optuna.Study) -> list[float]:
    """The reference network's medians measured beside the trained trials, in the order they were taken
    (trials from before the reference was measured have none)."""
    measured = [t for t in trained_trials(study) if trial_record(t).reference_latency is not None]
    measured.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
    return [float(trial_record(t).reference_latency) for t in measured]


def trained_genomes(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The trial that trained each genome, whatever it ended in: a proposal of one of these is a duplicate.

    Every outcome of a training counts (trained to the end, stopped at a rung, measured over the latency
    limit, failed); an interrupted trial does not, since its genome is queued to train again. Where a study
    from an earlier version trained a genome twice, the first training is the one repeated.
    """
    trained: dict[str, FrozenTrial] = {}
    for trial in trained_trials(study):
        genome = trial_record(trial).genome
        if genome is not None:
            trained.setdefault(genome_key(genome), trial)
    return trained
