"""A trial's record: the attributes each kind of trial carries, how the search driver writes them, and the
typed `TrialRecord` everything else reads them as."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas.cost import Cost
from gas.errors import GasError
from gas.genome import Genome
from gas.space import load_genome

if TYPE_CHECKING:  # the proxy imports torch; reading a study must not
    from gas.evaluate.proxy import ProxyConfig, ProxyResult


class TrialKey:
    """Trial user attributes: the contract `gas pareto`, `gas export`, the dashboard and users rely on."""

    GENOME = "genome"  # the genome as a JSON object
    PARAMS = "params"  # parameters at 224px (the costed resolution)
    FLOPS = "flops"  # fvcore-convention FLOPs at the costed resolution
    BUDGET_UTILISATION = "budget_utilisation"  # FLOPs / FLOPs budget
    FEASIBLE = "feasible"
    INFEASIBLE_REASON = "infeasible_reason"
    ACCURACY = "accuracy"  # final proxy validation accuracy in [0, 1]: the mean over its seeds
    SEED_ACCURACIES = "seed_accuracies"  # [[seed, accuracy], ...]: each training seed's, the first seed first
    ACCURACY_HISTORY = "accuracy_history"  # validation accuracy after each epoch
    STOPPED_AT = "stopped_at"  # epochs trained when early stopping ended the trial at a rung
    PREDICTED_LATENCY = "predicted_latency"  # seconds, the latency model's figure before training
    MEASURED_LATENCY = "measured_latency"  # seconds, the median end-to-end time on the target device
    REFERENCE_LATENCY = "reference_latency"  # seconds, the reference network's median in the same turns
    MEASURE_TIME = "measure_time"  # seconds the driver spent measuring it, after the trial and outside it
    DATASET = "dataset"
    PROXY_RESOLUTION = "proxy_resolution"
    PROXY_EPOCHS = "proxy_epochs"
    EVALUATOR = "evaluator"
    SEED = "seed"
    WALL_TIME = "wall_time"  # seconds spent inside the trial
    IMAGES_PER_SECOND = "images_per_second"
    DEVICE = "device"
    EPOCHS_COMPLETED = "epochs_completed"
    MFU = "mfu"
    ZERO_COST = "zero_cost"  # {score name: value}
    ERROR = "error"
    DUPLICATE_OF = "duplicate_of"  # the trained trial whose outcome this proposal repeats
    REQUEUED_FROM = "requeued_from"  # the interrupted trial this one trains again
    INTERRUPTED = "interrupted"  # written by earlier versions on the interrupted trial itself
    RETRIED = "retried"  # why the trial ran a second time, on a fresh worker: its first run's error
    # {"pid", "rss_mib"}: the Ray worker that ran the trial and its resident memory after it (after the trim)
    WORKER = "worker"


@dataclass(frozen=True)
class Worker:
    """The Ray worker process that ran a trial, and its resident memory after it."""

    pid: int
    rss_mib: float


@dataclass(frozen=True)
class TrialRecord:
    """One trial as its study records it; None (or empty) where the trial carries no such attribute.

    Every proposal carries its genome and costs; a trained trial what its training measured; the rest
    says how the trial ended (see gas.record).
    """

    number: int
    state: TrialState  # RUNNING for a trial in flight
    constraints: tuple[float, ...]  # relative overshoot of each limit: > 0 is over it
    genome: dict[str, Any] | None  # the genome as a JSON object (`trial_genome` loads it)
    params: int | None
    flops: int | None
    budget_utilisation: float | None
    feasible: bool | None  # None until the proposal is judged
    infeasible_reason: str | None
    predicted_latency: float | None
    measured_latency: float | None
    measure_time: float | None  # seconds the driver spent measuring the latency
    reference_latency: float | None  # seconds, the reference network measured in the same turns
    dataset: str | None
    proxy_resolution: int | None
    proxy_epochs: int | None
    evaluator: str | None
    seed: int | None
    accuracy: float | None  # set when training ran to the end; the mean over its seeds
    seed_accuracies: tuple[tuple[int, float], ...]  # (seed, accuracy) of each training; empty before seeds were
    accuracy_history: tuple[float, ...] | None
    stopped_at: int | None
    wall_time: float | None
    images_per_second: float | None
    device: str | None
    epochs_completed: int | None
    mfu: float | None
    zero_cost: dict[str, float]
    error: str | None
    duplicate_of: int | None
    requeued_from: int | None
    interrupted: bool  # marked on the trial itself (earlier versions; now the retraining carries requeued_from)
    retried: str | None
    worker: Worker | None

    @property
    def first_seed_accuracy(self) -> float | None:
        """The accuracy of the trial's first training: what a search without replicates would have kept."""
        return self.seed_accuracies[0][1] if self.seed_accuracies else self.accuracy

    @property
    def seeds(self) -> int:
        """How many trainings its accuracy is the mean of (1 for a trial from before seeds were recorded)."""
        return max(1, len(self.seed_accuracies))

    @property
    def is_stopped(self) -> bool:
        """Early stopping ended it at a rung."""
        return self.state == TrialState.PRUNED and self.stopped_at is not None

    @property
    def is_trained_out_of_limit(self) -> bool:
        """Trained to the end and then measured over the latency limit."""
        return self.state == TrialState.PRUNED and self.accuracy is not None and self.stopped_at is None

    @property
    def is_infeasible(self) -> bool:
        """Rejected before training: recorded infeasible, or carrying a positive constraint."""
        return self.feasible is False or any(value > 0 for value in self.constraints)


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def trial_record(trial: FrozenTrial | optuna.Trial) -> TrialRecord:
    """What `trial` records, typed; a trial in flight (an `optuna.Trial`) reads as RUNNING."""
    attrs = trial.user_attrs
    frozen = isinstance(trial, FrozenTrial)
    history = attrs.get(TrialKey.ACCURACY_HISTORY)
    worker = attrs.get(TrialKey.WORKER)
    return TrialRecord(
        number=trial.number,
        state=trial.state if frozen else TrialState.RUNNING,
        constraints=tuple((trial.constraints or {}).values()) if frozen else (),
        genome=attrs.get(TrialKey.GENOME),
        params=_optional(int, attrs.get(TrialKey.PARAMS)),
        flops=_optional(int, attrs.get(TrialKey.FLOPS)),
        budget_utilisation=_optional(float, attrs.get(TrialKey.BUDGET_UTILISATION)),
        feasible=attrs.get(TrialKey.FEASIBLE),
        infeasible_reason=attrs.get(TrialKey.INFEASIBLE_REASON),
        predicted_latency=_optional(float, attrs.get(TrialKey.PREDICTED_LATENCY)),
        measured_latency=_optional(float, attrs.get(TrialKey.MEASURED_LATENCY)),
        measure_time=_optional(float, attrs.get(TrialKey.MEASURE_TIME)),
        reference_latency=_optional(float, attrs.get(TrialKey.REFERENCE_LATENCY)),
        dataset=attrs.get(TrialKey.DATASET),
        proxy_resolution=attrs.get(TrialKey.PROXY_RESOLUTION),
        proxy_epochs=attrs.get(TrialKey.PROXY_EPOCHS),
        evaluator=attrs.get(TrialKey.EVALUATOR),
        seed=attrs.get(TrialKey.SEED),
        accuracy=_optional(float, attrs.get(TrialKey.ACCURACY)),
        seed_accuracies=tuple((int(seed), float(value)) for seed, value in attrs.get(TrialKey.SEED_ACCURACIES) or ()),
        accuracy_history=None if history is None else tuple(float(value) for value in history),
        stopped_at=_optional(int, attrs.get(TrialKey.STOPPED_AT)),
        wall_time=_optional(float, attrs.get(TrialKey.WALL_TIME)),
        images_per_second=_optional(float, attrs.get(TrialKey.IMAGES_PER_SECOND)),
        device=attrs.get(TrialKey.DEVICE),
        epochs_completed=_optional(int, attrs.get(TrialKey.EPOCHS_COMPLETED)),
        mfu=_optional(float, attrs.get(TrialKey.MFU)),
        zero_cost=dict(attrs.get(TrialKey.ZERO_COST) or {}),
        error=_optional(str, attrs.get(TrialKey.ERROR)),
        duplicate_of=_optional(int, attrs.get(TrialKey.DUPLICATE_OF)),
        requeued_from=_optional(int, attrs.get(TrialKey.REQUEUED_FROM)),
        interrupted=bool(attrs.get(TrialKey.INTERRUPTED)),
        retried=attrs.get(TrialKey.RETRIED),
        worker=None if not isinstance(worker, Mapping) else Worker(int(worker["pid"]), float(worker["rss_mib"])),
    )


