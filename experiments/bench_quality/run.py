"""Search quality: the searched architectures against hand-designed ones at the same limit, trained alike.

    python experiments/bench_quality/run.py --study turbovit-2.5G --storage sqlite:///runs/gas.db
    python experiments/bench_quality/run.py --study turbovit-25ms --storage ...   # a latency-limited search
    python experiments/bench_quality/run.py ... --report-only     # redraw the tables and summary from the CSV

The limit is the study's own: its FLOPs budget at 224px (gas's analytic cost, fvcore convention), or, for a
search run with --max-latency, its latency limit measured on this machine with the study's device settings
(and its FLOPs budget too, if it had one). A study measured on another device is refused: a latency limit
holds on the device it was measured on. Candidates, all within the limit:
    searched     the study's front picks (--picks, default: best and knee)
    width        Hiera-T scaled in width: every block keeps its heads and Hiera's width ratios; the stem width
                 (in steps of 8) is the largest whose genome fits the limit
    depth        Hiera-T scaled in depth: blocks are dropped from (or added to) the deepest stage, one at a
                 time, until the genome is the deepest that fits the limit
    turbovit     the `turbovit` reference genome (TurboViT's published scale)
Under a latency limit, "fits" means a measured median at or under it (--runs timed runs), and every
candidate's latency is measured again, in turns with the others, before anything trains; the table shows it.

Each is trained from scratch with the same schedule (--epochs, --train-size, lr and batch of gas's proxy) on
each --datasets entry, once per seed, and scored on the validation split. Reports accuracy mean ± std over
seeds, params and FLOPs, and whether the best searched architecture beats every baseline on each dataset
(higher mean; Welch's t-test p-value against the strongest baseline for how sure that is).

Writes bench_quality.csv (every training run), bench_quality_summary.csv, bench_quality.md and its section
of SUMMARY.md into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import statistics
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass

import pandas as pd

from experiments.common.cli import fail, harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.workers import worker_pool
from gas import record
from gas.errors import GasError
from gas.evaluate.proxy import DEFAULT_DATASET, ProxyConfig, check_data, evaluate
from gas.front import pick_trial
from gas.genome import Genome
from gas.latency import DEFAULT_RUNS, measure_many
from gas.scaling import FlopsBudget, Limit, MeasuredLatency, limits_text, scale_depth, scale_width, study_limits
from gas.space import get_space, load_genome
from gas.stats import welch_p
from gas.storage import open_study
from gas.units import compact_count, format_count, parse_count
from search_spaces.turbovit import TurboViTGenome
from search_spaces.turbovit.scaling import stages_of

SCRIPT = "experiments/bench_quality/run.py"


def flops_of(genome: Genome) -> int:
    return get_space(genome.space).cost(genome).flops


# ---- candidates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str  # "searched" or "baseline"
    genome: Genome
    origin: str


def depth_text(genome: TurboViTGenome) -> str:
    return "-".join(str(len(stage)) for stage in stages_of(genome))


def candidates(study_name: str, storage: str | None, picks: Sequence[str], limits: Sequence[Limit]) -> list[Candidate]:
    study = open_study(study_name, storage)
    found: list[Candidate] = []
    for pick in picks:
        trial = pick_trial(study, pick)
        if any(candidate.origin.endswith(f"trial {trial.number}") for candidate in found):
            continue
        found.append(
            Candidate(
                f"searched ({pick})",
                "searched",
                record.trial_genome(trial),
                f"study {study_name}, trial {trial.number}",
            )
        )
    hiera = load_genome("hiera_tiny")
    assert isinstance(hiera, TurboViTGenome)
    width = scale_width(hiera, limits)
    depth = scale_depth(hiera, limits)
    found += [
        Candidate("hiera_tiny by width", "baseline", width, f"hiera_tiny with stem width {width.stem.dim}"),
        Candidate("hiera_tiny by depth", "baseline", depth, f"hiera_tiny with stage depths {depth_text(depth)}"),
        Candidate("turbovit", "baseline", load_genome("turbovit"), "the turbovit reference genome"),
    ]
    for limit in limits:
        for candidate in found:
            if isinstance(limit, FlopsBudget) and not limit.fits(candidate.genome):
                raise GasError(f"{candidate.name} has {format_count(flops_of(candidate.genome))} FLOPs, over {limit}")
    return found


def measure_candidates(found: Sequence[Candidate], limit: MeasuredLatency) -> dict[str, float]:
    """Each candidate's latency, measured in turns with the others (twice the limit's runs), by name.

    A network measured alone, at another moment, may have met a machine in another state; in turns, all
    candidates meet the same one, so their latencies compare.
    """
    measured = measure_many({c.name: c.genome for c in found}, limit.settings, 2 * limit.runs)
    return {name: measurement.median for name, measurement in measured.items()}


# ---- training ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    candidate: Candidate
    dataset: str
    seed: int
    proxy: ProxyConfig
    threads: int


def train_one(job: Job) -> dict:
    import torch

    torch.set_num_threads(job.threads)
    result = evaluate(job.candidate.genome, job.proxy)
    cost = get_space(job.candidate.genome.space).cost(job.candidate.genome)
    return {
        "candidate": job.candidate.name,
        "kind": job.candidate.kind,
        "origin": job.candidate.origin,
        "dataset": job.dataset,
        "seed": job.seed,
        "accuracy": result.accuracy,
        "params": cost.params,
        "flops": cost.flops,
        "wall_time_s": result.wall_time,
    }


def train_all(jobs: list[Job], workers: int) -> list[dict]:
    """Every job's row, in job order; a line per finished run, as runs take minutes each."""
    started = time.perf_counter()

    def progress(done: int, row: dict) -> None:
        print(
            f"[{done}/{len(jobs)} {time.perf_counter() - started:6.0f}s] {row['candidate']} on {row['dataset']}, "
            f"seed {row['seed']}: accuracy {row['accuracy']:.3f} in {row['wall_time_s']:.0f}s",
            flush=True,
        )

    if workers <= 1:
        rows = []
        for job in jobs:
            rows.append(train_one(job))
            progress(len(rows), rows[-1])
        return rows
    with worker_pool(workers) as pool:
        futures = [pool.submit(train_one, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), start=1):
            progress(done, future.result())
        return [future.result() for future in futures]


