"""gas compare end to end on a tiny real study, the test split it scores on, its bad input, and references scaled
to a study's limits.

The study is real: a tiny in-process search on digits (zero-cost scores, so it takes seconds); the comparison
trains its candidates for real, in this process, on a one-epoch schedule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import optuna
import pytest
import torch
from scipy.stats import ttest_ind, ttest_rel

from gas import record
from gas.cli import main
from gas.compare import CompareConfig, schedule
from gas.compare_report import format_comparison
from gas.errors import GasError
from gas.evaluate.datasets import load_dataset, load_test_split
from gas.evaluate.proxy import ProxyConfig, build_proxy_model, target_schedule
from gas.evaluate.train import TrainConfig, evaluate_accuracy, train
from gas.latency import LatencySettings, measure
from gas.scaling import FlopsBudget, MeasuredLatency, limits_text, scale_depth, scale_width, study_limits
from gas.search import SearchConfig, search_in_process
from gas.search.latency_limit import LatencyTarget
from gas.space import get_space, load_genome
from gas.study import front
from search_spaces.turbovit.scaling import WIDTH_STEP
from tests.studies import add_complete, new_study, sampled_genomes, sqlite_url

BUDGET = 1_000_000_000
# The tiny study's proxy: digits at 32px on 64 training images, scored on 32 validation images (and 100 test
# images by gas compare).
TINY_PROXY = ProxyConfig(
    dataset="digits", resolution=32, evaluator="zero-cost", train_size=64, val_size=32, test_size=100
)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A study of three trained trials on digits, written as the search writes one; its cheapest trial is its
    most accurate, so the front is that one trial: best and knee at once."""
    storage = sqlite_url(tmp_path_factory.mktemp("compare") / "gas.db")
    study = new_study(storage, "tiny", BUDGET)
    proxy = TINY_PROXY.with_overrides(epochs=1, lr=1e-3, device="cpu")
    study.set_user_attr(record.StudyKey.SETTINGS, {"space": "turbovit", "budget": BUDGET, "proxy": proxy.settings()})
    genomes = sorted(sampled_genomes(3, seed=1, budget=BUDGET), key=lambda data: get_space("turbovit").cost(
        load_genome(data)).flops)  # fmt: skip
    for genome, accuracy in zip(genomes, (0.6, 0.5, 0.4), strict=True):
        add_complete(study, genome, accuracy, BUDGET)
    return study, storage


