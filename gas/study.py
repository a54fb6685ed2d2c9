"""The study record: every name a study and its trials carry, how each kind of trial is written and read.

A trial's state says what happened to its genome:
    COMPLETE  trained to the end within budget; values are (accuracy, FLOPs)
    PRUNED    rejected before training: over budget (constraint > 0, reason in `infeasible_reason`); or
              stopped early at a rung (feasible constraint, `stopped_at` and `accuracy_history`)
    FAIL      raised, ran out of memory or diverged while training (reason in `error`), or interrupted
              (another trial carries `requeued_from` = its number and trains the same genome again)
    RUNNING   in flight (a search that was killed leaves these; the next run re-queues them)
A proposal that repeats a genome already trained is never trained again: it takes the earlier training's
outcome (state, values, constraints and what training measured) and `duplicate_of` = that trial's number.
Only the search driver writes a study, through the `write_*` functions here; everything else reads it
through the readers here, so a study written by any version of gas reads the same way.
"""

from __future__ import annotations

import json
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from gas.cost import Cost
from gas.errors import GasError
from gas.genome import Genome
from gas.space import load_genome
from gas.units import compact_count, format_duration, parse_count

if TYPE_CHECKING:  # the proxy imports torch; reading a study must not
    from gas.evaluate.proxy import ProxyConfig, ProxyResult

DEFAULT_STORAGE = "sqlite:///runs/gas.db"
OBJECTIVES = ("accuracy", "flops")
DIRECTIONS = ("maximize", "minimize")


class TrialKey:
    """Trial user attributes: the contract `gas pareto`, `gas export`, the dashboard and users rely on."""

    GENOME = "genome"  # the genome as a JSON object
    PARAMS = "params"  # parameters at 224px (the costed resolution)
    FLOPS = "flops"  # fvcore-convention FLOPs at the costed resolution
    BUDGET_UTILISATION = "budget_utilisation"  # FLOPs / FLOPs budget
    FEASIBLE = "feasible"
    INFEASIBLE_REASON = "infeasible_reason"
    ACCURACY = "accuracy"  # final proxy validation accuracy in [0, 1]
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


class StudyKey:
    """Study user attributes: what the search ran under."""

    SETTINGS = "settings"  # everything that decides a result; a resumed search must match it
    SPACE = "space"
    BUDGET = "budget"
    MAX_PARAMS = "max_params"
    SEED = "seed"
    SAMPLER = "sampler"
    DATA = "data"  # what the dataset check found: classes, images, files skipped as unreadable
    OBJECTIVE = "objective"  # the front's cost axis: flops, params or latency
    LATENCY = "latency"  # the target device, the limit, and how well the latency model predicted
    # The fidelity audit (gas.search.audit): a sample retrained longer, both accuracies of each, Kendall's
    # tau; a study attribute because finished trials take no new attributes.
    AUDIT = "audit"


# Proxy settings earlier versions did not record, at the only values those versions could run with: a
# study they wrote resumes only under the same ones.
LEGACY_PROXY_SETTINGS = {
    "batch_size": 32,
    "lr": 1e-4,
    "weight_decay": 0.05,
    "warmup_fraction": 0.1,
    "label_smoothing": 0.1,
    "grad_clip": 1.0,
    "pos_embed_lr_scale": 10.0,
    "train_size": 1024,
    "val_size": 512,
    "zero_cost_batch": 64,
    "compile": False,
    "eval_batch_size": 256,
    "test_size": None,
    "splits": 1,
}


def default_study_name(
    space: str, budget: int | None, max_params: int | None = None, max_latency: float | None = None
) -> str:
    """'turbovit-2.5G', 'turbovit-2.5G-15M' with a params cap, 'turbovit-25ms' with a latency limit alone."""
    parts = [space.replace(":", "-").replace("=", "")]
    parts += [compact_count(limit) for limit in (budget, max_params) if limit]
    if max_latency:
        parts.append(format_duration(max_latency))
    return "-".join(parts)


