"""Hardware-aware search: a latency limit and a latency objective, predicted before training and measured after."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import warnings

import optuna
import pytest
import torch
from optuna.trial import TrialState

from gas import record
from gas.cli import main
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.front import parse_pick, pick_trial
from gas.front_report import front_figure, front_plot
from gas.latency import BuildPlan, LatencyModel, LatencySettings, measure_many
from gas.latency.model import default_path
from gas.search import Engine, SearchConfig, search_in_process
from gas.search.latency_limit import LatencyJudge, LatencyTarget, prediction_accuracy
from gas.search.sampling import sample_genomes
from gas.space import get_space
from gas.study import front, latency_pairs, reference_latencies, trained_trials

BUDGET = 1_000_000_000  # small genomes: each is timed in tens of milliseconds on one thread
# A coarse latency model: enough to rank small genomes, built in seconds.
PLAN = BuildPlan(genomes=4, calibrate=3, part_runs=2, runs=3, warmup=1)
SETTINGS = LatencySettings(device="cpu", threads=1)
PROXY = ProxyConfig(dataset="digits", evaluator="zero-cost", train_size=64, val_size=32).with_overrides(device="cpu")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """One latency model for the module, built in a folder of its own (never the user's cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def limit() -> float:
    """A limit about half of the small genomes are predicted to meet: the search must reject and keep some."""
    judge = LatencyJudge(LatencyTarget(SETTINGS, None, PLAN), BUDGET)
    predictions = [judge.predict(genome) for genome, _ in sample_genomes("turbovit", 8, 5, 224, BUDGET)]
    judge.save()
    return statistics.median(predictions)


def test_a_latency_limited_search_keeps_only_what_was_measured_under_the_limit(tmp_path, limit):
    config = SearchConfig(
        budget=BUDGET,
        trials=3,
        study="fast",
        storage=f"sqlite:///{tmp_path}/gas.db",
        proxy=PROXY,
        progress=False,
        latency=LatencyTarget(SETTINGS, limit, PLAN, runs=5),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = search_in_process(config).study
    assert not [str(w.message) for w in caught if "constraint" in str(w.message)], "each constraint is set once"
    trials = study.get_trials()
    rejected = [t for t in trials if t.state == TrialState.PRUNED and "predicted latency" in str(t.user_attrs)]
    assert rejected, "some proposals are predicted over the limit and never train"
    for trial in rejected:
        assert trial.user_attrs[record.TrialKey.PREDICTED_LATENCY] > limit and trial.constraints["latency"] > 0
        assert record.TrialKey.MEASURED_LATENCY not in trial.user_attrs
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        assert trial.user_attrs[record.TrialKey.PREDICTED_LATENCY] <= limit
        assert trial.user_attrs[record.TrialKey.MEASURED_LATENCY] <= limit
    for trial in trained_trials(study):
        # Samplers learn from the measurement, not the prediction that let the trial train.
        measured = trial.user_attrs[record.TrialKey.MEASURED_LATENCY]
        assert trial.constraints["latency"] == pytest.approx((measured - limit) / limit)
        # The time measuring took is recorded as the search's work: at least the 3 of 5 runs at or over the median.
        assert trial.user_attrs[record.TrialKey.MEASURE_TIME] >= 3 * measured
        if trial.state == TrialState.PRUNED:  # predicted under, measured over: infeasible, off the front
            assert trial.user_attrs[record.TrialKey.MEASURED_LATENCY] > limit
            assert trial.user_attrs[record.TrialKey.INFEASIBLE_REASON].startswith("measured latency")
            assert trial.number not in {t.number for t in study.best_trials}
    recorded = record.latency_record(study)
    assert recorded.limit == limit and recorded.fingerprint["threads"] == 1
    written = study.user_attrs[record.StudyKey.LATENCY]["accuracy"]
    references = reference_latencies(study)
    assert written == prediction_accuracy(latency_pairs(study), references)
    assert written["n"] == len(trained_trials(study)) and recorded.accuracy == record.LatencyAccuracy(**written)
    # Every measurement took the reference network's turns with it; the machine's repeatability beside the
    # model's accuracy is how often consecutive ones of those agree.
    trained = sorted(trained_trials(study), key=lambda trial: trial.datetime_complete)
    assert references == [trial.user_attrs[record.TrialKey.REFERENCE_LATENCY] for trial in trained]
    assert all(seconds > 0 for seconds in references) and written["repeat_pairs"] == len(trained) - 1
    agreeing = [abs(later / earlier - 1) <= 0.10 for earlier, later in itertools.pairwise(references)]
    assert written["repeatability"] == (sum(agreeing) / len(agreeing) if agreeing else None)
    # The same figures again from each trained trial's own prediction and measurement.
    pairs = [(r.predicted_latency, r.measured_latency) for r in map(record.trial_record, trained_trials(study))]
    errors = [abs(predicted - measured) / measured for predicted, measured in pairs]
    assert recorded.accuracy.within_10 == sum(error <= 0.10 for error in errors) / len(errors)
    assert recorded.accuracy.median_abs_error == pytest.approx(statistics.median(errors))


def test_a_trial_measured_over_the_limit_is_infeasible_and_off_the_front(tmp_path, monkeypatch, limit):
    """A real model, calibrated as if on a device a hundred times faster than this one, predicts two genomes far
    under a limit that lies between this machine's measurements of them. Both train; the larger one, measured
    over the limit, is recorded infeasible with its measurement and stays off the front, where the other is."""
    space = get_space("turbovit")
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    drawn = []
    for _ in range(100):
        trial = draws.ask()
        genome = space.sample(trial)
        drawn.append((space.cost(genome).flops, trial.params, genome))
        draws.tell(trial, 0.0)
    drawn.sort(key=lambda row: row[0])
    (_, small_params, small), (_, large_params, large) = drawn[0], drawn[-1]
    measured = measure_many({"small": small, "large": large}, SETTINGS, runs=5)  # in turns: under the same load
    fast, slow = measured["small"].median, measured["large"].median
    assert slow > 4 * fast, "the two genomes must be far apart for a limit between them to hold against noise"
    between = math.sqrt(fast * slow)

    model = LatencyModel.for_device(SETTINGS, PLAN)  # the module's, built on this machine for `limit`
    monkeypatch.setenv("GAS_CACHE_DIR", str(tmp_path / "cache"))
    for genome, seconds in ((small, fast), (large, slow)):
        for _ in range(20):  # outweigh the build's own calibration points and every measurement the search adds
            model.observe(genome, seconds / 100)
    model.save(default_path(SETTINGS))
    assert model.predict(large) < between / 4

    storage = f"sqlite:///{tmp_path}/gas.db"
    queued = optuna.create_study(study_name="over", storage=storage, directions=list(record.DIRECTIONS))
    queued.enqueue_trial(small_params)
    queued.enqueue_trial(large_params)
    config = SearchConfig(
        budget=None,
        trials=2,
        study="over",
        storage=storage,
        proxy=PROXY.with_overrides(zero_cost_batch=8),  # the larger genome scores in a fraction of the time
        progress=False,
        latency=LatencyTarget(SETTINGS, between, PLAN, runs=5),
        objective="latency",
    )
    study = search_in_process(config).study
    kept, over = sorted(trained_trials(study), key=lambda trial: trial.number)
    assert kept.params == small_params and over.params == large_params
    kept_record, over_record = record.trial_record(kept), record.trial_record(over)
    assert kept.state == TrialState.COMPLETE and kept_record.measured_latency <= between
    measured = over_record.measured_latency
    assert over.state == TrialState.PRUNED and over_record.feasible is False and over_record.is_infeasible
    assert over_record.predicted_latency < between < measured
    assert over_record.infeasible_reason.startswith("measured latency")
    assert over.constraints["latency"] == pytest.approx((measured - between) / between)
    assert over_record.accuracy == over_record.accuracy_history[-1]
    assert [trial.number for trial in front(study)] == [kept.number]



def test_latency_as_the_objective_and_the_fastest_over_pick(tmp_path, capsys, limit):
    storage = f"sqlite:///{tmp_path}/gas.db"
    config = SearchConfig(
        budget=BUDGET,
        trials=2,
        study="speed",
        storage=storage,
        proxy=PROXY,
        progress=False,
        latency=LatencyTarget(SETTINGS, None, PLAN, runs=5),
        objective="latency",
    )
    study = search_in_process(config).study
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.values[1] == trial.user_attrs[record.TrialKey.MEASURED_LATENCY]
    assert record.study_record(study).objective == "latency" and study.metric_names == ["accuracy", "latency"]
    front_trials = front(study)
    floor = math.floor(min(t.values[0] for t in front_trials) * 1e6) / 1e6  # rounded down: every front trial is over it
    fastest = pick_trial(study, *parse_pick(["fastest-over", f"{floor:.6f}"]))
    assert fastest.user_attrs[record.TrialKey.MEASURED_LATENCY] == min(
        t.user_attrs[record.TrialKey.MEASURED_LATENCY] for t in front_trials
    )
    axes = front_figure(front_plot(study)).axes[0]
    drawn = next(points for points in axes.collections if points.get_label().startswith("Pareto front"))
    assert axes.get_xlabel().startswith("measured latency (ms")
    assert sorted(drawn.get_offsets()[:, 0]) == pytest.approx(
        sorted(1e3 * t.user_attrs[record.TrialKey.MEASURED_LATENCY] for t in front_trials)
    )
    assert main(["pareto", "--study", "speed", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert f"latency measured in PyTorch {torch.__version__} (eager) on cpu fp32, 1 thread, batch 1" in shown
    assert "Kendall τ" in shown and "the machine agrees with itself in" in shown
    out = tmp_path / "fast_pick.py"
    assert (
        main(["export", "--study", "speed", "--storage", storage, "--pick", "fastest-over", "0", "--out", str(out)])
        == 0
    )
    assert "Measured latency:" in out.read_text()


@pytest.mark.parametrize("budget", [BUDGET, None], ids=["with-budget", "limit-alone"])
def test_a_limit_no_genome_can_meet_is_refused_before_anything_trains(tmp_path, budget):
    """Without a FLOPs budget the probes include networks smaller than any the model was calibrated on."""
    config = SearchConfig(
        budget=budget,
        trials=2,
        study="never",
        storage=f"sqlite:///{tmp_path}/gas.db",
        proxy=PROXY,
        progress=False,
        latency=LatencyTarget(SETTINGS, 1e-6, PLAN),
    )
    with pytest.raises(GasError, match=r"no genome of the turbovit space is predicted to run in 1us"):
        search_in_process(config)
    assert not (tmp_path / "gas.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-latency", "25"], "--max-latency '25' has no unit"),
        (["--max-latency", "fast"], "--max-latency 'fast' is not a duration"),
        (["--max-latency=-3ms"], "--max-latency '-3ms' must be a positive duration"),
        # Where the search runs without CUDA, a CUDA latency target cannot be measured.
        *([] if torch.cuda.is_available() else [(["--budget", "2.5G", "--latency-device", "cuda"], "it has no CUDA")]),
        (["--objective", "latency", "--budget", "2.5G", "--latency-batch", "0"], "batch must be at least 1"),
        (
            ["--max-latency", "20ms", "--latency-runtime", "onnxruntime", "--latency-device", "cuda"],
            "--latency-runtime onnxruntime runs on the CPU here, not cuda; drop --latency-device",
        ),
        ([], "give a FLOPs budget (--budget 2.5G) or a latency limit (--max-latency 25ms)"),
    ],
)
def test_latency_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["search", *args, "--no-progress"]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_latency_limit_makes_latency_the_fronts_axis_unless_told_otherwise():
    from gas.cli import build_parser, search_config

    def objective(*args: str) -> str:
        return search_config(build_parser().parse_args(["search", *args])).objective

    assert objective("--max-latency", "40ms") == "latency"
    assert objective("--max-latency", "40ms", "--budget", "2.5G") == "latency"
    assert objective("--max-latency", "40ms", "--objective", "flops") == "flops"
    assert objective("--budget", "2.5G") == "flops"
    assert objective("--budget", "2.5G", "--latency-device", "cpu") == "flops"  # measured, not bounded


# ---- latency in ONNX Runtime ---------------------------------------------------------------------------

ONNX_PLAN = BuildPlan(genomes=2, calibrate=2, part_runs=1, runs=2, warmup=1)  # each part is exported: keep it few


def test_a_search_limited_in_onnx_runtime_measures_there_and_refuses_a_resume_in_torch(tmp_path, capsys):
    """`--latency-runtime onnxruntime`: the latency model is built in ONNX Runtime (its own cache file, under its
    fingerprint), trained trials are measured there, the study records it, the export's docstring says it, and
    the study refuses to go on measuring in torch."""
    import dataclasses

    import onnxruntime

    from gas.cli import build_parser, search_config

    storage = f"sqlite:///{tmp_path}/gas.db"
    args = ["search", "--max-latency", "1s", "--latency-runtime", "onnxruntime", "--study", "ort"]
    config = search_config(build_parser().parse_args([*args, "--storage", storage, "--budget", "1G"]))
    assert config.latency.settings.runtime == "onnxruntime"
    onnx_target = dataclasses.replace(config.latency, plan=ONNX_PLAN, runs=3)
    judge = LatencyJudge(dataclasses.replace(onnx_target, limit=None), BUDGET)
    # Twice the median prediction: some proposals are rejected, and what trains is measured well under it.
    limit = 2 * statistics.median(judge.predict(genome) for genome, _ in sample_genomes("turbovit", 8, 5, 224, BUDGET))
    judge.save()
    cached = json.loads(default_path(onnx_target.settings).read_text())
    assert cached["fingerprint"]["runtime"] == "onnxruntime" and "turbovit" in cached["builds"]

    config = dataclasses.replace(
        config, trials=1, proxy=PROXY, progress=False, latency=dataclasses.replace(onnx_target, limit=limit)
    )
    study = search_in_process(config).study
    trained = trained_trials(study)
    assert all(record.TrialKey.MEASURED_LATENCY in trial.user_attrs for trial in trained)
    complete = [trial for trial in trained if trial.state == TrialState.COMPLETE]
    assert complete, [trial.user_attrs.get(record.TrialKey.INFEASIBLE_REASON) for trial in trained]
    recorded = record.latency_record(study)
    assert recorded.runtime == "onnxruntime" and recorded.fingerprint["runtime_version"] == onnxruntime.__version__

    out = tmp_path / "pick.py"
    export = ["export", "--study", "ort", "--storage", storage, "--trial", str(complete[0].number)]
    assert main([*export, "--out", str(out)]) == 0
    assert f"in ONNX Runtime {onnxruntime.__version__} on cpu fp32, 1 thread" in out.read_text()

    in_torch = dataclasses.replace(config, latency=dataclasses.replace(config.latency, settings=SETTINGS, plan=PLAN))
    with pytest.raises(GasError) as refused:
        Engine(in_torch)  # what opens the study for every driver, after the checks that need no study
    message = str(refused.value)
    assert message.startswith("study 'ort' was run with other settings: ") and "\n" not in message
    assert 'latency.settings.runtime "onnxruntime" (now "torch")' in message
    assert len(trained_trials(study)) == len(trained)
