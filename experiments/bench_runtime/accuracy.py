"""Latency model accuracy per runtime and space, in reference units, beside the machine's own repeatability.

    python experiments/bench_runtime/accuracy.py                  # torch and onnxruntime, both spaces
    python experiments/bench_runtime/accuracy.py --genomes 10 --build-genomes 12 --calibrate 8
    python experiments/bench_runtime/accuracy.py --report-only    # redraw the table and summary from the CSV

For each runtime (eager torch, ONNX Runtime) and each space (turbovit within 2.5G FLOPs, efficientvit within
1G), on the CPU, float32, batch 1:
    build    the latency model from nothing, in memory (never the user's cache), with the build plan; every
             timing it takes is taken in turns with the reference network (`gas.latency.reference`)
    measure  --genomes random genomes the build never saw, end to end, in groups of --group, each group in
             turns with the reference; then every group again (a second pass), so each test genome has two
             measurements taken minutes apart in the same run
    predict  each test genome in reference units, turned into seconds at the reference's latest measurement
             (the one in its group's turns), as gas predicts; and, for comparison, at the reference's figure
             at the end of the build, which is what a model kept in seconds would predict
    report   `within_10`: the share of predictions within ±10% of the measured median (both passes);
             `repeatability`: the share of test genomes whose two measured medians agree within ±10%, the
             same yardstick applied to the machine against itself; `tau`: Kendall's τ between prediction and
             measurement (first pass), beside FLOPs' τ; `drift`: the reference's median over the test
             measurements, over its figure at the end of the build.

The goal a model is held to: it agrees with measurement at least as often as the machine agrees with itself,
and τ ≥ 0.9. Writes bench_runtime_accuracy.csv (one row per test genome and pass), bench_runtime_accuracy.md
and its section of SUMMARY.md into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import os
import time
from collections.abc import Sequence

import pandas as pd

from experiments.common.cli import fail, harness_parser
from experiments.common.machine import load_line
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas.errors import GasError
from gas.genome import Genome
from gas.latency import DEFAULT_RUNS, BuildPlan, LatencyModel, LatencySettings, build_genomes, measure_many
from gas.search.latency_limit import TOLERANCE, agree
from gas.search.sampling import sample_genomes
from gas.space import get_space
from gas.stats import kendall_tau
from gas.units import parse_count

NAME = "bench_runtime_accuracy"
SCRIPT = "experiments/bench_runtime/accuracy.py"
BUDGETS = {"turbovit": "2.5G", "efficientvit": "1G"}  # what a search of each space typically allows
RUNTIMES = ("torch", "onnxruntime")
PASSES = 2


def unseen_genomes(space: str, count: int, seed: int, budget: int, excluded: set[str]) -> list[Genome]:
    """`count` random genomes of the space within budget, none of them in `excluded` (genome JSON)."""
    drawn = sample_genomes(space, count + len(excluded), seed, 224, budget)
    return [genome for genome, _ in drawn if genome.to_json() not in excluded][:count]


def measure_pass(
    model: LatencyModel, genomes: Sequence[Genome], build_reference: float, number: int, args: argparse.Namespace
) -> list[dict]:
    """One pass over the test genomes, in groups measured beside the reference; one row per genome."""
    rows = []
    for first in range(0, len(genomes), args.group):
        group = genomes[first : first + args.group]
        load = os.getloadavg()[0]
        measured = measure_many(
            {str(i): genome for i, genome in enumerate(group)}, model.settings, args.runs, beside_reference=True
        )
        model.note_reference(measured["0"].reference)  # the latest measurement of the reference: its group's
        for offset, genome in enumerate(group):
            measurement, cost = measured[str(offset)], get_space(genome.space).cost(genome)
            units = model.predict_units(genome)
            rows.append(
                {
                    "genome": first + offset,
                    "pass": number,
                    "flops": cost.flops,
                    "params": cost.params,
                    "measured_s": measurement.median,
                    "spread_s": measurement.spread,
                    "reference_s": measurement.reference,
                    "predicted_units": units,
                    "predicted_s": model.predict(genome),
                    "predicted_at_build_s": units * build_reference,
                    "load_1min": load,
                }
            )
    return rows


def run_case(runtime: str, space: str, budget: int, args: argparse.Namespace) -> list[dict]:
    """Build one runtime's model of one space and measure its test genomes twice; one row per genome and pass."""
    settings = LatencySettings(threads=args.threads, runtime=runtime)
    defaults = BuildPlan()
    plan = BuildPlan(
        genomes=args.build_genomes or defaults.genomes,
        calibrate=defaults.calibrate if args.calibrate is None else args.calibrate,
        part_runs=args.part_runs or defaults.part_runs,
        max_flops=budget,
    )
    model = LatencyModel(settings, plan)  # no path: nothing is read from or written to the cache
    started = time.perf_counter()
    record = model.build(space)
    build_seconds = time.perf_counter() - started
    build_reference = model.reference_seconds
    built = {genome.to_json() for genome in build_genomes(space, plan)}
    genomes = unseen_genomes(space, args.genomes, args.seed, budget, built)
    print(f"{runtime} {space}: built in {build_seconds:.0f}s ({record['parts_timed']} parts timed)", flush=True)
    rows = []
    for number in range(1, PASSES + 1):
        rows += measure_pass(model, genomes, build_reference, number, args)
        print(f"  pass {number}: {len(genomes)} genomes measured", flush=True)
    fixed = {
        "runtime": runtime,
        "space": space,
        "threads": settings.effective_threads(),
        "runs": args.runs,
        "build_s": build_seconds,
        "build_parts": record["parts_timed"],
        "build_reference_s": build_reference,
    }
    return [{**fixed, **row} for row in rows]