def test_compare_runs_end_to_end_and_writes_its_json_and_plot(tiny_study, tmp_path, capfd, one_torch_thread):
    study, storage = tiny_study
    plot = tmp_path / "compare.png"
    args = ["compare", "--study", "tiny", "--storage", storage, "--in-process", "--picks", "best,knee"]
    args += ["--against", "turbovit,hiera_tiny@width", "--seeds", "2", "--epochs", "1", "--resolution", "32"]
    args += ["--runs", "2", "--json", "--plot", str(plot)]
    capfd.readouterr()
    assert main(args) == 0
    out, err = capfd.readouterr()
    result = json.loads(out)  # --json: stdout is one JSON object; progress went to stderr

    rows = {row["name"]: row for row in result["candidates"]}
    (picked,) = front(study)
    assert set(rows) == {f"best/knee (trial {picked.number})", "turbovit", "hiera_tiny@width"}  # one trial, one pick
    picks = [row for row in rows.values() if row["kind"] == "pick"]
    assert rows["turbovit"]["baseline"] and rows["hiera_tiny@width"]["kind"] == "width-scaled"
    assert rows["hiera_tiny@width"]["flops"] <= BUDGET < rows["turbovit"]["flops"]
    assert result["seeds"] == [0, 1]
    assert (result["schedule"]["epochs"], result["schedule"]["resolution"]) == (1, 32)
    assert (result["schedule"]["train_size"], result["schedule"]["lr"]) == (64, 1e-3)  # the study's proxy's
    # Progress: a line per finished run.
    assert sum("seed" in line and "test accuracy" in line for line in err.splitlines()) == 2 * len(rows)

    trials = {trial.number: trial for trial in study.get_trials()}
    for name, row in rows.items():
        accuracies = [run["test_accuracy"] for run in row["runs"]]
        assert [run["seed"] for run in row["runs"]] == [0, 1] and not row["failed"], name
        assert row["test_accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
        assert row["test_accuracy_sd"] == pytest.approx(statistics.stdev(accuracies))
        assert row["latency_s"] > 0 and row["params"] > 0
        for baseline, versus in row["against"].items():
            theirs = [run["test_accuracy"] for run in rows[baseline]["runs"]]
            for key, expected in (
                ("welch_p", ttest_ind(accuracies, theirs, equal_var=False).pvalue),
                ("paired_p", ttest_rel(accuracies, theirs).pvalue),
            ):
                assert versus[key] == (None if math.isnan(expected) else pytest.approx(expected)), (name, baseline)
        assert set(row["against"]) == {"turbovit", "hiera_tiny@width"} - {name}
    for row in picks:
        number = int(row["name"].rsplit("trial ", 1)[1].rstrip(")"))
        assert row["search_accuracy"] == trials[number].values[0]
        assert load_genome(row["genome"]) == record.trial_genome(trials[number])

    test = load_test_split("digits", 32, None, 64, 100)
    assert result["test_images"] == len(test.labels) == 100  # the study's test split, not its 32 validation images

    # The pick at seed 1, trained here by hand on the same schedule: compare's figures are its accuracy on
    # the test split, and on the validation split, exactly.
    pick = picks[0]
    splits = load_dataset("digits", 32, None, 64, 32)
    model = build_proxy_model(load_genome(pick["genome"]), 32, splits.num_classes, seed=1)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train_config = TrainConfig(**{**{k: v for k, v in result["schedule"].items() if k in fields}, "seed": 1})
    trained = train(model, splits, dataclasses.replace(train_config, device="cpu"))
    accuracy, _ = evaluate_accuracy(model, test.images, test.labels, torch.device("cpu"))
    assert pick["runs"][1]["test_accuracy"] == accuracy
    assert pick["runs"][1]["validation_accuracy"] == trained.accuracy
    assert any(run["test_accuracy"] != run["validation_accuracy"] for run in pick["runs"])

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_comparison(result)
    for name in rows:
        assert any(line.startswith(f"{name} ") for line in table), name
    assert any("p vs turbovit (Welch/paired)" in line for line in table)


def test_target_schedule_is_four_times_the_epochs_at_64px():
    target = target_schedule(ProxyConfig())
    assert (target.resolution, target.train.epochs, target.evaluator) == (64, 16, "train")
    assert target_schedule(ProxyConfig(resolution=96)).resolution == 96  # never lower than the proxy's own
    zero_cost = target_schedule(ProxyConfig(evaluator="zero-cost").with_overrides(epochs=2, seed=5))
    assert (zero_cost.evaluator, zero_cost.train.epochs, zero_cost.train.seed) == ("train", 8, 5)


def test_compare_trains_the_studys_target_schedule_by_default(tiny_study):
    study, _ = tiny_study
    target = schedule(study, CompareConfig())
    # A zero-cost study of 1 epoch: trained, 4 epochs, at 64px, on the study's data and hyper-parameters.
    assert (target.evaluator, target.train.epochs, target.resolution) == ("train", 4, 64)
    assert (target.dataset, target.train_size, target.val_size, target.train.lr) == ("digits", 64, 32, 1e-3)
    assert not target.score_test  # each run asks for the test split itself


def test_a_search_never_scores_the_test_split(tmp_path):
    with pytest.raises(GasError, match="never scores the test split"):
        ProxyConfig(score_test=True).settings()
    config = SearchConfig(
        budget=BUDGET, study="peek", storage=sqlite_url(tmp_path / "gas.db"), trials=1, progress=False,
        proxy=TINY_PROXY.with_overrides(score_test=True),
    )  # fmt: skip
    with pytest.raises(GasError, match="never scores the test split"):
        search_in_process(config)
    assert "score_test" not in ProxyConfig().settings()


def test_compare_refuses_bad_input_in_one_line(tiny_study, tmp_path, capsys):
    study, storage = tiny_study
    elsewhere = sqlite_url(tmp_path / "elsewhere.db")
    other = optuna.create_study(study_name="elsewhere", storage=elsewhere, directions=list(record.DIRECTIONS))
    for key, value in study.user_attrs.items():
        other.set_user_attr(key, value)
    target = LatencyTarget(LatencySettings(device="cpu", threads=1), 0.025).to_dict()
    other.set_user_attr(record.StudyKey.LATENCY, {**target, "fingerprint": {**target["fingerprint"], "cpu": "other"}})
    # A digits study from before the test split: its trials learned on images the test split now holds.
    before = optuna.create_study(study_name="before", storage=elsewhere, directions=list(record.DIRECTIONS))
    settings = study.user_attrs[record.StudyKey.SETTINGS]
    before.set_user_attr(record.StudyKey.SETTINGS, {**settings, "proxy": {**settings["proxy"], "splits": 1}})
    tiny = ["--study", "tiny", "--storage", storage]
    cases = [
        (["--study", "nope", "--storage", storage], "no study 'nope'"),
        ([*tiny, "--picks", "worst"], "--picks 'worst' is not a pick"),
        ([*tiny, "--picks", "max-acc-under=1K"], "no front trial"),
        ([*tiny, "--against", "efficientvit_m0"], "efficientvit_m0 is a genome of the efficientvit space"),
        ([*tiny, "--against", "hiera_tiny@height"], "scale by width or depth"),
        ([*tiny, "--against", "resnet50"], "'resnet50' is neither a genome file nor a reference"),
        ([*tiny, "--against", str(tmp_path / "missing.json")], "cannot read genome"),
        ([*tiny, "--picks", "", "--against", ""], "nothing to compare"),
        ([*tiny, "--seeds", "0"], "--seeds must be at least 1"),
        ([*tiny, "--resolution", "48"], "48px does not fit"),
        ([*tiny, "--plot", str(tmp_path / "compare.gif")], "write .png, .svg, .pdf"),
        (["--study", "elsewhere", "--storage", elsewhere], "measured its latency on another device"),
        (["--study", "before", "--storage", elsewhere], "searched on an earlier split of digits"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["compare", *args, "--in-process"]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "compare.gif").exists()


# ---- references scaled to a study's limits ------------------------------------------------------------


def test_hiera_scaled_to_the_budget_just_fits():
    budget = 2_500_000_000
    space = get_space("turbovit")
    hiera = load_genome("hiera_tiny")
    width = scale_width(hiera, [FlopsBudget(budget)])
    assert space.cost(width).flops <= budget < space.cost(hiera).flops
    assert [block.dim // width.stem.dim for block in width.blocks] == [block.dim // 96 for block in hiera.blocks]
    assert space.cost(widened(hiera, width.stem.dim + WIDTH_STEP)).flops > budget  # the next width it tried

    depth = scale_depth(hiera, [FlopsBudget(budget)])
    assert space.cost(depth).flops <= budget and len(depth.blocks) < len(hiera.blocks)
    assert scale_depth(depth, [FlopsBudget(budget)]) == depth  # one more block would not fit
    assert {block.dim for block in depth.blocks} == {block.dim for block in hiera.blocks}  # widths untouched
    space.check(width)
    space.check(depth)
    with pytest.raises(GasError, match="no copy of this turbovit genome scaled by width fits 1M FLOPs"):
        scale_width(hiera, [FlopsBudget(1_000_000)])
    with pytest.raises(GasError, match="efficientvit space cannot scale"):
        scale_width(load_genome("efficientvit_m0"), [FlopsBudget(budget)])


def widened(genome, stem_dim: int):
    """`genome` with every width scaled to a stem of `stem_dim`, as the width scaler does."""
    factor = stem_dim / genome.stem.dim
    return dataclasses.replace(
        genome,
        stem=dataclasses.replace(genome.stem, dim=stem_dim),
        blocks=tuple(dataclasses.replace(block, dim=round(block.dim * factor)) for block in genome.blocks),
    )


def test_hiera_scaled_to_a_measured_latency_just_fits():
    """Under a latency limit the scaler measures: the widest Hiera it keeps was measured at or under the
    limit, and the next wider one it tried over it (each genome is measured once, so these are its figures)."""
    settings = LatencySettings(device="cpu", threads=1)
    hiera = dataclasses.replace(load_genome("hiera_tiny"), resolution=64)  # milliseconds a run
    # The limit sits at the geometric middle of the narrowest and the full width (about 6x apart here), so
    # a busy neighbour would have to slow one measurement 2.5x against another to move the answer's ends.
    narrowest, full = (measure(widened(hiera, dim), settings, runs=5).median for dim in (8, 96))
    limit = MeasuredLatency((narrowest * full) ** 0.5, settings, runs=5)
    width = scale_width(hiera, [limit])
    assert width.stem.dim < hiera.stem.dim
    assert limit.latency(width) <= limit.seconds < limit.latency(widened(hiera, width.stem.dim + WIDTH_STEP))
    assert "ms (cpu fp32, 1 thread, batch 1)" in limits_text([limit])


def test_study_limits_read_a_latency_limit_only_on_its_own_device(tmp_path):
    storage = sqlite_url(tmp_path / "gas.db")
    target = LatencyTarget(LatencySettings(device="cpu", threads=1), 0.025)
    study = optuna.create_study(study_name="fast", storage=storage)
    study.set_user_attr(record.StudyKey.LATENCY, target.to_dict())
    (limit,) = study_limits(study, runs=5)
    assert limit.seconds == 0.025 and limit.settings == target.settings
    study.set_user_attr(record.StudyKey.MAX_PARAMS, 5_000_000)
    assert [str(limit) for limit in study_limits(study, runs=5)][1] == "5M params"

    elsewhere = target.to_dict()
    elsewhere["fingerprint"] = {**elsewhere["fingerprint"], "cpu": "another CPU"}
    study.set_user_attr(record.StudyKey.LATENCY, elsewhere)
    with pytest.raises(GasError, match="measured its latency on another device or settings"):
        study_limits(study, runs=5)
    bare = optuna.create_study(study_name="bare", storage=storage)
    with pytest.raises(GasError, match="records no FLOPs budget, params cap or latency limit"):
        study_limits(bare, runs=5)