def trial_genome(trial: FrozenTrial) -> Genome:
    """The genome a trial carries, loaded; one line naming the trial if it carries none or a broken one."""
    genome = trial_record(trial).genome
    if genome is None:
        raise GasError(f"trial {trial.number} carries no genome")
    try:
        return load_genome(genome)
    except GasError as error:
        raise type(error)(f"trial {trial.number}: {error}") from None


def genome_key(genome_data: Mapping[str, Any]) -> str:
    """One string per distinct genome, for finding repeats."""
    return json.dumps(genome_data, sort_keys=True)


# ---- writing trials (the search driver only) ---------------------------------------------------------


def write_proposal(
    trial: optuna.Trial,
    genome: Genome,
    cost: Cost,
    budget_flops: int | None,
    constraints: Mapping[str, float],
    predicted_latency: float | None = None,
) -> None:
    """What every proposal carries before anything is decided about it: genome, costs and constraints.

    Constraints are relative overshoots (`(cost - limit) / limit`) so every limit weighs alike; <= 0 is
    feasible, and Optuna's samplers read them to learn where the budget lies. A proposal that will train
    comes without its latency constraint, which its measurement decides (`write_constraints`).
    """
    trial.set_user_attr(TrialKey.GENOME, genome.to_dict())
    trial.set_user_attr(TrialKey.PARAMS, cost.params)
    trial.set_user_attr(TrialKey.FLOPS, cost.flops)
    if budget_flops:
        trial.set_user_attr(TrialKey.BUDGET_UTILISATION, cost.flops / budget_flops)
    if predicted_latency is not None:
        trial.set_user_attr(TrialKey.PREDICTED_LATENCY, predicted_latency)
    write_constraints(trial, constraints)