# ---- the report ----------------------------------------------------------------------------------------


def case_summary(group: pd.DataFrame) -> dict:
    """The accuracy figures of one runtime and space, beside the machine's repeatability."""
    first = group[group["pass"] == 1].set_index("genome")
    second = group[group["pass"] == 2].set_index("genome").reindex(first.index)
    hits = [agree(p, m) for p, m in zip(group["predicted_s"], group["measured_s"], strict=True)]
    hits_at_build = [agree(p, m) for p, m in zip(group["predicted_at_build_s"], group["measured_s"], strict=True)]
    repeated = [agree(b, a) for a, b in zip(first["measured_s"], second["measured_s"], strict=True) if pd.notna(b)]
    errors = (group["predicted_s"] / group["measured_s"] - 1).abs()
    return {
        "runtime": group["runtime"].iloc[0],
        "space": group["space"].iloc[0],
        "genomes": len(first),
        "measured_ms": f"{1000 * group['measured_s'].min():.1f}–{1000 * group['measured_s'].max():.1f}",
        "within_10": sum(hits) / len(hits),
        "repeatability": sum(repeated) / len(repeated) if repeated else float("nan"),
        "within_10_at_build": sum(hits_at_build) / len(hits_at_build),
        "median_abs_error": errors.median(),
        "tau": kendall_tau(first["predicted_s"], first["measured_s"]),
        "tau_flops": kendall_tau(first["flops"], first["measured_s"]),
        "drift": group["reference_s"].median() / group["build_reference_s"].iloc[0],
        "build_s": group["build_s"].iloc[0],
        "build_parts": group["build_parts"].iloc[0],
    }


def verdict(row: pd.Series) -> str:
    """Whether a case meets the goal, in words."""
    met = row["within_10"] >= row["repeatability"] and row["tau"] >= 0.9
    return "meets the goal" if met else "short of the goal"


def headline(row: pd.Series) -> str:
    return (
        f"- {row['runtime']}, {row['space']}: {row['within_10']:.0%} of {2 * row['genomes']} predictions within "
        f"±{TOLERANCE:.0%} of the measured median, against the machine's {row['repeatability']:.0%} (its two "
        f"measurements of each of {row['genomes']} networks agreeing within ±{TOLERANCE:.0%}); a model kept in "
        f"seconds: {row['within_10_at_build']:.0%}. Kendall τ {row['tau']:.2f} (FLOPs {row['tau_flops']:.2f}); "
        f"the reference ran {row['drift']:.2f}x its build-time figure; {verdict(row)} (within_10 ≥ "
        "repeatability and τ ≥ 0.9)."
    )


