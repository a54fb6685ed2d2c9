"""`gas search` end to end: the real CLI, a real SQLite study and a real local Ray cluster, at tiny sizes.

What is about Ray (the driver, workers in other directories, signals, joining a cluster) runs the CLI on a
local cluster; what is about the engine (resume rules, bad input) runs the in-process driver or `main`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from gas import study as record
from gas.cli import main
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.search import Engine, SearchConfig, run_search, search_in_process
from gas.space import get_space, load_genome
from tests.conftest import REPO, run_gas

# Small proxies: 32px digits for one epoch keeps a trial to seconds on one CPU thread.
TINY = ["--dataset", "digits", "--resolution", "32", "--epochs", "1", "--no-progress", "--seed", "1", "--audit", "0"]
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
    args = [sys.executable, "-m", "gas", "search", "--budget", "1G", "--trials", "6", "--study", "resume", *SCORED]
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
    assert len(trained) == 6
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = [t for t in study.get_trials() if "requeued_from" in t.user_attrs]
    # Every trial that did not finish was interrupted (nothing failed here), and each was re-queued once.
    interrupted = {t.number for t in study.get_trials(states=(TrialState.FAIL,))}
    assert sorted(t.user_attrs["requeued_from"] for t in requeued) == sorted(interrupted)
    assert record.interrupted_numbers(study.get_trials()) == interrupted
    assert len(record.trained_trials(study)) == 6
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
def test_search_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["search", *args, "--no-progress"]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "ray").exists(), "bad input is refused before anything trains"


def test_bad_input_from_a_shell_is_one_line_without_traceback(tmp_path):
    result = run_gas("search", "--budget", "abc", "--no-progress", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "budget 'abc' is not a count" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _scored_config(tmp_path: Path, **changes) -> SearchConfig:
    proxy = ProxyConfig(dataset="digits", evaluator="zero-cost", train_size=64, val_size=32).with_overrides(
        epochs=1, seed=1, device="cpu"
    )
    base = dict(budget=1_000_000_000, trials=1, study="same", storage=f"sqlite:///{tmp_path}/gas.db", progress=False)
    return SearchConfig(**{**base, "proxy": proxy, **changes})


def test_resumed_study_must_keep_its_settings(tmp_path):
    first = _scored_config(tmp_path)
    assert search_in_process(first).trained == 1
    proxy = first.proxy
    changes = {
        "budget 1000000000 (now 2000000000)": {"budget": 2_000_000_000},
        "proxy.lr 0.0001 (now 0.001)": {"proxy": proxy.with_overrides(lr=1e-3)},
        "proxy.batch_size 32 (now 16)": {"proxy": proxy.with_overrides(batch_size=16)},
        "proxy.train_size 64 (now 128)": {"proxy": proxy.with_overrides(train_size=128)},
        "proxy.epochs 1 (now 2)": {"proxy": proxy.with_overrides(epochs=2)},
    }
    for difference, change in changes.items():
        with pytest.raises(GasError) as refused:
            search_in_process(_scored_config(tmp_path, trials=2, **change))
        assert f"study 'same' was run with other settings: {difference}" in str(refused.value)
        assert "\n" not in str(refused.value)
    assert len(record.trained_trials(record.open_study("same", first.storage))) == 1, "nothing trained on refusal"


def test_a_study_started_on_gpus_does_not_resume_on_a_cpu(tmp_path):
    """The device kind is part of the settings: bf16 CUDA training and fp32 CPU training are other proxies."""
    on_gpus = _scored_config(tmp_path)
    Engine(dataclasses.replace(on_gpus, proxy=on_gpus.proxy.with_overrides(device="cuda")))  # as a GPU cluster does
    with pytest.raises(GasError, match=r'proxy.device "cuda" \(now "cpu"\)'):
        search_in_process(on_gpus)


def test_a_study_from_an_earlier_version_opens_and_resumes_only_under_its_settings(tmp_path):
    committed = REPO / "experiments" / "results" / "default_search.db"
    copy = tmp_path / "default_search.db"
    shutil.copy(committed, copy)
    storage = f"sqlite:///{copy}"
    study = record.open_study("turbovit-2.5G", storage)
    assert record.front(study) and record.trained_trials(study)
    assert main(["pareto", "--study", "turbovit-2.5G", "--storage", storage]) == 0
    # Its settings predate the recorded learning rate and device; they were the only ones it could run with.
    recorded = study.user_attrs[record.StudyKey.SETTINGS]
    assert "lr" not in recorded["proxy"]
    now = ProxyConfig().with_overrides(device="cpu").settings()
    seed = study.user_attrs[record.StudyKey.SEED]
    assert record.settings_differences(recorded, {**recorded, "proxy": now}, seed) == []
    assert record.settings_differences(recorded, {**recorded, "proxy": {**now, "lr": 1e-3}}, seed) == [
        "proxy.lr 0.0001 (now 0.001)"
    ]


def test_in_process_and_ray_drivers_write_the_same_study(tmp_path):
    """One trial at a time and the same seed: the same genomes, states and values, whichever driver runs them."""
    studies = {}
    for driver, search in (("local", search_in_process), ("ray", run_search)):
        config = _scored_config(
            tmp_path, study=driver, storage=f"sqlite:///{tmp_path}/{driver}.db", trials=4, max_concurrent=1
        )
        studies[driver] = search(config).study

    def summary(study):
        return [
            (t.state, t.values, t.user_attrs.get(record.TrialKey.GENOME), t.user_attrs.get(record.TrialKey.FLOPS))
            for t in study.get_trials()
        ]

    local, ray = summary(studies["local"]), summary(studies["ray"])
    assert len(record.trained_trials(studies["local"])) == 4
    assert local == ray


def test_a_relative_imagefolder_reaches_the_workers(tmp_path):
    """Ray runs each trial in a folder of its own: a path the user gave relative to theirs must still be found."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "mydata" / label).mkdir(parents=True)
        for index in range(20):
            pixels = generator.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "mydata" / label / f"{index}.png")
    (tmp_path / "mydata" / "dogs" / "broken.png").write_bytes(b"not an image")
    args = ["--budget", "1G", "--trials", "3", "--study", "mine", "--dataset", "imagefolder:mydata", "--audit", "3"]
    result = run_gas("search", *args, "--resolution", "32", "--evaluator", "zero-cost", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "failures: none" in result.stdout
    # One-line warnings (the search's data check, and the audit's before its long runs), no traceback.
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("gas search: warning:") and "broken.png" in line for line in lines)
    study = open_study(tmp_path, "mine")
    assert _count(tmp_path, "mine", TrialState.COMPLETE) == 3
    # Every search ends with a small fidelity audit (the long runs read the same folder), recorded in the study.
    assert "audit: " in result.stdout and "n 3, against 12 epochs at 32px" in result.stdout  # 3x the default 4
    audit = record.audit_of(study)
    assert audit["n"] == 3 and audit["settings"]["evaluator"] == "train" and not audit["failed"]
    data = study.user_attrs[record.StudyKey.DATA]
    assert data["unreadable"] == ["dogs/broken.png"] and data["images"] == 40
    assert study.user_attrs[record.StudyKey.SETTINGS]["proxy"]["dataset"] == f"imagefolder:{tmp_path / 'mydata'}"


def test_a_search_in_which_every_trial_failed_is_a_failure(tmp_path):
    env = {"PYTHONPATH": str(REPO)}
    args = ["search", "--space", "tests.faulty_space:fault=raise", "--budget", "100G", "--trials", "2"]
    result = run_gas(*args, "--study", "doomed", *TINY, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout
    assert "all 2 trials of this run failed; the first: RuntimeError: injected fault in forward" in result.stderr
    assert "failures: 2 failed: 2x RuntimeError: injected fault in forward" in result.stdout
