"""`gas search` end to end: the real CLI, a real SQLite study and a real local Ray cluster, at tiny sizes.

What is about Ray (the driver, workers in other directories, signals, joining a cluster) runs the CLI on a
local cluster; what is about the engine (resume rules, bad input) runs the in-process driver or `main`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from gas import record
from gas.cli import main
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.search import Engine, SearchConfig, run_search, search_in_process
from gas.space import get_space, load_genome
from gas.storage import open_study, storage_for
from gas.study import front, interrupted_numbers, trained_trials
from tests.conftest import REPO, run_gas, start_gas

# Small proxies: 32px digits for one epoch keeps a trial to seconds on one CPU thread.
TINY = ["--dataset", "digits", "--resolution", "32", "--epochs", "1", "--no-progress", "--seed", "1", "--audit", "0"]
# Where the search machinery, not training, is under test: trials scored at initialisation in ~1 s.
SCORED = [*TINY, "--evaluator", "zero-cost"]


def runs_study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/runs/gas.db")


def ray_trial_folders(folder: Path) -> list[str]:
    """The Ray Tune trials' folder names: trial_N for study trial N's first training, trial_N_seedK for its k-th."""
    return sorted(path.name for path in (folder / "runs" / "ray").glob("*/trial_*"))


def ray_trial_numbers(folder: Path) -> set[int]:
    """Study trial numbers that became Ray Tune trials (Ray names each trial's folder after it)."""
    return {int(name.removeprefix("trial_").partition("_")[0]) for name in ray_trial_folders(folder)}


def non_dominated(trials: list) -> set[int]:
    def dominates(a, b) -> bool:
        (acc_a, flops_a), (acc_b, flops_b) = a.values, b.values
        return acc_a >= acc_b and flops_a <= flops_b and (acc_a > acc_b or flops_a < flops_b)

    return {t.number for t in trials if not any(dominates(other, t) for other in trials)}


def _image_folder(root: Path) -> None:
    """Two classes of 20 random 40x40 images, and one file that is not an image."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for index in range(20):
            pixels = generator.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
    (root / "dogs" / "broken.png").write_bytes(b"not an image")


def test_search_end_to_end_on_a_relative_image_folder(tmp_path):
    """The whole path as a user runs it on their own data: a folder named relative to theirs (Ray runs each
    trial in a folder of its own, so the driver must resolve it), one unreadable file among good ones, and
    the fidelity audit every search ends with (its long runs read the same folder); and seed replicates on the
    Ray workers: each trial that could be on the front trains twice (--max-seeds 2: no racing), each training
    a Ray trial of its own."""
    _image_folder(tmp_path / "mydata")
    args = ["--budget", "1G", "--trials", "6", "--study", "e2e", "--dataset", "imagefolder:mydata", "--audit", "3"]
    args += ["--resolution", "32", "--epochs", "1", "--seed", "1", "--no-progress", "--max-seeds", "2"]
    result = run_gas("search", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto front" in result.stdout and "gas export --study e2e" in result.stdout
    assert "failures: none" in result.stdout and "proxy noise over" in result.stdout
    # One-line warnings (the search's data check, and the audit's before its long runs), no traceback.
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("gas search: warning:") and "broken.png" in line for line in lines)

    study = runs_study(tmp_path, "e2e")
    space = get_space("turbovit")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    infeasible = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) >= 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    # Six trainings, and at most one more seed for each of the two trials in flight when they ran out.
    seeds = {t.number: record.trial_record(t).seed_accuracies for t in complete}
    assert 6 <= sum(len(runs) for runs in seeds.values()) <= 8 and max(map(len, seeds.values())) == 2
    folders = {f"trial_{n}" + (f"_seed{k}" if k else "") for n, runs in seeds.items() for k in range(len(runs))}
    assert set(ray_trial_folders(tmp_path)) == folders
    folder = f"imagefolder:{tmp_path / 'mydata'}"
    for trial in complete:
        attrs = trial.user_attrs
        runs = seeds[trial.number]
        assert [seed for seed, _ in runs] == [1, 2][: len(runs)]  # the proxy's seed (--seed 1), then the next
        assert trial.values[0] == pytest.approx(sum(accuracy for _, accuracy in runs) / len(runs))
        genome = load_genome(attrs["genome"])
        cost = space.cost(genome)
        assert attrs["flops"] == cost.flops <= 1e9 and attrs["params"] == cost.params
        assert trial.values == [attrs["accuracy"], attrs["flops"]] and attrs["accuracy_history"] == [runs[0][1]]
        assert attrs["budget_utilisation"] == pytest.approx(cost.flops / 1e9)
        assert attrs["proxy_resolution"] == 32 and attrs["proxy_epochs"] == 1 and attrs["dataset"] == folder
        assert attrs["wall_time"] > 0 and attrs["device"] == "cpu" and attrs["images_per_second"] > 0
        assert all(value <= 0 for value in trial.constraints.values())
        # The worker that ran it, and its resident memory after (torch alone takes more than 100 MiB).
        assert attrs["worker"]["pid"] > 0 and attrs["worker"]["pid"] != os.getpid() and attrs["worker"]["rss_mib"] > 100
    data = study.user_attrs[record.StudyKey.DATA]
    assert data["unreadable"] == ["dogs/broken.png"] and data["images"] == 40
    assert study.user_attrs[record.StudyKey.SETTINGS]["proxy"]["dataset"] == folder
    assert "audit: " in result.stdout and "n 3, against 3 epochs at 32px" in result.stdout  # 3x the proxy's 1
    audit = record.audit_record(study)
    assert audit.n == 3 and audit.evaluator == "train" and not audit.failed

    assert infeasible, "a 1G budget rejects some proposals of the turbovit space"
    for trial in infeasible:
        assert trial.user_attrs["feasible"] is False and trial.user_attrs["flops"] > 1e9
        assert "over the 1G budget" in trial.user_attrs["infeasible_reason"]
        assert trial.constraints["flops"] > 0
    assert ray_trial_numbers(tmp_path) == {t.number for t in complete}

    assert {t.number for t in study.best_trials} == non_dominated(complete)


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path):
    """A trial that raises and one that diverges are recorded with their errors; the search trains on.

    The engine records failures for both drivers alike (the driver test below); the Ray path's own
    error transport is what the every-trial-failed test runs."""
    proxy = ProxyConfig(dataset="digits", train_size=64, val_size=32).with_overrides(epochs=1, seed=1, device="cpu")
    config = SearchConfig(
        budget=100_000_000_000,
        space="tests.faulty_space",
        trials=3,
        study="faults",
        storage=f"sqlite:///{tmp_path}/gas.db",
        proxy=proxy,
        progress=False,
        replicates=None,  # each trial's one training: the first completes, the others fail
    )
    outcome = search_in_process(config)
    assert outcome.failed_run is None and outcome.failures and outcome.failures.startswith("2 failed")
    trials = sorted(outcome.study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[1].user_attrs["error"] == "RuntimeError: injected fault in forward"
    assert "nan" in trials[2].user_attrs["error"].lower() or "finite" in trials[2].user_attrs["error"].lower()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _count(folder: Path, name: str, state: TrialState) -> int:
    if not (folder / "runs" / "gas.db").exists():
        return 0
    try:
        # Read only: a poll that created the tables would race the search creating them.
        storage = optuna.storages.RDBStorage(f"sqlite:///{folder}/runs/gas.db", skip_table_creation=True)
        return len(optuna.load_study(study_name=name, storage=storage).get_trials(states=(state,)))
    except (KeyError, ValueError, sqlalchemy.exc.SQLAlchemyError):  # the search is still creating it
        return 0


def _interrupt(args: list[str], folder: Path, stop_signal: int, finished: int) -> dict[int, list[float]]:
    """Run the search until `finished` trials are complete, stop it with `stop_signal`, and return what it kept."""
    process = start_gas(*args, cwd=folder)

    def enough() -> bool:
        if process.poll() is not None:  # the search ended on its own: show why instead of waiting
            raise AssertionError(f"search exited with {process.returncode}: {process.stderr.read()}")
        return _count(folder, "resume", TrialState.COMPLETE) >= finished

    try:
        _wait_for(enough, 240, f"{finished} finished trials")
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command to resume" in stderr
    return {t.number: t.values for t in runs_study(folder, "resume").get_trials(states=(TrialState.COMPLETE,))}


def test_interrupted_search_keeps_finished_trials_and_resumes(tmp_path):
    """Ctrl-C, then a kill (SIGTERM) of the resumed run, then a resume to the end: nothing finished is lost."""
    args = ["search", "--budget", "1G", "--trials", "8", "--study", "resume", *SCORED]
    after_ctrl_c = _interrupt(args, tmp_path, signal.SIGINT, finished=1)
    after_kill = _interrupt(args, tmp_path, signal.SIGTERM, finished=len(after_ctrl_c) + 1)
    assert after_ctrl_c and all(after_kill[number] == values for number, values in after_ctrl_c.items())

    result = run_gas(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = runs_study(tmp_path, "resume")
    after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[number] == values for number, values in after_kill.items())
    trained = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(trained) == 8
    assert not study.get_trials(states=(TrialState.RUNNING,))
    requeued = [t for t in study.get_trials() if "requeued_from" in t.user_attrs]
    # Every trial that did not finish was interrupted (nothing failed here), and each was re-queued once.
    interrupted = {t.number for t in study.get_trials(states=(TrialState.FAIL,))}
    assert sorted(t.user_attrs["requeued_from"] for t in requeued) == sorted(interrupted)
    assert interrupted_numbers(study.get_trials()) == interrupted
    assert len(trained_trials(study)) == 8
    for trial in requeued:
        assert trial.params == study.trials[trial.user_attrs["requeued_from"]].params


def test_a_search_rejecting_proposals_stops_at_once_when_killed(tmp_path):
    """Under 450M FLOPs the random sampler's first 1224 proposals (seed 1) are over the budget: minutes in which
    the driver is inside one of Tune's requests for a suggestion. A kill still stops it at once."""
    process = start_gas("search", "--budget", "450M", "--sampler", "random", "--study", "t", *SCORED, cwd=tmp_path)

    def rejecting() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"search exited with {process.returncode}: {process.stderr.read()}")
        return _count(tmp_path, "t", TrialState.PRUNED) >= 5

    try:
        _wait_for(rejecting, 240, "5 rejected proposals")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)  # the next feasible proposal is minutes away
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "run the same command to resume" in stderr
    trials = runs_study(tmp_path, "t").get_trials()
    assert len(trials) >= 5, "every rejection is kept"
    # Stopped between two proposals, never inside one: nothing half-written, running or re-queued.
    assert all(t.state == TrialState.PRUNED and not t.user_attrs[record.TrialKey.FEASIBLE] for t in trials)
    assert all(record.TrialKey.GENOME in t.user_attrs for t in trials)


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--objective", "fast"], "invalid choice: 'fast'"),
        (["search", "--max-latency", "-3ms"], "--max-latency: expected one argument"),
        (["search", "--budget"], "--budget: expected one argument"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_arguments_are_one_line_pointing_at_help(capsys, args, message):
    """argparse's own errors too: one line with where help is, not the whole usage text."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "--help)" in stderr and len(stderr.strip().splitlines()) == 1


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
        "proxy.test_size null (now 100)": {"proxy": proxy.with_overrides(test_size=100)},
        "proxy.seed 1 (now 2)": {"proxy": proxy.with_overrides(seed=2)},
    }
    for difference, change in changes.items():
        with pytest.raises(GasError) as refused:
            search_in_process(_scored_config(tmp_path, trials=2, **change))
        assert f"study 'same' was run with other settings: {difference}" in str(refused.value)
        assert "\n" not in str(refused.value)
    assert len(trained_trials(open_study("same", first.storage))) == 1, "nothing trained on refusal"


def test_a_resumed_search_proposes_new_genomes_and_resumes_the_same_way_twice(tmp_path):
    """Resuming does not replay the first run's proposals (the sampler's seed alone would), yet stays
    reproducible: the same study resumed twice from the same state proposes the same genomes."""
    first = _scored_config(tmp_path, budget=2_500_000_000, trials=3)
    proposed_first = [t.user_attrs[record.TrialKey.GENOME] for t in search_in_process(first).study.get_trials()]
    with sqlite3.connect(tmp_path / "gas.db") as source, sqlite3.connect(tmp_path / "copy.db") as copy:
        source.backup(copy)  # a file copy could miss what is still in the write-ahead log
    resumed = {}
    for name in ("gas", "copy"):
        config = dataclasses.replace(first, trials=6, storage=f"sqlite:///{tmp_path}/{name}.db")
        study = search_in_process(config).study
        resumed[name] = [t.user_attrs[record.TrialKey.GENOME] for t in study.get_trials()]
        assert resumed[name][: len(proposed_first)] == proposed_first
        assert not [genome for genome in resumed[name][len(proposed_first) :] if genome in proposed_first]
    assert resumed["gas"] == resumed["copy"]
    assert len(trained_trials(open_study("same", first.storage))) == 6


def _open_together(url: str, openers: int) -> list[str]:
    """Open `url` through gas from `openers` threads released at once: "ok" or the error, for each."""
    import threading

    start, outcomes = threading.Barrier(openers), []

    def open_when_released() -> None:
        start.wait()
        try:
            storage_for(url)
            outcomes.append("ok")
        except GasError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=open_when_released) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_openers_of_one_new_study_file_at_once_all_open_it(tmp_path):
    """A search and a dashboard (or two searches) started together race to create the same new database.

    Threads with a connection each race exactly as processes do, and start together more reliably."""
    for attempt in range(3):
        assert _open_together(f"sqlite:///{tmp_path}/new{attempt}.db", 6) == ["ok"] * 6


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
    study = open_study("turbovit-2.5G", storage)
    assert front(study) and trained_trials(study)
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
    # Its shapes images are today's: the test split came from a stream of its own. A digits study of that
    # version trained on images that now belong to the test split, and is refused.
    digits = ProxyConfig(dataset="digits").with_overrides(device="cpu").settings()
    assert record.settings_differences(
        {**recorded, "proxy": {**recorded["proxy"], "dataset": "digits"}}, {**recorded, "proxy": digits}, seed
    ) == ["proxy.splits 1 (now 2)"]


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
    assert len(trained_trials(studies["local"])) == 4
    assert local == ray


def test_a_search_in_which_every_trial_failed_is_a_failure(tmp_path):
    env = {"PYTHONPATH": str(REPO)}
    args = ["search", "--space", "tests.faulty_space:fault=raise", "--budget", "100G", "--trials", "2"]
    result = run_gas(*args, "--study", "doomed", *TINY, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout
    assert "all 2 trials of this run failed; the first: RuntimeError: injected fault in forward" in result.stderr
    assert "failures: 2 failed: 2x RuntimeError: injected fault in forward" in result.stdout


def test_a_kill_during_a_write_to_the_study_waits_for_the_write():
    from gas.search.interrupts import Interrupts

    interrupts = Interrupts()
    before = signal.getsignal(signal.SIGTERM)
    written = []
    with pytest.raises(KeyboardInterrupt), interrupts.installed():
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here, in the main thread, and must not raise
            written.append("whole")
        written.append("after the block")  # not reached: the interrupt takes effect as the block ends
    assert written == ["whole"]
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers are put back"
    with pytest.raises(KeyboardInterrupt), interrupts.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # outside a held block it stops at once


def test_the_progress_line_moves_during_a_run_of_rejections(tmp_path, monkeypatch, capsys):
    """Proposals over the budget can take minutes in a row; the status line shows them as they are made."""
    from gas.search import engine as engine_module
    from gas.search import progress as progress_module

    monkeypatch.setattr(engine_module, "MAX_REJECTIONS_IN_A_ROW", 6)
    monkeypatch.setattr(progress_module, "REFRESH_SECONDS", 0.0)
    proxy = ProxyConfig(dataset="digits", evaluator="zero-cost", train_size=64, val_size=32)
    config = SearchConfig(
        budget=get_space("turbovit").least_cost().flops + 1,  # the cheapest genomes only: random draws miss them
        trials=2,
        study="tight",
        storage=f"sqlite:///{tmp_path}/gas.db",
        proxy=proxy.with_overrides(device="cpu"),
        sampler="random",
    )
    engine = Engine(config)
    progress = progress_module.Progress(engine.study, config.trials, enabled=True)
    engine.on_rejected = progress.refresh
    assert engine.propose() is None and engine.stopped_reason.startswith("6 proposals in a row")
    progress.close()
    shown = re.findall(r"proposed (\d+) \(0% feasible\)", capsys.readouterr().err)
    assert sorted({int(count) for count in shown}) == list(range(7)), "at the start, then after each rejection"