def write_infeasible(study: optuna.Study, trial: optuna.Trial, reasons: Sequence[str]) -> None:
    """A proposal over a limit: PRUNED with its reasons, never trained."""
    trial.set_user_attr(TrialKey.FEASIBLE, False)
    trial.set_user_attr(TrialKey.INFEASIBLE_REASON, "; ".join(reasons))
    study.tell(trial, state=TrialState.PRUNED)


def write_duplicate(study: optuna.Study, trial: optuna.Trial, earlier: FrozenTrial) -> FrozenTrial:
    """A proposal of a genome already trained (`earlier`, see `trained_genomes`): its outcome, not a second training.

    Trained to the end, it is COMPLETE with the earlier values; stopped at a rung, PRUNED and stopped; measured
    over the latency limit, PRUNED and infeasible; failed, FAIL with the earlier error. It carries the earlier
    trial's attributes and constraints, so a sampler sees a measured latency again, never a new prediction.
    """
    for key, value in earlier.user_attrs.items():
        if key not in trial.user_attrs and key not in (TrialKey.REQUEUED_FROM, TrialKey.INTERRUPTED):
            trial.set_user_attr(key, value)
    unset = {name: value for name, value in earlier.constraints.items() if name not in trial.constraints}
    write_constraints(trial, unset)
    trial.set_user_attr(TrialKey.DUPLICATE_OF, earlier.number)
    if earlier.state == TrialState.COMPLETE:
        return study.tell(trial, list(earlier.values))
    return study.tell(trial, state=earlier.state)


def write_dispatch(trial: optuna.Trial, proxy: ProxyConfig) -> None:
    """A feasible, new proposal about to train: the proxy settings its result will depend on."""
    trial.set_user_attr(TrialKey.FEASIBLE, True)
    trial.set_user_attr(TrialKey.DATASET, proxy.dataset)
    trial.set_user_attr(TrialKey.PROXY_RESOLUTION, proxy.resolution)
    trial.set_user_attr(TrialKey.PROXY_EPOCHS, proxy.train.epochs)
    trial.set_user_attr(TrialKey.EVALUATOR, proxy.evaluator)
    trial.set_user_attr(TrialKey.SEED, proxy.train.seed)


def _write_training(trial: optuna.Trial, result: ProxyResult) -> None:
    """What any training leaves, whole or stopped early: accuracy per epoch, time, speed, device."""
    trial.set_user_attr(TrialKey.ACCURACY_HISTORY, list(result.accuracy_history))
    trial.set_user_attr(TrialKey.WALL_TIME, result.wall_time)
    trial.set_user_attr(TrialKey.IMAGES_PER_SECOND, result.images_per_second)
    trial.set_user_attr(TrialKey.DEVICE, result.device)
    trial.set_user_attr(TrialKey.EPOCHS_COMPLETED, result.epochs)


def _write_trained(trial: optuna.Trial, result: ProxyResult) -> None:
    trial.set_user_attr(TrialKey.ACCURACY, result.accuracy)
    _write_training(trial, result)
    if result.mfu is not None:
        trial.set_user_attr(TrialKey.MFU, result.mfu)
    if result.zero_cost:
        trial.set_user_attr(TrialKey.ZERO_COST, dict(result.zero_cost))


