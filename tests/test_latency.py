"""Latency: measuring it (`gas latency`), the latency model's parts, cache and speed, and duration budgets.

Real timing of real modules throughout, at sizes that keep every test to seconds: the latency model is
built from two small genomes at 64px with one timed run per part.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch
from scipy.stats import kendalltau

from gas.cli import main as gas_main
from gas.errors import GasError
from gas.latency import (
    DEFAULT_RUNS,
    BuildPlan,
    LatencyModel,
    LatencySettings,
    Measurement,
    decompose,
    fingerprint,
    measure,
    measure_many,
)
from gas.latency.fit import fit_calibration
from gas.latency.model import FORMAT, SECONDS_FORMAT
from gas.latency.parts import build
from gas.latency.reference import REFERENCE_NAME, REFERENCE_SHAPE, reference_network
from gas.search.latency_limit import repeatability
from gas.search.sampling import sample_genomes
from gas.space import get_space, load_genome
from gas.units import parse_duration
from tests.conftest import run_gas

ONE_THREAD = LatencySettings(device="cpu", threads=1)
# Two genomes at 64px, one timed run per part and per network: a build takes about a second.
TINY_PLAN = BuildPlan(genomes=2, calibrate=2, part_runs=1, runs=1, warmup=0, resolution=64)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A turbovit latency model built from nothing into a fresh cache folder, and that folder."""
    cache = tmp_path_factory.mktemp("latency_cache")
    model = LatencyModel.for_device(ONE_THREAD, TINY_PLAN, cache=cache)
    assert not model.is_built("turbovit")
    model.predict(sample_genomes("turbovit", 1, seed=5, resolution=64)[0][0])  # builds on first need
    assert model.is_built("turbovit") and model.path is not None and model.path.parent == cache
    return model, cache


# ---- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("25ms", 0.025), ("800us", 0.0008), ("0.1s", 0.1), (" 2.5 MS ", 0.0025), ("25µs", 25e-6)]
)
def test_parse_duration_accepts_seconds_milliseconds_microseconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25", "has no unit"),
        ("fast", "is not a duration"),
        ("-3ms", "must be a positive duration"),
        ("0s", "must be a positive duration"),
        ("3min", "unknown unit 'min'"),
        ("", "is not a duration"),
    ],
)
def test_parse_duration_rejects_with_one_line(text, message):
    with pytest.raises(GasError) as error:
        parse_duration(text)
    assert message in str(error.value) and "\n" not in str(error.value)


# ---- measuring -----------------------------------------------------------------------------------


def test_measurement_is_the_median_and_interquartile_range():
    measured = Measurement.of([0.010, 0.012, 0.011, 0.030, 0.013])
    assert measured.median == 0.012 and measured.runs == 5
    assert measured.spread == pytest.approx(0.013 - 0.011)  # the outlier moves neither figure
    assert Measurement.of([0.5]).spread == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"threads": 0}, "threads must be at least 1"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(GasError, match=message):
        LatencySettings(**settings)


def test_measure_times_a_genome_and_leaves_the_threads_as_they_were():
    threads = torch.get_num_threads()
    measured = measure(load_genome("turbovit").at_resolution(64), LatencySettings(threads=1), runs=3, warmup=1)
    assert measured.median > 0 and measured.spread >= 0 and measured.runs == 3
    assert torch.get_num_threads() == threads