def _fast_sqlite(connection: Any, _record: Any) -> None:
    """WAL with synchronous=NORMAL: every write survives a killed process, at a quarter of the cost.

    Each suggested parameter and attribute is its own commit; with the default rollback journal each
    commit waits on fsync, which made a single proposal take most of a second.
    """
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def storage_for(url: str | None) -> optuna.storages.BaseStorage:
    """An RDB storage for `url` (default: runs/gas.db), creating the folder of a SQLite file."""
    url = url or DEFAULT_STORAGE
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GasError(f"cannot create {path.parent} for storage {url}: {error.strerror}") from None
    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _fast_sqlite):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _fast_sqlite)
    try:
        return _create_or_open(url)
    except ImportError as error:
        # Optuna's message names no driver; the import error it wraps names the module SQLAlchemy wanted.
        parsed = sqlalchemy.engine.make_url(url)
        module = (getattr(error.__cause__, "name", None) or parsed.get_driver_name()).split(".")[0]
        package = {"psycopg": "'gas[postgres]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}.get(module)
        kinds = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB", "mssql": "SQL Server"}
        kind = kinds.get(parsed.get_backend_name(), parsed.get_backend_name().capitalize())
        raise GasError(f"{kind} storage needs the {module} driver: pip install {package or module}") from None
    except Exception as error:  # SQLAlchemy raises many kinds; the user needs one line either way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GasError(f"cannot open storage {url}: {reason}") from None


def _create_or_open(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Open `url`, creating its tables if it has none.

    Two processes that create the same new database at once (a search and a dashboard or a second
    search started beside it) race to create its tables and write its schema version; the loser finds
    the winner's tables on its next try.
    """
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            time.sleep(0.2 * attempt)
    return optuna.storages.RDBStorage(url)


def redacted_url(url: str) -> str:
    """`url` with any password replaced by ***, for printing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """An existing study, or one clear line listing the studies the storage holds."""
    backend = storage_for(storage)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(backend)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise GasError(f"no study {name!r} in {storage or DEFAULT_STORAGE}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=backend)


def open_study(name: str, storage: str | None = None) -> optuna.Study:
    """An existing study for reading: unlike `load_study`, a SQLite file that does not exist is an error.

    Inspecting commands (`gas pareto`, `gas export`, `gas dashboard`) must not leave an empty database
    behind when a path is mistyped.
    """
    url = storage or DEFAULT_STORAGE
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.is_file():
            raise GasError(f"no study {name!r}: storage file {path} does not exist (is --storage right?)")
    return load_study(name, storage)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, fully trained, non-dominated trials, by FLOPs ascending."""
    return sorted(study.best_trials, key=lambda trial: trial.values[1])


def trial_genome(trial: FrozenTrial) -> Genome:
    if TrialKey.GENOME not in trial.user_attrs:
        raise GasError(f"trial {trial.number} carries no genome")
    try:
        return load_genome(trial.user_attrs[TrialKey.GENOME])
    except GasError as error:
        raise type(error)(f"trial {trial.number}: {error}") from None


def find_trial(study: optuna.Study, number: int, states: Sequence[TrialState] = (TrialState.COMPLETE,)) -> FrozenTrial:
    """Trial `number` of `study` if it is in one of `states`; otherwise one line saying what it is instead."""
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.number != number:
            continue
        if trial.state in states:
            return trial
        why = trial.user_attrs.get(TrialKey.INFEASIBLE_REASON) or trial.user_attrs.get(TrialKey.ERROR)
        wanted = " or ".join(state.name for state in states)
        raise GasError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}{f' ({why})' if why else ''}, "
            f"not {wanted}"
        )
    span = f"trials 0 to {len(trials) - 1}" if trials else "no trials"
    raise GasError(f"study {study.study_name!r} has no trial {number}; it has {span}")


# ---- opening a search's study ------------------------------------------------------------------------


def _with_legacy_defaults(settings: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """Settings as recorded, with the settings earlier versions left out filled in at their values.

    Those versions trained every trial with the study's seed, on the CPU, and measured latency in torch.
    """
    filled = dict(settings)
    if isinstance(filled.get("proxy"), Mapping):
        filled["proxy"] = {**LEGACY_PROXY_SETTINGS, "device": "cpu", "seed": seed, **filled["proxy"]}
    latency = filled.get("latency")
    if isinstance(latency, Mapping):
        from gas.latency.device import LEGACY_FINGERPRINT

        latency = dict(latency)
        if isinstance(latency.get("settings"), Mapping):
            latency["settings"] = {"runtime": LEGACY_FINGERPRINT["runtime"], **latency["settings"]}
        if isinstance(latency.get("fingerprint"), Mapping):
            latency["fingerprint"] = {**LEGACY_FINGERPRINT, **latency["fingerprint"]}
        filled["latency"] = latency
    return filled


def settings_differences(
    recorded: Mapping[str, Any], wanted: Mapping[str, Any], study_seed: int | None = None
) -> list[str]:
    """Each setting whose recorded value differs from `wanted`, as 'proxy.lr 0.0001 (now 0.001)'.

    `study_seed` is the study's recorded seed, which earlier versions used as every trial's seed.
    """
    recorded = _with_legacy_defaults(recorded, study_seed)

    def walk(old: Any, new: Any, path: str) -> list[str]:
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            keys = list(new) + [key for key in old if key not in new]
            return [line for key in keys for line in walk(old.get(key), new.get(key), f"{path}{key}.")]
        if old == new:
            return []
        return [f"{path.rstrip('.')} {json.dumps(old)} (now {json.dumps(new)})"]

    return walk(recorded, wanted, "")


def create_or_resume(
    name: str,
    storage: str | None,
    sampler: optuna.samplers.BaseSampler,
    settings: Mapping[str, Any],
    attributes: Mapping[str, Any],
    objective: str = "flops",
) -> optuna.Study:
    """The search's study: created with `settings` and `attributes`, or resumed if its settings match.

    `settings` is everything that decides a trial's result (space, budget, proxy and training settings,
    the device kind); a study recorded under other settings is refused in one line naming each difference,
    so one study never mixes differently-trained trials.
    """
    study = optuna.create_study(
        study_name=name,
        storage=storage_for(storage),
        directions=list(DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(StudyKey.SETTINGS)
    if recorded is None:
        study.set_user_attr(StudyKey.SETTINGS, dict(settings))
        for key, value in attributes.items():
            study.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVES[0], objective])
        return study
    differences = settings_differences(recorded, settings, study.user_attrs.get(StudyKey.SEED))
    if differences:
        raise GasError(f"study {name!r} was run with other settings: {', '.join(differences)}; pass another --study")
    return study


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
    study: optuna.Study, trial: optuna.Trial, result: ProxyResult, cost: float | None = None
) -> FrozenTrial:
    """A trained proposal: COMPLETE with values (accuracy, cost) and what the worker measured.

    The cost is the study's objective (FLOPs unless the search said params or latency).
    """
    _write_trained(trial, result)
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


# ---- reading trials ------------------------------------------------------------------------------------


def running_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def interrupted_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were interrupted and re-queued (by this version or an earlier one)."""
    requeued = {int(t.user_attrs[TrialKey.REQUEUED_FROM]) for t in trials if TrialKey.REQUEUED_FROM in t.user_attrs}
    return requeued | {t.number for t in trials if t.user_attrs.get(TrialKey.INTERRUPTED)}


def is_duplicate(trial: FrozenTrial) -> bool:
    return TrialKey.DUPLICATE_OF in trial.user_attrs


def is_requeued(trial: FrozenTrial) -> bool:
    return TrialKey.REQUEUED_FROM in trial.user_attrs


def is_trained_out_of_limit(trial: FrozenTrial) -> bool:
    """A trial trained to the end and then measured over the latency limit."""
    return (
        trial.state == TrialState.PRUNED
        and TrialKey.ACCURACY in trial.user_attrs
        and TrialKey.STOPPED_AT not in trial.user_attrs
    )


def is_stopped(trial: FrozenTrial) -> bool:
    """A trial early stopping ended at a rung."""
    return trial.state == TrialState.PRUNED and TrialKey.STOPPED_AT in trial.user_attrs


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that spent a worker's time (trained, stopped early or failed; not interrupted, not repeats).

    What --trials counts.
    """
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    return [
        t
        for t in trials
        if (t.state in (TrialState.COMPLETE, TrialState.FAIL) or is_stopped(t) or is_trained_out_of_limit(t))
        and t.number not in interrupted
        and not is_duplicate(t)
    ]


def rung_cost(attributes: Mapping[str, Any], objective: str) -> float:
    """A trial's cost where early stopping compares it at a rung, from its user attributes: the front's axis.

    Under the latency objective it is the predicted latency, the only one a trial has before it is trained
    to the end; so every trial at a rung, of this run or an earlier one, is costed alike.
    """
    if objective == "latency":
        return float(attributes[TrialKey.PREDICTED_LATENCY])
    return float(attributes[TrialKey.PARAMS if objective == "params" else TrialKey.FLOPS])


def rung_histories(study: optuna.Study) -> list[tuple[int, list[float], float]]:
    """(trial, accuracy after each epoch, rung cost) of every trial trained to the end or stopped at a rung."""
    objective = objective_of(study)
    return [
        (t.number, list(t.user_attrs[TrialKey.ACCURACY_HISTORY]), rung_cost(t.user_attrs, objective))
        for t in trained_trials(study)
        if t.state != TrialState.FAIL and TrialKey.ACCURACY_HISTORY in t.user_attrs
    ]


def failed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials whose training raised, ran out of memory or diverged (interruptions excluded)."""
    return [t for t in trained_trials(study) if t.state == TrialState.FAIL]


def trial_error(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get(TrialKey.ERROR) or "no error recorded")


def failure_summary(failed: Sequence[FrozenTrial], most: int = 3) -> str:
    """'3 failed: 2x out of memory on cpu ...; 1x loss became nan ...', the commonest errors first."""
    counts = Counter(trial_error(trial) for trial in failed)
    parts = [f"{count}x {error}" for error, count in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f"{len(counts) - most} other errors")
    return f"{len(failed)} failed: " + "; ".join(parts)


def is_infeasible(trial: FrozenTrial) -> bool:
    """A proposal rejected before training: recorded infeasible, or carrying a positive constraint."""
    return trial.user_attrs.get(TrialKey.FEASIBLE) is False or any(v > 0 for v in (trial.constraints or {}).values())


def proposals(study: optuna.Study) -> list[FrozenTrial]:
    """Trials the sampler proposed (re-queued retrainings excluded), in order."""
    return [t for t in study.get_trials(deepcopy=False) if TrialKey.FEASIBLE in t.user_attrs and not is_requeued(t)]


def feasible_share_by_half(study: optuna.Study) -> tuple[float, float]:
    """Share of feasible proposals in the first and second half of the study: the sampler learning."""
    feasible = [bool(t.user_attrs[TrialKey.FEASIBLE]) for t in proposals(study)]
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
            counts["infeasible" if is_infeasible(trial) else "stopped" if is_stopped(trial) else "pruned"] += 1
        elif trial.state == TrialState.FAIL:
            counts["interrupted" if trial.number in interrupted else "failed"] += 1
        else:
            counts[trial.state.name.lower()] += 1
    order = ("complete", "stopped", "infeasible", "failed", "interrupted", "pruned", "running", "waiting")
    return {name: counts[name] for name in order if counts[name] or name in ("complete", "infeasible", "failed")}


def study_budget(study: optuna.Study) -> int | None:
    """The FLOPs budget the search ran under, if the study records one."""
    budget = study.user_attrs.get(StudyKey.BUDGET)
    if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
        return int(budget)
    if isinstance(budget, str):
        try:
            return parse_count(budget)
        except GasError:
            return None
    return None


def audit_of(study: optuna.Study) -> dict[str, Any] | None:
    """The study's latest fidelity audit (see gas.search.audit), or None if it has not been audited."""
    audit = study.user_attrs.get(StudyKey.AUDIT)
    return dict(audit) if isinstance(audit, Mapping) else None


def latency_pairs(study: optuna.Study) -> list[tuple[float, float]]:
    """(predicted, measured) latency in seconds of every trained trial that carries both."""
    return [
        (float(t.user_attrs[TrialKey.PREDICTED_LATENCY]), float(t.user_attrs[TrialKey.MEASURED_LATENCY]))
        for t in trained_trials(study)
        if TrialKey.PREDICTED_LATENCY in t.user_attrs and TrialKey.MEASURED_LATENCY in t.user_attrs
    ]


def reference_latencies(study: optuna.Study) -> list[float]:
    """The reference network's medians measured beside the trained trials, in the order they were taken
    (trials from before the reference was measured have none)."""
    measured = [t for t in trained_trials(study) if TrialKey.REFERENCE_LATENCY in t.user_attrs]
    measured.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
    return [float(t.user_attrs[TrialKey.REFERENCE_LATENCY]) for t in measured]


def latency_of(study: optuna.Study) -> dict[str, Any] | None:
    """The study's latency target (device settings, limit) and its latency model's accuracy, if it has one."""
    value = study.user_attrs.get(StudyKey.LATENCY)
    return dict(value) if isinstance(value, Mapping) else None


def objective_of(study: optuna.Study) -> str:
    """The front's cost axis: 'flops' for studies that do not say (every earlier version)."""
    return str(study.user_attrs.get(StudyKey.OBJECTIVE) or "flops")


def genome_key(genome_data: Mapping[str, Any]) -> str:
    """One string per distinct genome, for finding repeats."""
    return json.dumps(genome_data, sort_keys=True)


def trained_genomes(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The trial that trained each genome, whatever it ended in: a proposal of one of these is a duplicate.

    Every outcome of a training counts (trained to the end, stopped at a rung, measured over the latency
    limit, failed); an interrupted trial does not, since its genome is queued to train again. Where a study
    from an earlier version trained a genome twice, the first training is the one repeated.
    """
    trained: dict[str, FrozenTrial] = {}
    for trial in trained_trials(study):
        if TrialKey.GENOME in trial.user_attrs:
            trained.setdefault(genome_key(trial.user_attrs[TrialKey.GENOME]), trial)
    return trained