# ---- summary -----------------------------------------------------------------------------------------


SIGNIFICANCE = 0.05  # a searched architecture "beats" a baseline only below this p-value


def verdicts(runs: pd.DataFrame) -> list[str]:
    """Per dataset: does the best searched candidate beat every baseline on mean accuracy, and how surely."""

    lines = []
    for dataset, rows in runs.groupby("dataset", sort=False):
        means = rows.groupby("candidate", sort=False)["accuracy"].mean()
        kinds = rows.groupby("candidate", sort=False)["kind"].first()
        searched = means[kinds == "searched"]
        baselines = means[kinds == "baseline"]
        if searched.empty or baselines.empty:
            continue
        best, rival = searched.idxmax(), baselines.idxmax()
        margin = searched[best] - baselines[rival]
        ours = rows.loc[rows["candidate"] == best, "accuracy"]
        theirs = rows.loc[rows["candidate"] == rival, "accuracy"]
        p = welch_p(ours, theirs)
        p_value = "too few seeds for a t-test" if p is None else f"Welch's t-test p = {p:.3f}"
        if margin <= 0:
            verdict = "does not beat every baseline"
        elif p is not None and p < SIGNIFICANCE:
            verdict = "beats every baseline"
        else:  # a higher mean that the seeds' spread could explain is not a win yet
            verdict = f"is ahead of every baseline, but not significantly (p ≥ {SIGNIFICANCE})"
        lines.append(
            f"- {dataset}: {best} {verdict}: {searched[best]:.2%} against the strongest baseline, {rival}, at "
            f"{baselines[rival]:.2%} ({margin:+.2%}; {p_value}, {len(ours)} seeds each)."
        )
    return lines


