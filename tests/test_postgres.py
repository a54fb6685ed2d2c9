"""A study on a real PostgreSQL server: `gas search` and its resume through the CLI, checked with Optuna alone.

The server is a throwaway cluster (Debian's initdb and pg_ctl, trust auth, 127.0.0.1, a free port) in a
temporary folder, started once for this module and removed after it. `make test` installs the server
package when it is missing on a root machine with apt; anywhere else without it these tests fail, saying
what to install, rather than skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from gas.space import get_space, load_genome
from tests.conftest import REPO, run_gas

# Trials scored at initialisation on 32px digits: each takes about a second, so the server is what is tested.
SEARCH = [
    *("--dataset", "digits", "--resolution", "32", "--epochs", "1", "--evaluator", "zero-cost"),
    *("--no-progress", "--budget", "2.5G", "--seed", "1", "--audit", "0"),
]


def _server_bin() -> Path:
    """The folder holding initdb and pg_ctl: PATH first, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # Debian's PATH links point into the versioned folder
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL's server (initdb, pg_ctl) is not installed: apt-get install postgresql")
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL cluster that lives as long as this module's tests."""
    server_bin = _server_bin()
    # initdb and the server refuse to run as root; as root they run as Debian's postgres user.
    as_owner: list[str] = []
    root = tempfile.mkdtemp(prefix="gas-postgres-")  # pytest's own tmp folders are closed to other users
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, log = f"{root}/data", f"{root}/server.log"

    def run(*command: str) -> None:
        done = subprocess.run([*as_owner, *command], cwd=root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server_log = Path(log).read_text() if Path(log).exists() else ""
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{server_log}")

    port = _free_port()
    # fsync off: nothing here needs to outlive a crash, and it keeps the cluster's start to a few seconds.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -F"
    try:
        run(str(server_bin / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        run(str(server_bin / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(server_bin / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _trained(url: str, study: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_search_and_resume_on_postgresql(postgres_url, tmp_path):
    args = ["search", "--storage", postgres_url, "--study", "on-postgres", *SEARCH]
    first = run_gas(*args, "--trials", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = _trained(postgres_url, "on-postgres")
    assert len(before) == 2

    resumed = run_gas(*args, "--trials", "4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after = _trained(postgres_url, "on-postgres")
    assert len(after) == 4
    # Resuming adds trials and leaves the finished ones as they were.
    unchanged = ("number", "values", "params", "user_attrs", "datetime_start", "datetime_complete")
    for old, new in zip(before, after[:2], strict=True):
        assert {key: getattr(new, key) for key in unchanged} == {key: getattr(old, key) for key in unchanged}

    space = get_space("turbovit")
    for trial in after:
        genome = load_genome(trial.user_attrs["genome"])
        assert genome.space == "turbovit" and space.cost(genome).flops == trial.user_attrs["flops"] <= 2.5e9
        assert trial.values == [trial.user_attrs["accuracy"], trial.user_attrs["flops"]]
    assert not (tmp_path / "runs" / "gas.db").exists(), "nothing may fall back to the default SQLite file"


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_missing_driver_is_one_line_naming_the_package(tmp_path):
    # SQLAlchemy's mysql:// driver is MySQLdb (mysqlclient), which gas does not install.
    probe = subprocess.run([sys.executable, "-c", "import MySQLdb"], capture_output=True)
    assert probe.returncode != 0, "this test needs an environment without mysqlclient"
    result = run_gas("search", "--storage", "mysql://gas@127.0.0.1:1/gas", *SEARCH, "--trials", "1", cwd=tmp_path)
    expected = "gas search: error: MySQL storage needs the MySQLdb driver: pip install mysqlclient"
    assert _one_line_error(result) == expected
    assert not (tmp_path / "runs").exists()


def test_missing_psycopg_names_the_postgres_extra():
    # psycopg is installed here, so its absence is made the way Python sees a missing package: a None entry
    # in sys.modules makes `import psycopg` raise ImportError. The CLI itself is unchanged.
    code = "import sys; sys.modules['psycopg'] = None; from gas.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["pareto", "--study", "any", "--storage", "postgresql://gas@127.0.0.1:1/gas"]
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    expected = "gas pareto: error: PostgreSQL storage needs the psycopg driver: pip install 'gas[postgres]'"
    assert _one_line_error(result) == expected
