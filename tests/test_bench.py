"""The benchmark harnesses and `gas bench`, end to end at tiny sizes, writing their results into tmp folders."""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from scipy.stats import kendalltau

from experiments.common.results import update_summary, write_page
from experiments.common.tables import markdown_table
from gas import record
from gas.cli import main as gas_main
from gas.evaluate.proxy import ProxyConfig
from gas.latency import BuildPlan, LatencySettings
from gas.latency.measure import time_in_turns
from gas.search import SearchConfig
from gas.search.latency_limit import LatencyTarget
from gas.space import get_space, load_genome
from gas.stats import hypervolume, kendall_tau, seed_noise
from gas.storage import open_study
from gas.study import trained_trials
from tests.conftest import REPO, run_gas

BUDGET = 2_500_000_000
# Zero-cost scores of 16 digits images at 32px: an evaluation takes a fraction of a second.
TINY_SEARCH = ["--dataset", "digits", "--resolution", "32", "--train-size", "16", "--val-size", "16"]
TINY_TIMING = ["--batch-sizes", "1", "2", "--repeats", "2", "--batch-repeats", "1", "--warmup", "1"]


def load_script(name: str, script: str = "run.py"):
    """experiments/NAME/SCRIPT as a module, so its main() runs in this process (no second interpreter)."""
    path = REPO / "experiments" / name / script
    spec = importlib.util.spec_from_file_location(f"_experiment_{name}_{Path(script).stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The harnesses set torch's thread count for their runs; later tests in this process keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench_search():
    return load_script("bench_search")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory, bench_search):
    """One tiny search-efficiency run: TPE and random sampling, 2 seeds, zero-cost evaluator, in-process."""
    out = tmp_path_factory.mktemp("bench_search")
    args = ["--samplers", "tpe", "random", "--trials", "3", "--random-trials", "4", "--seeds", "2", "--out", str(out)]
    assert bench_search.main([*args, *TINY_SEARCH]) == 0
    return out


# ---- hypervolume -------------------------------------------------------------------------------------


def test_hypervolume_matches_a_hand_computed_front(bench_search):
    points = [
        (0.5, 0.2 * BUDGET),
        (0.8, 0.6 * BUDGET),
        (0.4, 0.5 * BUDGET),  # dominated by the first: adds nothing
        (0.95, 1.2 * BUDGET),  # over budget: adds nothing
    ]
    # Strips from FLOPs/budget 0.2 to 0.6 at accuracy 0.5, and from 0.6 to 1.0 at accuracy 0.8.
    assert hypervolume(points, BUDGET) == pytest.approx(0.4 * 0.5 + 0.4 * 0.8)
    assert hypervolume([(1.0, 0.0)], BUDGET) == pytest.approx(1.0)
    assert hypervolume([], BUDGET) == 0.0


def test_hypervolume_curve_never_falls_and_skips_failures(bench_search):
    evaluations = [(0.3, 0.9 * BUDGET), None, (0.2, 0.1 * BUDGET), (0.1, 0.5 * BUDGET), (0.6, 0.95 * BUDGET)]
    curve = bench_search.hypervolume_curve(evaluations, BUDGET)
    two_points = 0.8 * 0.2 + 0.1 * 0.3  # (0.2 accuracy from 0.1 to 0.9 of the budget) + (0.3 from 0.9 to 1)
    assert curve == pytest.approx([0.03, 0.03, two_points, two_points, 0.8 * 0.2 + 0.05 * 0.3 + 0.05 * 0.6])
    assert all(later >= earlier for earlier, later in itertools.pairwise(curve))
    assert bench_search.evaluations_to_reach(curve, curve[2]) == 3
    assert bench_search.evaluations_to_reach(curve, 1.0) is None


# ---- search efficiency -------------------------------------------------------------------------------


