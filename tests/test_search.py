"""`gas search` end to end: the real CLI, a real SQLite study and a real local Ray cluster, at tiny sizes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from gas.space import get_space, load_genome
from tests.conftest import REPO, run_gas

# Small proxies: 32px digits for one epoch keeps a trial to seconds on one CPU thread.
TINY = ["--dataset", "digits", "--resolution", "32", "--epochs", "1", "--no-progress", "--seed", "1"]
# Where the search machinery, not training, is under test: trials scored at initialisation in ~1 s.
SCORED = [*TINY, "--evaluator", "zero-cost"]


def open_study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/runs/gas.db")


def ray_trial_numbers(folder: Path) -> set[int]:
    """Study trial numbers that became Ray Tune trials (Ray names each trial's folder after it)."""
    return {int(path.name.removeprefix("trial_")) for path in (folder / "runs" / "ray").glob("*/trial_*")}


def non_dominated(trials: list) -> set[int]:
    def dominates(a, b) -> bool:
        (acc_a, flops_a), (acc_b, flops_b) = a.values, b.values
        return acc_a >= acc_b and flops_a <= flops_b and (acc_a > acc_b or flops_a < flops_b)

    return {t.number for t in trials if not any(dominates(other, t) for other in trials)}


def test_search_end_to_end(tmp_path):
    result = run_gas("search", "--budget", "1G", "--trials", "3", "--study", "e2e", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout and "gas export --study e2e" in result.stdout

    study = open_study(tmp_path, "e2e")
    space = get_space("turbovit")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    infeasible = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in complete:
        attrs = trial.user_attrs
        genome = load_genome(attrs["genome"])
        cost = space.cost(genome)
        assert attrs["flops"] == cost.flops <= 1e9 and attrs["params"] == cost.params
        assert trial.values == [attrs["accuracy"], attrs["flops"]] and 0.0 <= attrs["accuracy"] <= 1.0
        assert attrs["budget_utilisation"] == pytest.approx(cost.flops / 1e9)
        assert attrs["proxy_resolution"] == 32 and attrs["proxy_epochs"] == 1 and attrs["dataset"] == "digits"
        assert attrs["wall_time"] > 0 and attrs["device"] == "cpu" and attrs["images_per_second"] > 0
        assert all(value <= 0 for value in trial.constraints.values())

    assert infeasible, "a 1G budget rejects some proposals of the turbovit space"
    for trial in infeasible:
        assert trial.user_attrs["feasible"] is False and trial.user_attrs["flops"] > 1e9
        assert "over the 1G budget" in trial.user_attrs["infeasible_reason"]
        assert trial.constraints["flops"] > 0
    assert ray_trial_numbers(tmp_path) == {t.number for t in complete}

    assert {t.number for t in study.best_trials} == non_dominated(complete)


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    env = {"PYTHONPATH": str(REPO)}
    args = ["search", "--space", "tests.faulty_space", "--budget", "100G", "--trials", "3", "--study", "faults"]
    result = run_gas(*args, *TINY, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    trials = sorted(open_study(tmp_path, "faults").get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[1].user_attrs["error"] == "RuntimeError: injected fault in forward"
    assert "nan" in trials[2].user_attrs["error"].lower() or "finite" in trials[2].user_attrs["error"].lower()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def _count(folder: Path, name: str, state: TrialState) -> int:
    if not (folder / "runs" / "gas.db").exists():
        return 0
    try:
        return len(open_study(folder, name).get_trials(states=(state,)))
    except (KeyError, ValueError, sqlalchemy.exc.SQLAlchemyError):  # the search is still creating it
        return 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_interrupted_search_keeps_finished_trials_and_resumes(tmp_path, stop_signal):
    args = [sys.executable, "-m", "gas", "search", "--budget", "1G", "--trials", "16", "--study", "resume", *SCORED]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finished_a_trial() -> bool:
        if process.poll() is not None:  # the search ended on its own: show why instead of waiting
            raise AssertionError(f"search exited with {process.returncode}: {process.stderr.read()}")
        return _count(tmp_path, "resume", TrialState.COMPLETE) >= 1

    try:
        _wait_for(finished_a_trial, 240, "a finished trial")
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command to resume" in stderr
    before = {t.number: t.values for t in open_study(tmp_path, "resume").get_trials(states=(TrialState.COMPLETE,))}
    assert before

    result = run_gas(*args[3:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = open_study(tmp_path, "resume")
    after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[number] == values for number, values in before.items())
    trained = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(trained) == 16
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = [t for t in study.get_trials() if "requeued_from" in t.user_attrs]
    interrupted = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert len(requeued) == len(interrupted)
    for trial in requeued:
        assert trial.params == study.trials[trial.user_attrs["requeued_from"]].params


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_search_joins_a_separately_started_ray_cluster(tmp_path):
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
        ],
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the head and every process it starts share one group to stop at the end
    )
    try:
        _wait_for(lambda: _port_open(port), 120, "the Ray head node")
        args = ["search", "--budget", "1G", "--trials", "2", "--study", "joined", "--ray-address", f"127.0.0.1:{port}"]
        result = run_gas(*args, *SCORED, cwd=tmp_path, env={"RAY_AUTH_MODE": "disabled"})
        assert result.returncode == 0, result.stderr
        assert _count(tmp_path, "joined", TrialState.COMPLETE) == 2
        assert len(ray_trial_numbers(tmp_path)) == 2
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "abc"], "budget 'abc' is not a count"),
        (["--budget", "1M"], "no genome of the turbovit space fits this budget"),
        (["--budget", "2.5G", "--ray-address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--budget", "2.5G", "--space", "nope"], "unknown space 'nope'"),
        (["--budget", "2.5G", "--storage", "nosuchdb://x"], "cannot open storage nosuchdb://x"),
        (["--budget", "2.5G", "--trials", "0"], "--trials must be at least 1"),
        (["--budget", "2.5G", "--dataset", "cifar10", "--data-dir", "/no/such/dir"], "/no/such/dir"),
    ],
)
def test_search_bad_input_is_one_line(tmp_path, args, message):
    result = run_gas("search", *args, "--no-progress", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resumed_study_must_keep_its_settings(tmp_path):
    first = run_gas("search", "--budget", "1G", "--trials", "1", "--study", "same", *SCORED, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_gas("search", "--budget", "2G", "--trials", "2", "--study", "same", *SCORED, cwd=tmp_path)
    assert again.returncode == 2
    assert "study 'same' was run with other settings: budget 1000000000 (now 2000000000)" in again.stderr