def report(rows: pd.DataFrame, out: Path, command: str, load: str) -> str:
    """Write the page and the SUMMARY.md section from the rows; return the markdown table."""
    table = pd.DataFrame([case_summary(group) for _, group in rows.groupby(["runtime", "space"], sort=False)])
    shown = table.assign(
        **{
            column: table[column].map("{:.0%}".format)
            for column in ("within_10", "repeatability", "within_10_at_build", "median_abs_error")
        },
        drift=table["drift"].map("{:.2f}x".format),
    )
    lines = [headline(row) for _, row in table.iterrows()]
    setup = (
        f"CPU, float32, batch 1, {rows['threads'].iloc[0]} thread(s), {rows['runs'].iloc[0]} timed runs per "
        "measurement. Test genomes: random, within each space's budget at 224px, never used to build or "
        "calibrate the model; measured in groups, each group in turns with the reference network, in two "
        "passes. `within_10`: share of predictions (reference units at the reference's latest measurement, "
        "the one in the group's turns) within ±10% of the measured median, over both passes. `repeatability`: "
        "share of test genomes whose two measurements agree within ±10%. `within_10_at_build`: the same "
        "predictions at the reference's figure from the end of the build, as a model kept in seconds predicts. "
        "`tau`: Kendall's τ of prediction against measurement (first pass); `tau_flops`: FLOPs' τ. `drift`: "
        "the reference's median over the test, over its figure at the end of the build. `build_s`: seconds to "
        "build the model (ONNX Runtime's include exporting every part)."
    )
    body = frame_markdown(shown, ".3g")
    write_page(
        out,
        NAME,
        f"# Latency model accuracy per runtime\n\n{setup}\n\n" + "\n".join(lines) + f"\n\n{body}\n\n{load}\n\n"
        f"{stamp(command)}",
        "## Latency model accuracy per runtime\n\n"
        + "\n".join(lines)
        + f"\n\nTable: [{NAME}.md]({NAME}.md); rows: [{NAME}.csv]({NAME}.csv). {load}\n\n{stamp(command)}",
    )
    return body + "\n\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw the table and summary from the CSV")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES, help="(default: both)")
    parser.add_argument("--spaces", nargs="+", default=list(BUDGETS), choices=list(BUDGETS), help="(default: both)")
    parser.add_argument("--genomes", type=int, default=20, help="test genomes per space (default: 20)")
    parser.add_argument("--seed", type=int, default=1, help="test genomes' seed (the build uses 0) (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per measurement ({DEFAULT_RUNS})")
    parser.add_argument("--group", type=int, default=5, help="test genomes measured in turns together (default: 5)")
    parser.add_argument("--build-genomes", type=int, help="build plan: genomes whose parts are timed (gas's default)")
    parser.add_argument("--calibrate", type=int, help="build plan: of those, measured end to end (gas's default)")
    parser.add_argument("--part-runs", type=int, help="build plan: timed runs per part (gas's default)")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    command = command_line(SCRIPT, argv)
    try:
        if args.report_only:
            rows = pd.read_csv(out / f"{NAME}.csv")
            load = "Load average: see the CSV's load_1min column (recorded at each measurement)."
        else:
            if args.genomes < 2 or args.group < 1 or args.runs < 1 or args.threads < 1:
                raise GasError("--genomes must be at least 2 (τ needs pairs), --group, --runs and --threads at least 1")
            if "onnxruntime" in args.runtimes:
                from gas.onnx_model import require

                require("--runtimes onnxruntime")
            load_before = os.getloadavg()
            found = [
                row
                for runtime in args.runtimes
                for space in args.spaces
                for row in run_case(runtime, space, parse_count(BUDGETS[space]), args)
            ]
            rows = pd.DataFrame(found)
            write_csv(out / f"{NAME}.csv", rows)
            load = f"{load_line(load_before, os.getloadavg())}."
    except (GasError, OSError) as error:
        return fail(NAME, str(error))
    print(report(rows, out, command, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
