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

import dataclasses
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
from gas import study as record
from gas.errors import GasError, GenomeError
from gas.evaluate.proxy import DEFAULT_DATASET, ProxyConfig, check_data, evaluate
from gas.front import pick_trial
from gas.genome import Genome
from gas.latency import DEFAULT_RUNS, LatencySettings, fingerprint, measure, measure_many
from gas.latency.device import difference
from gas.space import get_space, load_genome
from gas.stats import welch_p
from gas.units import compact_count, format_count, format_duration, parse_count
from search_spaces.turbovit import DEPTH_RANGE, TurboViTGenome

SCRIPT = "experiments/bench_quality/run.py"
WIDTH_STEP = 8


# ---- limits -------------------------------------------------------------------------------------------


def flops_of(genome: Genome) -> int:
    return get_space(genome.space).cost(genome).flops


@dataclass(frozen=True)
class FlopsBudget:
    """At most `flops` FLOPs at 224px."""

    flops: int

    def fits(self, genome: Genome) -> bool:
        return flops_of(genome) <= self.flops

    def __str__(self) -> str:
        return f"{compact_count(self.flops)} FLOPs"


class MeasuredLatency:
    """At most `seconds` of measured latency (the median of `runs` timed runs) with `settings` on this machine.

    Each genome is measured once; asking again gives the same answer, so a scaler's steps stay consistent.
    """

    def __init__(self, seconds: float, settings: LatencySettings, runs: int) -> None:
        self.seconds, self.settings, self.runs = seconds, settings, runs
        self._measured: dict[str, float] = {}

    def latency(self, genome: Genome) -> float:
        key = genome.to_json()
        if key not in self._measured:
            self._measured[key] = measure(genome, self.settings, self.runs).median
        return self._measured[key]

    def fits(self, genome: Genome) -> bool:
        return self.latency(genome) <= self.seconds

    def __str__(self) -> str:
        return f"{format_duration(self.seconds)} ({self.settings.describe()})"


Limit = FlopsBudget | MeasuredLatency


def fits(genome: Genome, limits: Sequence[Limit]) -> bool:
    return all(limit.fits(genome) for limit in limits)


def limits_text(limits: Sequence[Limit]) -> str:
    return " and ".join(str(limit) for limit in limits)


def study_limits(study_name: str, storage: str | None, budget: int | None, runs: int) -> list[Limit]:
    """The limits the study searched under: its latency limit (measured here) and its FLOPs budget.

    `budget`, if given, must be the study's own; a study with neither limit needs it.
    """
    study = record.open_study(study_name, storage)
    searched_budget = record.study_budget(study)
    if budget is not None and searched_budget is not None and searched_budget != budget:
        raise GasError(
            f"study {study_name!r} searched under {compact_count(searched_budget)} FLOPs, not the "
            f"{compact_count(budget)} asked for; pass --budget {compact_count(searched_budget)} or another study"
        )
    limits: list[Limit] = []
    latency = record.latency_of(study) or {}
    if latency.get("limit"):
        settings = LatencySettings(**latency["settings"])
        here, there = fingerprint(settings), latency.get("fingerprint", {})
        mismatch = difference(here, there)
        if mismatch is not None:
            raise GasError(
                f"study {study_name!r} measured its latency limit on another device or settings "
                f"({mismatch.replace('in the file', 'in the study')}); run this where it searched"
            )
        limits.append(MeasuredLatency(float(latency["limit"]), settings, runs))
    flops = searched_budget or budget
    if flops is not None:
        limits.append(FlopsBudget(flops))
    if not limits:
        raise GasError(f"study {study_name!r} records no FLOPs budget or latency limit; pass --budget")
    return limits


# ---- baselines scaled to the limit -------------------------------------------------------------------


def scale_width(genome: TurboViTGenome, limits: Sequence[Limit], step: int = WIDTH_STEP) -> TurboViTGenome:
    """The widest copy of `genome` within `limits`: all widths scaled alike, the stem's in steps of `step`.

    Heads stay as they are (so head width scales), and each block width is rounded to a multiple of its
    heads; for Hiera, whose widths are the stem's times 2**stage, the ratios stay exact.
    """
    best = None
    for stem_dim in range(step, 8 * genome.stem.dim + 1, step):
        factor = stem_dim / genome.stem.dim
        blocks = tuple(
            dataclasses.replace(block, dim=max(block.heads, round(block.dim * factor / block.heads) * block.heads))
            for block in genome.blocks
        )
        candidate = dataclasses.replace(genome, stem=dataclasses.replace(genome.stem, dim=stem_dim), blocks=blocks)
        try:
            if not fits(candidate, limits):
                break  # cost grows with width, so no wider genome fits either
        except GenomeError:
            break  # wider than the space admits
        best = candidate
    if best is None:
        raise GasError(f"even a {step}-wide stem puts {genome.space} over {limits_text(limits)}")
    return best


def stages_of(genome: TurboViTGenome) -> list[list[int]]:
    """Block indices per stage: a stage starts at every Q-pool block."""
    stages: list[list[int]] = [[]]
    for index, block in enumerate(genome.blocks):
        if block.q_pool and stages[-1]:
            stages.append([])
        stages[-1].append(index)
    return stages


def scale_depth(genome: TurboViTGenome, limits: Sequence[Limit]) -> TurboViTGenome:
    """The deepest copy of `genome` within `limits`, changing the depth of its deepest stage only.

    Over budget, the last block of the stage with the most blocks (the later stage on a tie) goes, one at
    a time; a stage keeps at least one block, and its Q-pool block. Within budget, that stage grows by
    copies of its last block (without its Q-pool) while the next one still fits.
    """
    blocks = list(genome.blocks)

    def deepest_stage(candidate: list, min_blocks: int = 1) -> list[int] | None:
        stages = stages_of(dataclasses.replace(genome, blocks=tuple(candidate)))
        return max(reversed([stage for stage in stages if len(stage) >= min_blocks]), key=len, default=None)

    def blocks_fit(candidate: list) -> bool:
        return fits(dataclasses.replace(genome, blocks=tuple(candidate)), limits)

    if blocks_fit(blocks):
        while len(blocks) < DEPTH_RANGE[1]:
            stage = deepest_stage(blocks)
            assert stage is not None
            grown = [*blocks[: stage[-1] + 1], dataclasses.replace(blocks[stage[-1]], q_pool=False)]
            grown += blocks[stage[-1] + 1 :]
            if not blocks_fit(grown):
                break
            blocks = grown
    while not blocks_fit(blocks):
        stage = deepest_stage(blocks, min_blocks=2)
        if stage is None:
            raise GasError(f"no depth of {genome.space} fits {limits_text(limits)}")
        del blocks[stage[-1]]
    return dataclasses.replace(genome, blocks=tuple(blocks))


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
    study = record.open_study(study_name, storage)
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
            limits = study_limits(args.study, args.storage, budget, args.runs)
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