def test_gas_latency_json_prints_a_median_and_spread(tmp_path):
    args = ["latency", "turbovit", "--device", "cpu", "--threads", "1", "--json", "--runs", "3", "--warmup", "1"]
    result = run_gas(*args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["settings"]["threads"] == 1 and report["settings"]["device"] == "cpu"
    (row,) = report["models"]
    assert row["model"] == "turbovit" and row["runs"] == 3
    assert row["median_s"] > 0 and row["spread_s"] >= 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gas_latency_on_cuda_without_cuda_is_one_line(capsys):
    assert gas_main(["latency", "turbovit", "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert "CUDA is not available" in error and len(error.strip().splitlines()) == 1


def test_gas_latency_help_states_the_default_runs(capsys):
    with pytest.raises(SystemExit):
        gas_main(["latency", "--help"])
    assert f"(default: {DEFAULT_RUNS})" in capsys.readouterr().out


# ---- the parts of a genome -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["turbovit", "efficientvit_m0", "efficientvit_m5"])
def test_parts_chain_into_the_whole_network(name):
    """The part modules, run one after another, take the image to the logits with the model's parameters."""
    genome = load_genome(name)
    genome = genome.at_resolution(64) if genome.space == "turbovit" else genome
    model = get_space(genome.space).build(genome)
    features = torch.randn(1, 3, genome.resolution, genome.resolution)
    params = 0
    with torch.inference_mode():
        for part in decompose(genome):
            module, shape = build(part)
            assert tuple(features.shape[1:]) == shape, part
            features = module.eval()(features)
            params += sum(parameter.numel() for parameter in module.parameters())
    assert features.shape == (1, genome.num_classes)
    assert params == sum(parameter.numel() for parameter in model.parameters())


# ---- the latency model ---------------------------------------------------------------------------


def test_latency_model_predicts_fast_and_positive(built):
    model, _ = built
    genomes = [genome for genome, _ in sample_genomes("turbovit", 20, seed=11, resolution=64)]
    model.predict(genomes[0])
    started = time.perf_counter()
    predictions = [model.predict(genome) for genome in genomes * 5]
    per_genome = (time.perf_counter() - started) / len(predictions)
    assert per_genome < 1e-3, f"{per_genome * 1e6:.0f} us per prediction"
    assert all(seconds > 0 for seconds in predictions)


def test_latency_model_ranks_genomes_it_was_not_fitted_on(built):
    """Four new genomes, each at least three times the work of the one before (the smallest and largest drawn at
    32px, 64px and 128px), are predicted in the order this machine measures them. One swapped pair is allowed
    for noise; a model that predicted one figure for all, or ignored size, ranks nothing."""
    model, _ = built

    def drawn(resolution: int, seed: int) -> list:
        ordered = sorted(sample_genomes("turbovit", 20, seed, resolution), key=lambda row: row[1].flops)
        return [genome for genome, _ in ordered]

    at_64 = drawn(64, 22)
    genomes = [drawn(32, 21)[0], at_64[0], at_64[-1], drawn(128, 23)[-1]]
    flops = [get_space("turbovit").cost(genome).flops for genome in genomes]
    assert all(larger >= 3 * smaller for smaller, larger in itertools.pairwise(flops)), flops
    fitted = {json.dumps(genome.to_dict()) for rows in model.observations.values() for genome, _ in rows}
    assert not fitted & {json.dumps(genome.to_dict()) for genome in genomes}
    predicted = [model.predict(genome) for genome in genomes]
    measured = measure_many({str(index): genome for index, genome in enumerate(genomes)}, ONE_THREAD, runs=5)
    tau = kendalltau(predicted, [measured[str(index)].median for index in range(len(genomes))]).statistic
    assert tau >= 0.66, (predicted, measured)


def test_latency_model_cache_round_trips(built):
    model, cache = built
    genomes = [genome for genome, _ in sample_genomes("turbovit", 3, seed=12, resolution=64)]
    model.save()
    again = LatencyModel.for_device(ONE_THREAD, TINY_PLAN, cache=cache)
    assert again.path == model.path and again.is_built("turbovit")
    assert [again.predict(genome) for genome in genomes] == pytest.approx([model.predict(g) for g in genomes])
    assert again.table == model.table and again.builds == model.builds


def test_latency_model_of_another_device_is_refused(built):
    model, _ = built
    path = model.save()
    with pytest.raises(GasError) as error:
        LatencyModel.load(path, LatencySettings(device="cpu", threads=2))
    message = str(error.value)
    assert "made for another device or settings" in message and "threads" in message and "\n" not in message
    assert fingerprint(LatencySettings(threads=2)) != fingerprint(ONE_THREAD)


def test_a_broken_cache_file_is_one_line(tmp_path):
    broken = tmp_path / "model.json"
    broken.write_text("{not json")
    with pytest.raises(GasError, match="is not a latency model"):
        LatencyModel.load(broken, ONE_THREAD)


def test_observe_recalibrates(tmp_path):
    model = LatencyModel(ONE_THREAD, TINY_PLAN)
    genome = sample_genomes("turbovit", 1, seed=13, resolution=64)[0][0]
    before = model.predict(genome)
    # A device three times slower than the build measured, as far as this genome says. Twenty figures outweigh
    # the build's two noisy calibration points, so the refitted line passes near them whatever those were.
    for _ in range(20):
        model.observe(genome, 3 * before)
    assert model.predict(genome) > 2 * before
    with pytest.raises(GasError, match="must be positive"):
        model.observe(genome, 0.0)


def test_a_calibration_line_stays_positive_below_the_networks_it_was_fitted_on():
    """A line whose offset is negative would predict zero or less for a small enough network."""
    summed, measured = [0.010, 0.020, 0.040], [0.005, 0.017, 0.041]
    line = fit_calibration(summed, measured)
    assert line.offset < 0 and line.low == 0.010
    assert line(0.002) > 0 and line(0.0001) > 0 and line(0.002) < line(0.005) < line(0.010)
    assert line(0.010 - 1e-12) == pytest.approx(line(0.010))  # no step at the smallest fitted network
    assert line(0.030) == pytest.approx(line.offset + line.scale * 0.030)  # the line itself above it


# ---- reference units -----------------------------------------------------------------------------


def test_the_reference_network_is_the_same_on_every_build_and_leaves_the_random_state_alone():
    state = torch.random.get_rng_state()
    first, second = reference_network(), reference_network()
    assert torch.equal(torch.random.get_rng_state(), state)
    weights = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(one, other) for one, other in weights)
    with torch.inference_mode():
        assert first(torch.randn(2, *REFERENCE_SHAPE)).shape == (2, 10)


def test_timings_are_kept_as_ratios_to_the_reference_and_round_trip(built, tmp_path):
    """The cache file holds reference units and the reference's latest seconds; the figures are ratios (a
    calibration genome measured again beside the reference has about its stored figure), and they load back
    to the same predictions."""
    model, _ = built
    data = json.loads(model.save(tmp_path / "model.json").read_text())
    assert data["format"] == FORMAT
    assert data["reference"] == {"name": REFERENCE_NAME, "seconds": model.reference_seconds}
    genome, stored = model.observations["turbovit"][0]
    assert data["observations"]["turbovit"][0]["units"] == stored
    again = measure(genome, ONE_THREAD, runs=5, warmup=1, beside_reference=True)
    assert again.reference > 0 and 0.25 < stored / again.ratio < 4, (stored, again)  # one cold run in the build

    loaded = LatencyModel.load(tmp_path / "model.json", ONE_THREAD, TINY_PLAN)
    assert loaded.reference_seconds == model.reference_seconds
    assert loaded.table == model.table and loaded.observations.keys() == model.observations.keys()
    genomes = [genome for genome, _ in sample_genomes("turbovit", 3, seed=14, resolution=64)]
    assert [loaded.predict(genome) for genome in genomes] == [model.predict(genome) for genome in genomes]


def test_a_prediction_scales_with_the_references_latest_measurement(tmp_path):
    """The reference measured again (really, on this machine) rescales every prediction by its new figure over
    its old one; a measurement beside the reference makes its reference figure the latest."""
    model = LatencyModel(ONE_THREAD, TINY_PLAN)
    genome = sample_genomes("turbovit", 1, seed=15, resolution=64)[0][0]
    before, units, reference = model.predict(genome), model.predict_units(genome), model.reference_seconds
    assert before == pytest.approx(units * reference)
    for _ in range(3):  # real timings of one network repeat to the last digit almost never: take the first change
        measured = model.measure_reference(runs=3)
        if measured.median != reference:
            break
    assert model.reference_seconds == measured.median != reference
    assert model.predict_units(genome) == units
    assert model.predict(genome) == pytest.approx(before * measured.median / reference)

    beside = measure(load_genome("efficientvit_m0").at_resolution(64), ONE_THREAD, runs=3, beside_reference=True)
    model.observe(load_genome("efficientvit_m0").at_resolution(64), beside)
    assert model.reference_seconds == beside.reference
    assert model.predict(genome) == pytest.approx(units * beside.reference)


def test_a_model_saved_in_seconds_loads_and_turns_into_reference_units(built, tmp_path):
    """A cache file of format 2 (figures in seconds, no reference) predicts what it predicted in seconds until
    the reference is measured, which turns its figures into reference units at that figure."""
    model, _ = built
    genome = sample_genomes("turbovit", 1, seed=16, resolution=64)[0][0]
    seconds = model.predict(genome)
    data, scale = model.to_dict(), model.reference_seconds
    data["format"] = SECONDS_FORMAT
    del data["reference"]
    data["table"] = {kind: [[key, figure * scale] for key, figure in rows] for kind, rows in data["table"].items()}
    for rows in data["observations"].values():
        for row in rows:
            row["seconds"] = row.pop("units") * scale
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))

    old = LatencyModel.load(path, ONE_THREAD, TINY_PLAN)
    assert old.reference_seconds is None and old.seconds_per_unit == 1.0
    assert old.predict(genome) == pytest.approx(seconds)
    measured = old.measure_reference(runs=3)
    assert old.predict(genome) == pytest.approx(seconds)  # the unit changed, today's prediction did not
    assert old.predict_units(genome) == pytest.approx(seconds / measured.median)
    assert json.loads(old.save().read_text())["format"] == FORMAT


def test_a_cache_file_in_another_references_units_is_rebuilt(built, tmp_path):
    model, _ = built
    data = model.to_dict()
    data["reference"]["name"] = "reference-0"
    (tmp_path / model.path.name).write_text(json.dumps(data))
    again = LatencyModel.for_device(ONE_THREAD, TINY_PLAN, cache=tmp_path)
    assert not again.table and not again.is_built("turbovit")


def test_repeatability_is_the_share_of_consecutive_measurements_that_agree():
    assert repeatability([1.0, 1.05, 1.3, 1.25]) == pytest.approx(2 / 3)  # 1.3 / 1.05 is 24% over
    assert repeatability([0.02]) is None and repeatability([]) is None
