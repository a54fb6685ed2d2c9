"""The study: where a search's trials live, what each trial records, and which trials form the front.

A trial's state says what happened to its genome:
    COMPLETE  trained to the end within budget; values are (accuracy, FLOPs)
    PRUNED    rejected before training: over budget (constraint > 0, reason in `infeasible_reason`)
    FAIL      raised, ran out of memory or diverged while training (reason in `error`)
    RUNNING   in flight (a search that was killed leaves these; the next run re-queues them)
Only the driver writes the study; workers return numbers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from gas.errors import GasError
from gas.genome import Genome
from gas.space import load_genome
from gas.units import compact_count

DEFAULT_STORAGE = "sqlite:///runs/gas.db"
OBJECTIVES = ("accuracy", "flops")
DIRECTIONS = ("maximize", "minimize")

# Trial user attributes (the contract `gas pareto`, `gas export` and users rely on).
GENOME = "genome"  # the genome as a JSON object
PARAMS = "params"  # parameters at 224px (the costed resolution)
FLOPS = "flops"  # fvcore-convention FLOPs at the costed resolution
BUDGET_UTILISATION = "budget_utilisation"  # FLOPs / FLOPs budget
FEASIBLE = "feasible"
INFEASIBLE_REASON = "infeasible_reason"
ACCURACY = "accuracy"  # final proxy validation accuracy in [0, 1]
DATASET = "dataset"
PROXY_RESOLUTION = "proxy_resolution"
PROXY_EPOCHS = "proxy_epochs"
EVALUATOR = "evaluator"
WALL_TIME = "wall_time"  # seconds spent inside the trial
IMAGES_PER_SECOND = "images_per_second"
DEVICE = "device"
ERROR = "error"
SEED = "seed"


def default_study_name(space: str, budget: int, max_params: int | None = None) -> str:
    """'turbovit-2.5G', or 'turbovit-2.5G-15M' with a params cap."""
    name = f"{space.replace(':', '-').replace('=', '')}-{compact_count(budget)}"
    return name + (f"-{compact_count(max_params)}" if max_params else "")


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
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # SQLAlchemy raises many kinds; the user needs one line either way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GasError(f"cannot open storage {url}: {reason}") from None


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
    if GENOME not in trial.user_attrs:
        raise GasError(f"trial {trial.number} carries no genome")
    try:
        return load_genome(trial.user_attrs[GENOME])
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
        why = trial.user_attrs.get(INFEASIBLE_REASON) or trial.user_attrs.get(ERROR)
        wanted = " or ".join(state.name for state in states)
        raise GasError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}{f' ({why})' if why else ''}, "
            f"not {wanted}"
        )
    span = f"trials 0 to {len(trials) - 1}" if trials else "no trials"
    raise GasError(f"study {study.study_name!r} has no trial {number}; it has {span}")


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """The numbers a table shows for one trial."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "accuracy": attrs.get(ACCURACY),
        "flops": attrs.get(FLOPS),
        "params": attrs.get(PARAMS),
        "budget_utilisation": attrs.get(BUDGET_UTILISATION),
        "wall_time": attrs.get(WALL_TIME),
        "device": attrs.get(DEVICE),
    }
