"""Where an exported genome came from: the study, trial, seeds and proxy accuracy its file's docstring tells."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from gas import record
from gas.units import format_count, format_duration


@dataclass(frozen=True)
class Provenance:
    """Where an exported genome came from, as the file's docstring tells it."""

    source: str  # e.g. "study 'turbovit-2.5G', trial 17" or "reference genome 'turbovit' (turbovit space)"
    details: tuple[str, ...] = ()  # further "Label: value" lines
    accuracy: float | None = None
    accuracy_detail: str = ""  # dataset, resolution, epochs the accuracy was measured with
    command: str = ""  # the gas command that writes this file


def provenance_for_trial(study: optuna.Study, trial: FrozenTrial, command: str = "") -> Provenance:
    """The study, trial, seeds and proxy accuracy of a trial, from the attributes the study contract fixes."""
    searched, recorded = record.study_record(study), record.trial_record(trial)
    search = []
    if searched.space is not None:
        search.append(f"{searched.space} space")
    if searched.budget is not None:
        search.append(f"budget {format_count(searched.budget)} FLOPs")
    if searched.max_params is not None:
        search.append(f"max {format_count(searched.max_params)} params")
    if searched.sampler is not None:
        search.append(f"sampler {searched.sampler}")
    if searched.seed is not None:
        search.append(f"study seed {searched.seed}")
    details = []
    if search:
        details.append("Search: " + ", ".join(search))
    if len(recorded.seed_accuracies) > 1:
        seeds = ", ".join(f"{seed}: {accuracy:.2%}" for seed, accuracy in recorded.seed_accuracies)
        details.append(f"Training seeds (accuracy is their mean): {seeds}")
    elif recorded.seed is not None:
        details.append(f"Trial seed: {recorded.seed}")
    if recorded.measured_latency is not None:
        from gas.search.latency_limit import describe_target

        where = record.latency_record(study)
        on = f" in {where.measured_in} on {describe_target(where)}" if where else ""
        details.append(f"Measured latency: {format_duration(recorded.measured_latency)}{on}")
    measured = []
    if recorded.dataset:
        measured.append(f"on {recorded.dataset}")
    if recorded.proxy_resolution:
        measured.append(f"at {recorded.proxy_resolution}px")
    if recorded.proxy_epochs:
        epochs = recorded.proxy_epochs
        measured.append(f"after {epochs} epoch{'' if epochs == 1 else 's'}")
    if recorded.evaluator:
        measured.append(f"({recorded.evaluator} evaluator)")
    accuracy = trial.values[0] if trial.values else recorded.accuracy
    return Provenance(
        source=f"study {study.study_name!r}, trial {trial.number}",
        details=tuple(details),
        accuracy=None if accuracy is None else float(accuracy),
        accuracy_detail=" ".join(measured),
        command=command,
    )
