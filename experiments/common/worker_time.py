"""Searching for a fixed worker time: how the benchmarks give every arm the same compute."""

from __future__ import annotations

import dataclasses

import optuna

from gas.record import trial_record
from gas.search import SearchConfig, SearchOutcome, search_in_process
from gas.study import trained_trials


def worker_seconds(study: optuna.Study) -> float:
    """The trials' own wall time (training, evaluation, data loading), stopped and failed trials included, and
    the time the driver spent measuring each trained network's latency where the search measures it."""
    return sum(trial_record(t).wall_time or 0.0 for t in trained_trials(study)) + measure_seconds(study)


def measure_seconds(study: optuna.Study) -> float:
    """Of `worker_seconds`, the driver's latency measurements."""
    return sum(trial_record(t).measure_time or 0.0 for t in trained_trials(study))


def search_for(config: SearchConfig, seconds: float) -> SearchOutcome:
    """Search in process, one trial more at a time, until the search has used `seconds` of `worker_seconds`.

    Starts from `config.storage` as it is (delete it first for a fresh study); stops early when the
    sampler cannot find another feasible genome.
    """
    trials = 1
    while True:
        outcome = search_in_process(dataclasses.replace(config, trials=trials))
        if worker_seconds(outcome.study) >= seconds or outcome.stopped_reason:
            return outcome
        # One training more than the study holds; each seed of a replicated trial is one.
        trials = sum(trial_record(t).seeds for t in trained_trials(outcome.study)) + 1