def latency_lines(table: pd.DataFrame) -> list[str]:
    """Per dataset, under a latency limit: the most accurate searched candidate's measured latency against
    the `turbovit` reference's, as a speed-up."""
    if "latency_s" not in table:
        return []
    lines = []
    for dataset, rows in table.groupby("dataset", sort=False):
        searched = rows[rows["kind"] == "searched"]
        reference = rows[rows["candidate"] == "turbovit"]
        if searched.empty or reference.empty:
            continue
        best = searched.loc[searched["accuracy_mean"].idxmax()]
        ours, theirs = float(best["latency_s"]), float(reference["latency_s"].iloc[0])
        margin = best["accuracy_mean"] - reference["accuracy_mean"].iloc[0]
        speed = f"{theirs / ours:.2f}x faster" if ours <= theirs else f"{ours / theirs:.2f}x slower"
        lines.append(
            f"- {dataset}: {best['candidate']} runs in {1000 * ours:.1f} ms against turbovit's {1000 * theirs:.1f} ms "
            f"(measured in turns): {speed}, at {margin:+.2%} accuracy."
        )
    return lines


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, name), group in runs.groupby(["dataset", "candidate"], sort=False):
        accuracies = group["accuracy"].tolist()
        rows.append(
            {
                "dataset": dataset,
                "candidate": name,
                "kind": group["kind"].iloc[0],
                "accuracy_mean": statistics.fmean(accuracies),
                "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "seeds": len(accuracies),
                "params": group["params"].iloc[0],
                "flops": group["flops"].iloc[0],
                "origin": group["origin"].iloc[0],
                **({"latency_s": group["latency_s"].iloc[0]} if "latency_s" in group else {}),
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw the tables and summary from the CSV")
    parser.add_argument("--budget", help="FLOPs budget at 224px (default: the study's)")
    parser.add_argument("--study", default="turbovit-2.5G", help="the gas search's study (default: turbovit-2.5G)")
    parser.add_argument("--storage", help="its Optuna storage URL (default: sqlite:///runs/gas.db)")
    parser.add_argument("--picks", nargs="+", default=["best", "knee"], choices=["best", "knee"], help="front picks")
    parser.add_argument("--datasets", nargs="+", default=[DEFAULT_DATASET, "digits"], help="(default: shapes digits)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per candidate and dataset (default: 3)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: 15)")
    parser.add_argument("--resolution", type=int, default=ProxyConfig().resolution, help="training resolution px")
    parser.add_argument("--train-size", type=int, default=2048, help="training images per dataset (default: 2048)")
    parser.add_argument("--val-size", type=int, default=512, help="validation images per dataset (default: 512)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training run (default: 1)")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time, one process each (1)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs per latency measurement (20)")
    args = parser.parse_args(argv)

    def proxy_for(dataset: str, seed: int) -> ProxyConfig:
        return ProxyConfig(
            dataset=dataset,
            resolution=args.resolution,
            train_size=args.train_size,
            val_size=args.val_size,
            zero_cost_batch=0,  # scores at initialisation are not what this compares
        ).with_overrides(epochs=args.epochs, seed=seed)

    out = args.out.resolve()
    try:
        budget = parse_count(args.budget) if args.budget else None
        if args.report_only:
            runs = pd.read_csv(out / "bench_quality.csv")
            if "limit" not in runs:  # written before latency limits: the budget is the command's
                runs["limit"] = f"{compact_count(budget or parse_count('2.5G'))} FLOPs"
        else:
            limits = study_limits(open_study(args.study, args.storage), args.runs, budget)
            print(f"limit: {limits_text(limits)}", flush=True)
            found = candidates(args.study, args.storage, args.picks, limits)
            latency = next((limit for limit in limits if isinstance(limit, MeasuredLatency)), None)
            latencies = measure_candidates(found, latency) if latency is not None else {}
            for candidate in found:
                shown = f", {1000 * latencies[candidate.name]:.1f} ms" if latencies else ""
                print(f"{candidate.name}: {format_count(flops_of(candidate.genome))} FLOPs{shown}", flush=True)
            jobs = []
            for dataset in args.datasets:
                for seed in range(args.seeds):
                    proxy = proxy_for(dataset, seed)
                    check_data(proxy)
                    jobs += [Job(candidate, dataset, seed, proxy, args.threads) for candidate in found]
            runs = pd.DataFrame(train_all(jobs, args.jobs)).assign(limit=limits_text(limits))
            if latencies:
                runs["latency_s"] = runs["candidate"].map(latencies)
            write_csv(out / "bench_quality.csv", runs)
    except (GasError, OSError) as error:
        return fail("bench_quality", str(error))

    limit = str(runs["limit"].iloc[0])
    table = summary_table(runs)
    write_csv(out / "bench_quality_summary.csv", table)
    lines = verdicts(runs) + latency_lines(table)
    shown = table.assign(
        accuracy=[
            f"{mean:.2%} ± {std:.2%}" for mean, std in zip(table["accuracy_mean"], table["accuracy_std"], strict=True)
        ],
        params=table["params"].map(format_count),
        flops=table["flops"].map(format_count),
    )
    columns = ["dataset", "candidate", "kind", "accuracy", "seeds", "params", "flops", "origin"]
    if "latency_s" in table:
        shown["latency"] = table["latency_s"].map(lambda seconds: f"{1000 * seconds:.1f} ms")
        columns.insert(-1, "latency")
    shown = shown[columns]
    markdown = frame_markdown(shown)
    proxy = proxy_for(args.datasets[0], 0)
    if "latency_s" in runs:
        where = (
            f"Limit {limit}: a baseline fits when its latency, measured on this machine (median of {args.runs} "
            "runs), is at or under it; the latency column is every candidate measured again, in turns, before "
            f"training (median of {2 * args.runs} runs)"
        )
    else:
        where = f"Budget {limit} at 224px"
    setup = (
        f"{where}; searched genomes from study `{args.study}`. Every "
        f"candidate trained from scratch at {proxy.resolution}px for {proxy.train.epochs} epochs on "
        f"{proxy.train_size} training images (lr {proxy.train.lr:g}, batch {proxy.train.batch_size}), scored on "
        f"{proxy.val_size} validation images, seeds 0..{args.seeds - 1}. Params and FLOPs at 224px with a "
        "1000-class head."
    )
    command = command_line(SCRIPT, argv)
    write_page(
        out,
        "bench_quality",
        f"# Search quality at {limit}\n\n{setup}\n\n" + "\n".join(lines) + f"\n\n{markdown}\n\n{stamp(command)}",
        f"## Search quality at {limit}\n\n{setup}\n\n" + "\n".join(lines) + "\n\n"
        f"Table: [bench_quality.md](bench_quality.md); every run: [bench_quality.csv](bench_quality.csv).\n\n"
        f"{stamp(command)}",
    )
    print(markdown)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
