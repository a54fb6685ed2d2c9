"""Latency model accuracy: predicted against measured latency of random genomes the model never saw, per space.

    python experiments/bench_latency/run.py                              # 50 genomes per space, CPU, 1 thread
    python experiments/bench_latency/run.py --device cuda --dtype bf16   # on a GPU
    python experiments/bench_latency/run.py --report-only                # redraw the tables from the CSVs

For each space (turbovit within 2.5G FLOPs, efficientvit within 1G unless --budget says otherwise):
    build      the latency model from nothing, in memory (never the user's cache), with gas's default build
               plan: the parts of its random build genomes timed, a few of them measured end to end
    test       --genomes other random genomes of the space (another seed; any genome equal to a build genome
               is skipped), each measured end to end with `gas.latency.measure_many` (in turns, in groups)
               and predicted by the model
    report     the share of predictions within ±10% of the measured median, the median |error|, Kendall's τ
               of predicted against measured latency, and beside it τ of FLOPs alone and of params alone
               against the same measurements; microseconds per prediction; seconds to build the model
Repeatability: each --repeat-models network measured --repeats times with N timed runs, for each N in
--repeat-runs; how far the medians of those repeats spread says how many runs a measurement needs.

Timing figures depend on the machine being otherwise idle; the load average before and after is recorded.
Writes bench_latency.csv (one row per test genome), bench_latency_repeat.csv (one row per repeat),
bench_latency.md and its section of SUMMARY.md into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Sequence

import pandas as pd

from experiments.common.cli import fail, harness_parser
from experiments.common.machine import load_line
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas.errors import GasError
from gas.genome import Genome
from gas.latency import (
    DEFAULT_RUNS,
    BuildPlan,
    LatencyModel,
    LatencySettings,
    Measurement,
    build_genomes,
    measure_many,
)
from gas.latency.parts import family
from gas.search.sampling import sample_genomes
from gas.space import get_space
from gas.stats import kendall_tau
from gas.units import format_count, parse_count

SCRIPT = "experiments/bench_latency/run.py"
BUDGETS = {"turbovit": "2.5G", "efficientvit": "1G"}  # what a search of each space typically allows
TOLERANCE = 0.10  # a prediction "holds" within ±10% of the measured median (nn-Meter's and LitePred's yardstick)
AGREE = 0.03  # repeated medians "agree" when their range is within 3% of their mean


def parse_budgets(pairs: Sequence[str]) -> dict[str, int]:
    """--budget SPACE=COUNT pairs over the defaults."""
    budgets = {space: parse_count(count) for space, count in BUDGETS.items()}
    for pair in pairs:
        space, sep, count = pair.partition("=")
        if not sep:
            raise GasError(f"--budget {pair!r}: write it SPACE=COUNT, e.g. turbovit=2.5G")
        budgets[space] = parse_count(count)
    return budgets


def unseen_genomes(space: str, count: int, seed: int, budget: int, excluded: set[str]) -> list[Genome]:
    """`count` random genomes of the space within budget, none of them in `excluded` (genome JSON)."""
    drawn = sample_genomes(space, count + len(excluded), seed, 224, budget)
    kept = [genome for genome, _ in drawn if genome.to_json() not in excluded]
    return kept[:count]


def run_space(
    space: str, budget: int, settings: LatencySettings, plan: BuildPlan, args: argparse.Namespace
) -> list[dict]:
    """Build, measure and predict one space; one row per test genome."""
    model = LatencyModel(settings, plan)  # no path: nothing is read from or written to the cache
    started = time.perf_counter()
    record = model.build(space)
    build_seconds = time.perf_counter() - started
    built = {genome.to_json() for genome in build_genomes(space, plan)}
    genomes = unseen_genomes(space, args.genomes, args.seed, budget, built)
    print(
        f"{space}: model built in {build_seconds:.1f}s ({record['parts_timed']} parts timed); measuring "
        f"{len(genomes)} test genomes",
        flush=True,
    )

    model.predict(genomes[0])  # fits the kinds' weights and the calibration once
    started = time.perf_counter()
    predictions = [model.predict(genome) for genome in genomes]
    predict_us = 1e6 * (time.perf_counter() - started) / len(genomes)
    calibration = model.calibration(space)

    rows = []
    for first in range(0, len(genomes), args.group):
        group = genomes[first : first + args.group]
        load = os.getloadavg()[0]
        measured = measure_many({str(i): genome for i, genome in enumerate(group)}, settings, args.runs)
        for offset, genome in enumerate(group):
            index = first + offset
            cost = get_space(genome.space).cost(genome)
            measurement = measured[str(offset)]
            rows.append(
                {
                    "space": space,
                    "genome": index,
                    "flops": cost.flops,
                    "params": cost.params,
                    "measured_s": measurement.median,
                    "spread_s": measurement.spread,
                    "runs": measurement.runs,
                    "predicted_s": predictions[index],
                    "summed_s": sum(seconds for _, seconds in model.breakdown(genome)),
                    "error": predictions[index] / measurement.median - 1,
                    "load_1min": load,
                    "predict_us": predict_us,
                    "build_s": build_seconds,
                    "build_parts": record["parts_timed"],
                    "calibration_offset_s": calibration.offset,
                    "calibration_scale": calibration.scale,
                }
            )
        print(f"  {len(rows)}/{len(genomes)} measured", flush=True)

    # The machine's speed drifts between the build and the test; a search absorbs that by recalibrating on
    # what it measures. Measure the calibration networks again now and recalibrate on those figures: the
    # accuracy the model has when its calibration is as fresh as a search keeps it.
    space_family = family(genomes[0])
    calibrated = [genome for genome, _ in model.observations[space_family]]
    again: list[Measurement] = []
    for first in range(0, len(calibrated), args.group):
        group = calibrated[first : first + args.group]
        measured = measure_many(
            {str(i): genome for i, genome in enumerate(group)}, settings, plan.runs, beside_reference=True
        )
        again += [measured[str(i)] for i in range(len(group))]
    # The model keeps reference units; at the build's reference figure they are the build's seconds.
    before = [units * record["reference_s"] for _, units in model.observations[space_family]]
    fresh = LatencyModel(settings, plan)  # the same parts, a calibration measured now
    fresh.table, fresh.builds, fresh.reference_seconds = model.table, model.builds, model.reference_seconds
    for genome, measurement in zip(calibrated, again, strict=True):
        fresh.observe(genome, measurement)
    drift = statistics.median(now.median / then for now, then in zip(again, before, strict=True))
    for row, genome in zip(rows, genomes, strict=True):
        row["recalibrated_s"] = fresh.predict(genome)
        row["recalibrated_error"] = row["recalibrated_s"] / row["measured_s"] - 1
        row["drift"] = drift
    print(f"  calibration networks measured again: {drift:.2f}x their build-time figures", flush=True)
    return rows


def repeatability(
    settings: LatencySettings, models: Sequence[str], run_counts: Sequence[int], repeats: int
) -> list[dict]:
    """Each model measured `repeats` times with each number of timed runs; one row per measurement."""
    if not models:
        return []  # `--repeat-models` with none: accuracy only
    rows = []
    for runs in run_counts:
        for repeat in range(repeats):
            load = os.getloadavg()[0]
            measured = measure_many(list(models), settings, runs)
            for model, measurement in measured.items():
                rows.append(
                    {
                        "model": model,
                        "runs": runs,
                        "repeat": repeat,
                        "median_s": measurement.median,
                        "spread_s": measurement.spread,
                        "load_1min": load,
                    }
                )
        print(f"repeatability: {runs} runs x {repeats} repeats done", flush=True)
    return rows


# ---- the report ----------------------------------------------------------------------------------------


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per space: the accuracy figures of its test genomes."""
    table = []
    for space, group in rows.groupby("space", sort=False):
        measured = group["measured_s"]
        table.append(
            {
                "space": space,
                "genomes": len(group),
                "measured_ms": f"{1000 * measured.min():.1f}–{1000 * measured.max():.1f}",
                "within_10pct": (group["error"].abs() <= TOLERANCE).mean(),
                "median_abs_error": group["error"].abs().median(),
                "tau_predicted": kendall_tau(group["predicted_s"], measured),
                "tau_summed": kendall_tau(group["summed_s"], measured),
                "tau_flops": kendall_tau(group["flops"], measured),
                "tau_params": kendall_tau(group["params"], measured),
                "predict_us": group["predict_us"].iloc[0],
                "build_s": group["build_s"].iloc[0],
                "build_parts": group["build_parts"].iloc[0],
                "median_iqr_pct": 100 * (group["spread_s"] / measured).median(),
                **(
                    {
                        "drift": group["drift"].iloc[0],
                        "recalibrated_within_10pct": (group["recalibrated_error"].abs() <= TOLERANCE).mean(),
                        "recalibrated_median_abs_error": group["recalibrated_error"].abs().median(),
                    }
                    if "drift" in group
                    else {}
                ),
            }
        )
    return pd.DataFrame(table)