def test_search_efficiency_harness_end_to_end(search_run, bench_search):
    curves = pd.read_csv(search_run / "bench_search_zero-cost.csv")
    runs = pd.read_csv(search_run / "bench_search_zero-cost_runs.csv")
    assert sorted(map(tuple, runs[["sampler", "seed"]].values.tolist())) == [
        ("random", 0),
        ("random", 1),
        ("tpe", 0),
        ("tpe", 1),
    ]
    for (sampler, seed), curve in curves.groupby(["sampler", "seed"]):
        assert len(curve) == (4 if sampler == "random" else 3)
        assert (curve["hypervolume"].diff().dropna() >= 0).all()
        assert (curve["flops"] <= BUDGET).all() and curve["accuracy"].between(0, 1).all()
        # The curve is the study's evaluations, in order: the study alone reproduces it.
        study = optuna.load_study(
            study_name=f"bench_search_zero-cost-{sampler}-s{seed}",
            storage=f"sqlite:///{search_run / 'bench_search_zero-cost_studies' / f'{sampler}-s{seed}.db'}",
        )
        trained = trained_trials(study)
        assert sorted(curve["trial"]) == sorted(t.number for t in trained)
        assert all(
            t.state == TrialState.COMPLETE and t.user_attrs[record.TrialKey.EVALUATOR] == "zero-cost" for t in trained
        )
        assert study.user_attrs[record.StudyKey.SAMPLER] == sampler
        assert study.user_attrs[record.StudyKey.BUDGET] == BUDGET
        points = list(zip(curve["accuracy"], curve["flops"], strict=True))
        assert curve["hypervolume"].iloc[-1] == pytest.approx(hypervolume(points, BUDGET))

    summary = pd.read_csv(search_run / "bench_search_zero-cost_summary.csv")
    assert set(summary["sampler"]) == {"gas (TPE)", "random"}
    assert summary.loc[summary["sampler"] == "gas (TPE)", "random_x_median_range"].notna().all()
    markdown = (search_run / "bench_search_zero-cost.md").read_text()
    assert "random sampling needs" in markdown and "Machine: CPU" in markdown and "Command: `python" in markdown
    assert (search_run / "bench_search_zero-cost.png").read_bytes()[:4] == b"\x89PNG"
    summary_page = (search_run / "SUMMARY.md").read_text()
    assert "<!-- bench_search_zero-cost:start -->" in summary_page and "bench_search_zero-cost.png" in summary_page


def test_search_efficiency_redraws_the_same_figures_from_its_csvs(search_run, bench_search, tmp_path):
    redraw = tmp_path / "redraw"
    redraw.mkdir()
    for name in ("bench_search_zero-cost.csv", "bench_search_zero-cost_runs.csv"):
        (redraw / name).write_bytes((search_run / name).read_bytes())
    args = [
        "--samplers",
        "tpe",
        "random",
        "--trials",
        "3",
        "--random-trials",
        "4",
        "--seeds",
        "2",
        "--out",
        str(redraw),
    ]
    assert bench_search.main([*args, *TINY_SEARCH, "--report-only"]) == 0
    summary = "bench_search_zero-cost_summary.csv"
    pd.testing.assert_frame_equal(pd.read_csv(redraw / summary), pd.read_csv(search_run / summary))
    assert not (redraw / "bench_search_zero-cost_studies").exists()  # nothing ran
    assert "--report-only" not in (redraw / "bench_search_zero-cost.md").read_text()