def write_result(
    study: optuna.Study,
    trial: optuna.Trial,
    result: ProxyResult,
    cost: float | None = None,
    seeds: Sequence[tuple[int, float]] = (),
) -> FrozenTrial:
    """A trained proposal: COMPLETE with values (accuracy, cost) and what the worker measured.

    The cost is the study's objective (FLOPs unless the search said params or latency). `seeds`, the
    (seed, accuracy) of each training, the first first: `result` is the first training's, with the seeds'
    mean accuracy and their summed wall time.
    """
    _write_trained(trial, result)
    if seeds:
        trial.set_user_attr(TrialKey.SEED_ACCURACIES, [[seed, accuracy] for seed, accuracy in seeds])
    return study.tell(trial, [result.accuracy, float(trial.user_attrs[TrialKey.FLOPS] if cost is None else cost)])


def write_constraints(trial: optuna.Trial, constraints: Mapping[str, float]) -> None:
    """Constraints decided after the proposal (a measured latency); Optuna keeps the first value of each."""
    for name, value in constraints.items():
        trial.set_constraint(name, value)


def write_measured_latency(trial: optuna.Trial, seconds: float, took: float, reference: float | None = None) -> None:
    trial.set_user_attr(TrialKey.MEASURED_LATENCY, seconds)
    trial.set_user_attr(TrialKey.MEASURE_TIME, took)
    if reference is not None:
        trial.set_user_attr(TrialKey.REFERENCE_LATENCY, reference)


def write_over_limit(
    study: optuna.Study, trial: optuna.Trial, result: ProxyResult, constraints: Mapping[str, float], reasons: list[str]
) -> FrozenTrial:
    """A trained proposal whose measured latency broke the limit its prediction kept: infeasible, never on the front.

    It keeps what training measured (it spent a worker's time), and its constraint becomes the measured
    overshoot, so samplers learn from the measurement rather than the prediction.
    """
    _write_trained(trial, result)
    write_constraints(trial, constraints)
    trial.set_user_attr(TrialKey.FEASIBLE, False)
    trial.set_user_attr(TrialKey.INFEASIBLE_REASON, "measured " + "; ".join(reasons))
    return study.tell(trial, state=TrialState.PRUNED)


def write_stopped(study: optuna.Study, trial: optuna.Trial, result: ProxyResult) -> FrozenTrial:
    """A trial early stopping ended at a rung: PRUNED, feasible, with its accuracy after each epoch.

    Never COMPLETE, so never on the front (Optuna's `best_trials`, `gas pareto`, `gas export`). Optuna's
    TPE sorts a feasible PRUNED trial of a multi-objective study after every COMPLETE one when it splits
    trials into good and bad (`_split_trials` in optuna/samplers/_tpe/sampler.py: pruned trials join the
    good group only when there are fewer complete trials than it needs, the earliest first, since they
    carry no intermediate values), so a stopped genome's region counts as bad once complete trials fill
    the good group; the positive constraints of over-budget proposals rank them below both.
    """
    trial.set_user_attr(TrialKey.STOPPED_AT, result.epochs)
    _write_training(trial, result)
    return study.tell(trial, state=TrialState.PRUNED)


def write_worker(trial: optuna.Trial, pid: int, rss_bytes: int) -> None:
    """Which worker process ran a trial and how much memory it held after; written before the result."""
    trial.set_user_attr(TrialKey.WORKER, {"pid": pid, "rss_mib": round(rss_bytes / 2**20, 1)})


def write_failure(study: optuna.Study, trial: optuna.Trial, error: str) -> FrozenTrial:
    """A trial that raised, ran out of memory or diverged: FAIL with the error's first line."""
    trial.set_user_attr(TrialKey.ERROR, error)
    return study.tell(trial, state=TrialState.FAIL)


def write_retried(trial: optuna.Trial, reason: str) -> None:
    """A trial in flight runs again on a fresh worker: why (its result, or its error, is the second run's)."""
    trial.set_user_attr(TrialKey.RETRIED, reason)


def requeue(study: optuna.Study, number: int) -> None:
    """An interrupted trial (live here, or left RUNNING by a killed search): FAIL, and the same genome queued.

    The queued trial carries `requeued_from`, which is what marks the FAIL as an interruption rather than
    a failure; only public Optuna calls are used, so any storage and any process can do it.
    """
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(dict(trial.params), user_attrs={TrialKey.REQUEUED_FROM: number}, skip_if_exists=False)