def repeat_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per model and run count: how far its repeated medians spread."""
    table = []
    for (model, runs), group in rows.groupby(["model", "runs"], sort=False):
        medians = group["median_s"]
        table.append(
            {
                "model": model,
                "runs": runs,
                "repeats": len(group),
                "median_ms": 1000 * medians.median(),
                "range_pct": 100 * (medians.max() - medians.min()) / medians.mean(),
                "cv_pct": 100 * medians.std(ddof=1) / medians.mean() if len(group) > 1 else 0.0,
                "iqr_pct": 100 * (group["spread_s"] / medians).median(),
                "load_1min": group["load_1min"].mean(),
            }
        )
    return pd.DataFrame(table)


def runs_verdict(table: pd.DataFrame) -> str:
    """The fewest timed runs whose repeated medians agree within AGREE for every model, in words."""
    if table.empty:
        return "No repeatability measured."
    agreeing = [runs for runs, group in table.groupby("runs") if (group["range_pct"] <= 100 * AGREE).all()]
    if agreeing:
        return (
            f"Repeated medians agree within {AGREE:.0%} for every model from {min(agreeing)} timed runs on "
            f"(gas's default is {DEFAULT_RUNS})."
        )
    best = table.groupby("runs")["range_pct"].max().idxmin()
    worst = table.groupby("runs")["range_pct"].max().min()
    return (
        f"No run count tried made repeated medians agree within {AGREE:.0%} on this machine; the closest was "
        f"{best} runs ({worst:.1f}% range). gas's default is {DEFAULT_RUNS}."
    )


def noise_ceiling(rows: pd.DataFrame, runs: int = DEFAULT_RUNS) -> str:
    """How often one measurement of a network (at gas's default run count) lands within ±10% of another
    measurement of the same network: what the machine's noise lets any predictor score, at best."""
    rows = rows[rows["runs"] == runs]
    hits = []
    for _, group in rows.groupby("model"):
        medians = group["median_s"].tolist()
        hits += [abs(a / b - 1) <= TOLERANCE for a, b in itertools.permutations(medians, 2)]
    if not hits:
        return ""
    return (
        f"- Measurement noise: a {runs}-run median of a network lies within ±{TOLERANCE:.0%} of another {runs}-run "
        f"median of the same network in {sum(hits) / len(hits):.0%} of {len(hits)} ordered pairs (repeatability "
        "table): a measurement is no better a predictor of the next one than that."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw the tables and summary from the CSVs")
    parser.add_argument("--spaces", nargs="+", default=list(BUDGETS), help="(default: turbovit efficientvit)")
    parser.add_argument("--budget", nargs="*", default=[], metavar="SPACE=COUNT", help="e.g. turbovit=2.5G")
    parser.add_argument("--genomes", type=int, default=50, help="test genomes per space (default: 50)")
    parser.add_argument("--seed", type=int, default=1, help="test genomes' seed (the build uses 0) (default: 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="(default: fp32)")
    parser.add_argument("--compile", action="store_true", help="under torch.compile")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per test genome ({DEFAULT_RUNS})")
    parser.add_argument("--group", type=int, default=5, help="test genomes measured in turns together (default: 5)")
    parser.add_argument("--build-genomes", type=int, help="build plan: genomes whose parts are timed (gas's default)")
    parser.add_argument("--calibrate", type=int, help="build plan: of those, measured end to end (gas's default)")
    parser.add_argument("--part-runs", type=int, help="build plan: timed runs per part (gas's default)")
    parser.add_argument("--repeat-models", nargs="*", default=["turbovit", "efficientvit_m0"], help="repeatability")
    parser.add_argument("--repeat-runs", type=int, nargs="*", default=[5, 10, 20, 40], help="(default: 5 10 20 40)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per model and run count (default: 5)")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    settings = LatencySettings(args.device, args.threads, args.batch, args.dtype, args.compile)
    defaults = BuildPlan()
    load_before = os.getloadavg()
    try:
        if args.report_only:
            rows = pd.read_csv(out / "bench_latency.csv")
            repeats = pd.read_csv(out / "bench_latency_repeat.csv")
        else:
            settings.check_available()
            budgets = parse_budgets(args.budget)
            if args.genomes < 2 or args.group < 1:
                raise GasError("--genomes must be at least 2 (τ needs pairs) and --group at least 1")
            found = []
            for space in args.spaces:
                if space not in budgets:
                    raise GasError(f"no budget for space {space!r}; give --budget {space}=COUNT")
                plan = BuildPlan(
                    genomes=args.build_genomes or defaults.genomes,
                    calibrate=defaults.calibrate if args.calibrate is None else args.calibrate,
                    part_runs=args.part_runs or defaults.part_runs,
                    max_flops=budgets[space],
                )
                found += run_space(space, budgets[space], settings, plan, args)
            rows = pd.DataFrame(found)
            write_csv(out / "bench_latency.csv", rows)  # kept before the repeats, which may fail
            repeats = pd.DataFrame(
                repeatability(settings, args.repeat_models, args.repeat_runs, args.repeats),
                columns=["model", "runs", "repeat", "median_s", "spread_s", "load_1min"],
            )
            write_csv(out / "bench_latency_repeat.csv", repeats)
    except (GasError, OSError) as error:
        return fail("bench_latency", str(error))
    load_after = os.getloadavg()

    accuracy = accuracy_table(rows)
    shown = accuracy.assign(
        within_10pct=accuracy["within_10pct"].map("{:.0%}".format),
        median_abs_error=accuracy["median_abs_error"].map("{:.1%}".format),
    )
    if "drift" in accuracy:
        shown = shown.assign(
            drift=accuracy["drift"].map("{:.2f}x".format),
            recalibrated_within_10pct=accuracy["recalibrated_within_10pct"].map("{:.0%}".format),
            recalibrated_median_abs_error=accuracy["recalibrated_median_abs_error"].map("{:.1%}".format),
        )
    repeat = repeat_table(repeats)
    verdict = runs_verdict(repeat)
    budgets = ", ".join(
        f"{space} ≤ {format_count(rows[rows['space'] == space]['flops'].max())}" for space in accuracy["space"]
    )
    setup = (
        f"Device: {settings.describe()}. Test genomes: random, within each space's budget at 224px, never used to "
        f"build or calibrate the model (largest FLOPs drawn: {budgets}); each measured with the median of its "
        f"timed runs (`runs` column of the CSV), in turns with {args.group - 1} others. `within_10pct`: share of "
        "predictions within ±10% of the measured median. `tau_*`: Kendall's τ against the measured medians of "
        "the model's prediction, of its uncalibrated sum of parts, of FLOPs alone and of params alone. "
        "`predict_us`: microseconds per prediction once built; `build_s`: seconds to build the model from nothing "
        "for that space (parts timed and calibration measured). `median_iqr_pct`: the test measurements' median "
        "IQR as a share of their median, i.e. how noisy the machine was. `drift`: the calibration networks "
        "measured again after the test, over their figures from the build (1.00x: the machine ran as fast "
        "as when the model was built); `recalibrated_*`: the same predictions with the calibration refitted "
        "on those fresh figures, as a search refits it on every network it measures."
    )
    command = command_line(SCRIPT, argv)
    if args.report_only:
        load = "Load average: see the CSVs' load_1min column (recorded at each measurement)."
    else:
        load = f"{load_line(load_before, load_after)}."
    headline = [
        f"- {row.space}: {row.within_10pct:.0%} of {row.genomes} predictions within ±10% (median |error| "
        f"{row.median_abs_error:.1%}); Kendall τ {row.tau_predicted:.2f} against FLOPs' {row.tau_flops:.2f} and "
        f"params' {row.tau_params:.2f}; {row.predict_us:.0f} µs per prediction; built in {row.build_s:.0f} s."
        + (
            f" Recalibrated on the build's networks measured again ({row.drift:.2f}x their build-time figures): "
            f"{row.recalibrated_within_10pct:.0%} within ±10% (median |error| {row.recalibrated_median_abs_error:.1%})."
            if "drift" in accuracy
            else ""
        )
        for row in accuracy.itertuples()
    ]
    headline.append(f"- Runs per measurement: {verdict}")
    ceiling = noise_ceiling(repeats)
    if ceiling:
        headline.append(ceiling)
    body = (
        f"## Accuracy\n\n{frame_markdown(shown, '.3g')}\n\n"
        f"## Repeatability of one measurement\n\n{frame_markdown(repeat, '.3g')}\n\n"
        "`range_pct`: (largest − smallest) / mean of the repeated medians; `cv_pct`: their coefficient of "
        "variation; `iqr_pct`: the median IQR of one measurement over its median."
    )
    write_page(
        out,
        "bench_latency",
        f"# Latency model accuracy\n\n{setup}\n\n" + "\n".join(headline) + f"\n\n{body}\n\n{load}\n\n{stamp(command)}",
        "## Latency model accuracy\n\n"
        + "\n".join(headline)
        + f"\n\nTables: [bench_latency.md](bench_latency.md); rows: [bench_latency.csv](bench_latency.csv), "
        f"[bench_latency_repeat.csv](bench_latency_repeat.csv). {load}\n\n{stamp(command)}",
    )
    print(body)
    print("\n".join(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
