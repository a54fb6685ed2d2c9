"""Where studies are kept: storage URLs and their drivers, opening and creating studies, resuming a search's.

Any RDB URL SQLAlchemy takes works; a SQLite file (the default, runs/gas.db) gets its folder created and
write-ahead logging. What a study holds is gas.record's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from gas import record
from gas.errors import GasError

DEFAULT_STORAGE = "sqlite:///runs/gas.db"


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
        directions=list(record.DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )
    recorded = record.study_record(study)
    if recorded.settings is None:
        record.write_search(study, settings, attributes, objective)
        return study
    differences = record.settings_differences(recorded.settings, settings, recorded.seed)
    if differences:
        raise GasError(f"study {name!r} was run with other settings: {', '.join(differences)}; pass another --study")
    return study