def test_search_efficiency_redraw_without_results_is_one_line(bench_search, tmp_path, capsys):
    assert bench_search.main(["--out", str(tmp_path), "--report-only"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bench_search: error: cannot redraw from") and error.count("\n") == 1


# ---- latency model accuracy --------------------------------------------------------------------------


def test_latency_accuracy_harness_end_to_end(tmp_path, monkeypatch):
    """A tiny build and test of EfficientViT genomes; without repeat models the accuracy still lands."""
    monkeypatch.setenv("GAS_CACHE_DIR", str(tmp_path / "cache"))  # the harness must not touch any cache
    bench_latency = load_script("bench_latency")
    tiny = ["--spaces", "efficientvit", "--budget", "efficientvit=300M", "--genomes", "3", "--group", "3"]
    plan = ["--runs", "2", "--build-genomes", "2", "--calibrate", "2", "--part-runs", "1", "--repeat-models"]
    assert bench_latency.main([*tiny, *plan, "--out", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "bench_latency.csv")
    assert len(rows) == 3 and (rows["flops"] <= 300_000_000).all()
    assert (rows["measured_s"] > 0).all() and (rows["predicted_s"] > 0).all()
    assert rows["error"].tolist() == pytest.approx((rows["predicted_s"] / rows["measured_s"] - 1).tolist())
    assert rows["drift"].nunique() == 1 and rows["drift"].iloc[0] > 0
    assert not (tmp_path / "cache").exists()
    markdown = (tmp_path / "bench_latency.md").read_text()
    assert "- efficientvit: " in markdown and "Recalibrated on the build's networks measured again" in markdown
    assert pd.read_csv(tmp_path / "bench_latency_repeat.csv").empty


# ---- latency-aware search at equal worker time -------------------------------------------------------


def test_a_latency_run_pays_for_its_latency_model_and_measurements(tmp_path, monkeypatch):
    """The latency arm's worker time holds its model's build (in a cache of its own) and the driver's
    measurement of every trained network, and the run stops once the whole of it reaches the budget."""
    bench = load_script("bench_latency_search")
    shared = tmp_path / "cache"
    monkeypatch.setenv("GAS_CACHE_DIR", str(shared))
    plan = BuildPlan(genomes=2, calibrate=2, part_runs=1, runs=1, warmup=0, resolution=64)
    proxy = ProxyConfig(
        dataset="digits", evaluator="zero-cost", resolution=32, train_size=16, val_size=16, zero_cost_batch=2
    )
    config = SearchConfig(
        budget=None,
        study="latency-s0",
        storage=f"sqlite:///{tmp_path / 'studies' / 'latency-s0.db'}",
        trials=1,
        proxy=proxy.with_overrides(device="cpu"),
        progress=False,
        latency=LatencyTarget(LatencySettings(device="cpu", threads=1), 10.0, plan, runs=3),
        objective="latency",
    )
    seconds = 4.0
    row = bench.run_arm(("latency", 0, config, seconds, shared))

    study = open_study(config.study_name, config.storage)
    trained = trained_trials(study)
    walls = [trial.user_attrs[record.TrialKey.WALL_TIME] for trial in trained]
    measuring = [trial.user_attrs[record.TrialKey.MEASURE_TIME] for trial in trained]
    assert row["trials"] == len(trained) and row["build_s"] > 0 and row["measure_s"] > 0
    assert row["measure_s"] == pytest.approx(sum(measuring))
    assert row["worker_s"] == pytest.approx(row["build_s"] + sum(walls) + sum(measuring))
    before_last = row["build_s"] + sum(walls[:-1]) + sum(measuring[:-1])
    assert row["worker_s"] >= seconds and (len(trained) == 1 or before_last < seconds), row
    # Built from nothing for this run alone: no model in the shared cache, one in the run's own.
    assert not (shared / "latency").exists() and list((shared / "runs" / "latency-s0" / "latency").glob("*.json"))


# ---- search quality ----------------------------------------------------------------------------------


def test_search_quality_harness_end_to_end(search_run, tmp_path):
    bench_quality = load_script("bench_quality")
    storage = f"sqlite:///{search_run / 'bench_search_zero-cost_studies' / 'tpe-s0.db'}"
    args = ["--study", "bench_search_zero-cost-tpe-s0", "--storage", storage, "--datasets", "digits"]
    tiny = ["--seeds", "2", "--epochs", "1", "--train-size", "32", "--val-size", "32", "--out", str(tmp_path)]
    assert bench_quality.main([*args, *tiny]) == 0
    runs = pd.read_csv(tmp_path / "bench_quality.csv")
    baselines = {"hiera_tiny by width", "hiera_tiny by depth", "turbovit"}
    assert baselines < set(runs["candidate"]) and "searched (best)" in set(runs["candidate"])
    assert (runs.groupby("candidate")["seed"].nunique() == 2).all()
    assert (runs["flops"] <= BUDGET).all() and runs["accuracy"].between(0, 1).all()
    summary = pd.read_csv(tmp_path / "bench_quality_summary.csv")
    assert len(summary) == runs["candidate"].nunique()
    markdown = (tmp_path / "bench_quality.md").read_text()
    assert "- digits: searched" in markdown and "every baseline" in markdown
    assert "<!-- bench_quality:start -->" in (tmp_path / "SUMMARY.md").read_text()

    (tmp_path / "bench_quality.md").unlink()
    assert bench_quality.main([*args, *tiny, "--report-only"]) == 0
    assert (tmp_path / "bench_quality.md").read_text() == markdown  # the same figures and command


def test_search_quality_verdict_needs_significance():
    bench_quality = load_script("bench_quality")
    rows = [
        {"dataset": "shapes", "candidate": name, "kind": kind, "accuracy": accuracy}
        for name, kind, accuracies in [
            ("searched (best)", "searched", [0.90, 0.91, 0.92]),
            ("turbovit", "baseline", [0.80, 0.81, 0.82]),
            ("close", "baseline", [0.88, 0.93, 0.89]),
        ]
        for accuracy in accuracies
    ]
    (line,) = bench_quality.verdicts(pd.DataFrame(rows))
    assert "is ahead of every baseline, but not significantly" in line and "close" in line
    clear = pd.DataFrame([row for row in rows if row["candidate"] != "close"])
    (line,) = bench_quality.verdicts(clear)
    assert "searched (best) beats every baseline" in line and "turbovit" in line
    behind = clear.assign(accuracy=clear["accuracy"].where(clear["kind"] == "baseline", 0.5))
    (line,) = bench_quality.verdicts(behind)
    assert "does not beat every baseline" in line


def test_search_quality_refuses_a_study_of_another_budget(search_run, tmp_path, capsys):
    bench_quality = load_script("bench_quality")
    storage = f"sqlite:///{search_run / 'bench_search_zero-cost_studies' / 'tpe-s0.db'}"
    args = ["--budget", "1G", "--study", "bench_search_zero-cost-tpe-s0", "--storage", storage, "--out", str(tmp_path)]
    assert bench_quality.main(args) == 2
    assert "searched under 2.5G FLOPs, not the 1G asked for" in capsys.readouterr().err
    assert not (tmp_path / "bench_quality.csv").exists()


# ---- inference speed ---------------------------------------------------------------------------------


def test_time_in_turns_alternates_and_counts():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    seconds = time_in_turns(calls, repeats=3, warmup=2)
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, untimed
    assert order[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one further along
    assert {name: len(times) for name, times in seconds.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(time >= 0 for times in seconds.values() for time in times)


def test_gas_bench_times_a_reference_and_an_exported_module(tmp_path):
    exported = REPO / "generated" / "turbovit.py"
    csv_path = tmp_path / "speed.csv"
    args = ["bench", "hiera_tiny", str(exported), "--device", "cpu", "--threads", "1", "--csv", str(csv_path)]
    result = run_gas(*args, *TINY_TIMING, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith(("hiera_tiny ", f"{exported} "))]
    assert len(rows) == 4  # two models x two batch sizes
    for cells in rows:
        median_ms, images_per_s = float(cells[-4]), float(cells[-3])
        assert median_ms > 0 and images_per_s > 0
    table = pd.read_csv(csv_path)
    assert set(table["model"]) == {"hiera_tiny", str(exported)} and set(table["batch"]) == {1, 2}
    assert (table["images_per_s"] > 0).all() and (table["median_ms"] > 0).all()
    assert (table.loc[table["model"] == "hiera_tiny", "latency_x"] == 1.0).all()
    turbovit = table[table["model"] == str(exported)].iloc[0]
    assert turbovit["flops"] == get_space("turbovit").cost(load_genome("turbovit")).flops
    assert f"wrote {csv_path}" in result.stdout


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_model", "'no_such_model' is neither a genome file nor a reference"),
        ("missing/model.py", "cannot read missing/model.py: no such file"),
        ("turbovit:fused", "turbovit cannot be fused"),
    ],
)
def test_gas_bench_bad_model_is_one_line(model, message, capsys):
    assert gas_main(["bench", model, "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error


def test_gas_bench_broken_exported_file_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise ValueError('not a model file')\n")
    assert gas_main(["bench", str(broken), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "cannot import" in error and "ValueError: not a model file" in error
    assert len(error.strip().splitlines()) == 1


def test_inference_speed_harness_end_to_end(search_run, tmp_path):
    bench_speed = load_script("bench_speed")
    storage = f"sqlite:///{search_run / 'bench_search_zero-cost_studies' / 'tpe-s0.db'}"
    args = ["--references", "hiera_tiny", "efficientvit_m0:fused", "--study", "bench_search_zero-cost-tpe-s0"]
    args += ["--storage", storage, "--picks", "best", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)]
    assert bench_speed.main([*args, *TINY_TIMING]) == 0
    table = pd.read_csv(tmp_path / "bench_speed.csv")
    assert len(table) == 3 * 2 and (table["images_per_s"] > 0).all()
    searched = table[table["model"].str.startswith("searched best")]
    assert len(searched) == 2 and (searched["flops"] <= BUDGET).all()
    markdown = (tmp_path / "bench_speed.md").read_text()
    assert "3.21x lower latency" in markdown and "### cpu fp32" in markdown
    assert list((tmp_path / "bench_speed_genomes").glob("*.json"))


def test_runtime_harness_reports_a_failed_compile_and_times_the_other_runtimes(tmp_path, monkeypatch):
    """torch.compile fails for real (no C++ compiler where inductor looks): the table says so, the rest is timed."""
    model_file = tmp_path / "tiny.py"
    model_file.write_text(
        "import torch\n\n\ndef build_model():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())\n"
    )
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-compiler")))
    bench_runtime = load_script("bench_runtime")
    args = ["--references", "--models", str(model_file), "--threads", "1", "--batch-sizes", "1", "2"]
    args += ["--repeats", "2", "--batch-repeats", "1", "--out", str(tmp_path)]
    assert bench_runtime.main(args) == 0
    table = pd.read_csv(tmp_path / "bench_runtime.csv")
    assert sorted(zip(table["runtime"], table["batch"], strict=True)) == [
        ("onnxruntime", 1),
        ("onnxruntime", 2),
        ("torch", 1),
        ("torch", 2),
    ]
    assert not table["compiled"].any() and (table["median_ms"] > 0).all()
    assert table["compile_failure"].str.contains("no-such-compiler").all()
    markdown = (tmp_path / "bench_runtime.md").read_text()
    assert "torch.compile failed with 1 thread: " in markdown and " failed |" in markdown
    onnx_row = table[(table["runtime"] == "onnxruntime") & (table["batch"] == 1)].iloc[0]
    assert f"1 thread, batch 1, {model_file}: onnxruntime {onnx_row['vs_eager']:.2f}x of eager's time." in markdown
    assert "## Latency per runtime" in (tmp_path / "SUMMARY.md").read_text()

    assert bench_runtime.main([*args, "--report-only"]) == 0
    assert (tmp_path / "bench_runtime.md").read_text() == markdown


def test_latency_accuracy_harness_sets_the_machines_repeatability_beside_the_models(tmp_path):
    """A tiny build and two passes of real measurements: the page's shares are those of the rows (predictions
    within ±10% of their measurement; test genomes whose two measurements agree), and a redraw repeats it."""
    accuracy = load_script("bench_runtime", "accuracy.py")
    args = ["--runtimes", "torch", "--spaces", "efficientvit", "--genomes", "3", "--build-genomes", "2"]
    args += ["--calibrate", "2", "--part-runs", "1", "--runs", "2", "--group", "2", "--out", str(tmp_path)]
    assert accuracy.main(args) == 0
    rows = pd.read_csv(tmp_path / "bench_runtime_accuracy.csv")
    assert sorted(zip(rows["pass"], rows["genome"], strict=True)) == [(p, g) for p in (1, 2) for g in range(3)]
    assert (rows["reference_s"] > 0).all()
    assert rows["predicted_s"].to_numpy() == pytest.approx((rows["predicted_units"] * rows["reference_s"]).to_numpy())
    within = ((rows["predicted_s"] / rows["measured_s"] - 1).abs() <= 0.10).mean()
    first, second = (rows[rows["pass"] == n].set_index("genome")["measured_s"] for n in (1, 2))
    repeated = ((second / first - 1).abs() <= 0.10).mean()
    markdown = (tmp_path / "bench_runtime_accuracy.md").read_text()
    assert f"- torch, efficientvit: {within:.0%} of 6 predictions within ±10% of the measured median" in markdown
    assert f"the machine's {repeated:.0%} (its two measurements of each of 3 networks" in markdown
    assert "## Latency model accuracy per runtime" in (tmp_path / "SUMMARY.md").read_text()
    assert accuracy.main([*args, "--report-only"]) == 0
    redrawn = (tmp_path / "bench_runtime_accuracy.md").read_text()
    assert redrawn.split("Load average")[0] == markdown.split("Load average")[0]


# ---- scaling -----------------------------------------------------------------------------------------


def test_scaling_harness_end_to_end(tmp_path):
    script = REPO / "experiments" / "bench_scale" / "run.py"
    tiny = ["--dataset", "digits", "--resolution", "32", "--epochs", "1", "--train-size", "32", "--val-size", "32"]
    args = [sys.executable, str(script), "--concurrency", "2", "--trials", "2", *tiny, "--out", str(tmp_path / "out")]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out" / "bench_scale.csv")
    assert len(table) == 1
    row = table.iloc[0]
    assert row["trials"] == 2 and row["failed"] == 0 and row["slots"] == 2 and row["trials_per_hour"] > 0
    assert row["slot_s_per_trial"] == pytest.approx(
        row["train_steps_s"] + row["rest_of_trial_s"] + row["outside_trials_s"]
    )
    # The driver's share is its busy seconds over the run's, which the trials per hour give back.
    elapsed = row["trials"] / row["trials_per_hour"] * 3600
    assert row["driver_s"] > 0 and row["driver_share"] == pytest.approx(row["driver_s"] / elapsed)
    assert row["startup_s"] > 0
    assert "<!-- bench_scale:start -->" in (tmp_path / "out" / "SUMMARY.md").read_text()

    markdown = (tmp_path / "out" / "bench_scale.md").read_text()
    (tmp_path / "out" / "bench_scale.md").unlink()
    redraw = subprocess.run([*args, "--report-only"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert redraw.returncode == 0, redraw.stderr
    assert (tmp_path / "out" / "bench_scale.md").read_text() == markdown  # the same figures and command


def test_diagnosis_names_the_part_that_grew():
    bench_scale = load_script("bench_scale")
    alone = {"slots": 1, "trials_per_hour": 100.0, "slot_s_per_trial": 36.0, "driver_share": 0.05}
    alone |= {"train_steps_s": 30.0, "rest_of_trial_s": 4.0, "outside_trials_s": 2.0}
    # Two trials at once, each training at half speed: throughput flat, the device is the limit.
    shared = {"slots": 2, "trials_per_hour": 102.0, "slot_s_per_trial": 70.6, "driver_share": 0.1}
    shared |= {"train_steps_s": 60.0, "rest_of_trial_s": 5.0, "outside_trials_s": 5.6}
    lines = bench_scale.diagnose([alone, shared])
    assert "Scaling stops at 2 concurrent trials" in lines[-1] and "the device" in lines[-1]
    scaled = dict(shared, trials_per_hour=190.0, train_steps_s=31.0, outside_trials_s=3.0)
    assert "Scaling holds up to 2" in bench_scale.diagnose([alone, scaled])[-1]
    # Training took twice as long because the second search trained networks twice as large: not the device.
    larger = dict(shared, mean_flops=2e9)
    line = bench_scale.diagnose([dict(alone, mean_flops=1e9), larger])[0]
    assert "most growth in genome mix (+30.0s" in line


# ---- proxy design ------------------------------------------------------------------------------------


def test_proxy_design_harness_runs_what_is_missing_and_measures_the_seed_noise(tmp_path):
    script = REPO / "experiments" / "proxy_design" / "run.py"
    tiny = ["--genomes", "2", "--epochs", "1", "--train-size", "32", "--val-size", "32", "--test-size", "64"]
    tiny += ["--out", str(tmp_path)]
    args = [sys.executable, str(script), *tiny, "--only", "today", "target", "--target-seeds", "2", "--jobs", "2"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = pd.read_csv(tmp_path / "proxy_design_runs.csv")
    assert len(runs) == 12 and set(runs.seed) == {0, 1} and not runs.error.notna().any()
    table = pd.read_csv(tmp_path / "proxy_design.csv").set_index("setting")
    today = runs[runs.setting == "today"].pivot_table(index="genome", columns="seed", values="accuracy")
    assert table.loc["today", "retest_tau"] == pytest.approx(kendall_tau(today[0], today[1]), nan_ok=True)
    assert table.loc["today", "seed_sd"] == pytest.approx(seed_noise(today[[0, 1]].to_numpy())["seed_sd"])
    # The target is scored on its test split, and its own seeds' agreement is the table's first row.
    target = runs[runs.setting == "target"].pivot_table(index="genome", columns="seed", values="test_accuracy")
    assert table.index[0] == "target (test split)" and table.iloc[0].goals == "yardstick"
    assert table.iloc[0].retest_tau == pytest.approx(kendall_tau(target[0], target[1]), nan_ok=True)
    expected = kendall_tau(today.mean(axis=1), target.mean(axis=1))
    assert table.loc["today", "target_tau"] == pytest.approx(expected, nan_ok=True)
    # A second run finds every row and trains nothing; another base proxy in the same folder is refused.
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "12 runs found, 0 to go" in again.stdout and len(pd.read_csv(tmp_path / "proxy_design_runs.csv")) == 12
    other = subprocess.run([*args, "--epochs", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "another base proxy" in other.stderr
    bad = subprocess.run([*args, "--test-size", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("--test-size must be at least 1, got 0")


# ---- the summary page --------------------------------------------------------------------------------


def test_summary_sections_are_replaced_and_others_kept(tmp_path):
    update_summary(tmp_path, "first", "## First\n\nold")
    update_summary(tmp_path, "second", "## Second")
    update_summary(tmp_path, "first", "## First\n\nnew")
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "new" in text and "old" not in text and "## Second" in text
    assert text.index("<!-- first:start -->") < text.index("<!-- second:start -->")
    assert text.count("<!-- first:start -->") == 1


def test_pages_end_in_one_newline_and_tables_keep_their_cells(tmp_path):
    table = markdown_table(["figure", "value"], [("trials", 40), ("audit_tau", None), ("empty", "")])
    assert table == "| figure | value |\n|---|---|\n| trials | 40 |\n| audit_tau | None |\n| empty |  |"
    page = write_page(tmp_path / "out", "name", f"# Title\n\n{table}\n\n", summary="## Title\n\nshort")
    assert page.read_text() == f"# Title\n\n{table}\n"
    summary = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert "<!-- name:start -->\n## Title\n\nshort\n<!-- name:end -->" in summary
    write_page(tmp_path / "out", "other", "# Other")  # no summary given: SUMMARY.md keeps only the first
    assert (tmp_path / "out" / "SUMMARY.md").read_text() == summary


def test_committed_summary_names_a_command_for_every_section():
    text = (Path(REPO) / "experiments" / "results" / "SUMMARY.md").read_text()
    for name in ("bench_search_zero-cost", "bench_search_train", "bench_quality", "bench_speed", "bench_scale"):
        start, end = text.index(f"<!-- {name}:start -->"), text.index(f"<!-- {name}:end -->")
        assert "python experiments/" in text[start:end]


# Each harness with --report-only, the markdown it writes and the committed tables it redraws it from.
REDRAWN = {
    "bench_search": ("bench_search_train.md", ("bench_search_train.csv", "bench_search_train_runs.csv")),
    "bench_quality": ("bench_quality.md", ("bench_quality.csv",)),
    "bench_scale": ("bench_scale.md", ("bench_scale.csv",)),
    "bench_early_stop": ("bench_early_stop.md", ("bench_early_stop.csv",)),
    "bench_latency_search": ("bench_latency_search.md", ("bench_latency_search.csv",)),
    "fidelity": ("fidelity.md", ("fidelity.csv",)),
}


@pytest.mark.parametrize("harness", sorted(REDRAWN))
def test_committed_results_redraw_to_the_committed_figures(harness, tmp_path, monkeypatch):
    """--report-only with the committed command redraws the committed markdown from the committed CSVs."""
    markdown, tables = REDRAWN[harness]
    results = REPO / "experiments" / "results"
    for table in tables:
        shutil.copy(results / table, tmp_path / table)
    committed = (results / markdown).read_text()
    command = re.search(rf"Command: `python experiments/{harness}/run.py ?([^`]*)`", committed)
    assert command is not None
    argv = [*shlex.split(command.group(1)), "--out", str(tmp_path), "--report-only"]
    module = load_script(harness)
    if harness == "fidelity":  # its main() reads sys.argv
        monkeypatch.setattr(sys, "argv", [f"experiments/{harness}/run.py", *argv])
        module.main()
    else:
        assert module.main(argv) == 0

    def figures(text: str) -> list[str]:  # the machine line is the redrawing machine's, the command gains --out
        return [line for line in text.splitlines() if not line.startswith(("Machine:", "Command:"))]

    assert figures((tmp_path / markdown).read_text()) == figures(committed)


def test_the_readme_and_summary_quote_the_committed_latency_model_figures():
    """The latency model's figures in the README's table and in SUMMARY.md are the committed run's, from its CSV."""
    results = REPO / "experiments" / "results"
    rows = pd.read_csv(results / "bench_latency.csv")
    figures = {
        space: (
            f"{kendalltau(group.predicted_s, group.measured_s).statistic:.2f}",
            f"{kendalltau(group.flops, group.measured_s).statistic:.2f}",
            f"{(group.error.abs() <= 0.10).mean():.0%}",
        )
        for space, group in rows.groupby("space")
    }
    (tau, flops, within), (ev_tau, ev_flops, ev_within) = figures["turbovit"], figures["efficientvit"]
    noise = re.search(r"20-run median of the same network in (\d+%)", (results / "bench_latency.md").read_text())
    assert noise is not None
    summary = " ".join((results / "SUMMARY.md").read_text().split())
    assert (
        f"ranks 50 unseen genomes with τ {tau} (turbovit) and {ev_tau} (EfficientViT), against FLOPs' {flops} and "
        f"{ev_flops}, but is within ±10% for only {within} and {ev_within} of them"
    ) in summary
    assert f"agree within ±10% only {noise.group(1)} of the time" in summary
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"τ {tau} / {ev_tau} (turbovit / EfficientViT), within ±10% for {within} / {ev_within}" in readme
    assert f"the machine's own repeatability is {noise.group(1)}" in readme


def test_quality_latency_line_says_faster_or_slower_against_turbovit():
    """A searched best slower than the reference is reported as slower, never as a speed-up below 1x."""
    latency_lines = load_script("bench_quality").latency_lines

    def line(searched_s: float) -> str:
        table = pd.DataFrame(
            [
                {"dataset": "shapes", "candidate": "searched (best)", "kind": "searched", "accuracy_mean": 0.95},
                {"dataset": "shapes", "candidate": "turbovit", "kind": "baseline", "accuracy_mean": 0.96},
            ]
        ).assign(latency_s=[searched_s, 0.1])
        (only,) = latency_lines(table)
        return only

    assert "2.00x faster, at -1.00% accuracy" in line(0.05)
    assert "1.25x slower, at -1.00% accuracy" in line(0.125)
