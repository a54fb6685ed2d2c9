"""Search quality: the searched architectures against hand-designed ones at the same budget, trained alike.

    python experiments/bench_quality/run.py --budget 2.5G --study turbovit-2.5G --storage sqlite:///runs/gas.db
    python experiments/bench_quality/run.py ... --report-only     # redraw the tables and summary from the CSV

Candidates, all within --budget FLOPs at 224px (gas's analytic cost, fvcore convention):
    searched     the study's front picks (--picks, default: best and knee) of a `gas search` at that budget
    width        Hiera-T scaled in width: every block keeps its heads and Hiera's width ratios; the stem width
                 (in steps of 8) is the largest whose genome fits the budget
    depth        Hiera-T scaled in depth: blocks are dropped from (or added to) the deepest stage, one at a
                 time, until the genome is the deepest that fits the budget
    turbovit     the `turbovit` reference genome (TurboViT's published scale)

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

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.common.results import RESULTS, command_line, stamp, update_summary
from experiments.common.workers import worker_pool
from gas import study as record
from gas.errors import GasError, GenomeError
from gas.evaluate.proxy import DEFAULT_DATASET, ProxyConfig, check_data, evaluate
from gas.front import pick_trial
from gas.genome import Genome
from gas.space import get_space, load_genome
from gas.units import compact_count, format_count, parse_count
from search_spaces.turbovit import DEPTH_RANGE, TurboViTGenome

SCRIPT = "experiments/bench_quality/run.py"
WIDTH_STEP = 8


# ---- baselines scaled to the budget ------------------------------------------------------------------


def flops_of(genome: Genome) -> int:
    return get_space(genome.space).cost(genome).flops


def scale_width(genome: TurboViTGenome, budget: int, step: int = WIDTH_STEP) -> TurboViTGenome:
    """The widest copy of `genome` within `budget`: all widths scaled alike, the stem's in steps of `step`.

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
            if flops_of(candidate) > budget:
                break  # FLOPs grow with width, so no wider genome fits either
        except GenomeError:
            break  # wider than the space admits
        best = candidate
    if best is None:
        raise GasError(f"even a {step}-wide stem puts {genome.space} over the {compact_count(budget)} budget")
    return best


def stages_of(genome: TurboViTGenome) -> list[list[int]]:
    """Block indices per stage: a stage starts at every Q-pool block."""
    stages: list[list[int]] = [[]]
    for index, block in enumerate(genome.blocks):
        if block.q_pool and stages[-1]:
            stages.append([])
        stages[-1].append(index)
    return stages


def scale_depth(genome: TurboViTGenome, budget: int) -> TurboViTGenome:
    """The deepest copy of `genome` within `budget`, changing the depth of its deepest stage only.

    Over budget, the last block of the stage with the most blocks (the later stage on a tie) goes, one at
    a time; a stage keeps at least one block, and its Q-pool block. Within budget, that stage grows by
    copies of its last block (without its Q-pool) while the next one still fits.
    """
    blocks = list(genome.blocks)

    def deepest_stage(candidate: list, min_blocks: int = 1) -> list[int] | None:
        stages = stages_of(dataclasses.replace(genome, blocks=tuple(candidate)))
        return max(reversed([stage for stage in stages if len(stage) >= min_blocks]), key=len, default=None)

    def fits(candidate: list) -> bool:
        return flops_of(dataclasses.replace(genome, blocks=tuple(candidate))) <= budget

    if fits(blocks):
        while len(blocks) < DEPTH_RANGE[1]:
            stage = deepest_stage(blocks)
            assert stage is not None
            grown = [*blocks[: stage[-1] + 1], dataclasses.replace(blocks[stage[-1]], q_pool=False)]
            grown += blocks[stage[-1] + 1 :]
            if not fits(grown):
                break
            blocks = grown
    while not fits(blocks):
        stage = deepest_stage(blocks, min_blocks=2)
        if stage is None:
            raise GasError(f"no depth of {genome.space} fits the {compact_count(budget)} budget")
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


def candidates(study_name: str, storage: str | None, picks: Sequence[str], budget: int) -> list[Candidate]:
    study = record.open_study(study_name, storage)
    searched_budget = record.study_budget(study)
    if searched_budget is not None and searched_budget != budget:
        raise GasError(
            f"study {study_name!r} searched under {compact_count(searched_budget)} FLOPs, not the "
            f"{compact_count(budget)} asked for; pass --budget {compact_count(searched_budget)} or another study"
        )
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
    width = scale_width(hiera, budget)
    depth = scale_depth(hiera, budget)
    found += [
        Candidate("hiera_tiny by width", "baseline", width, f"hiera_tiny with stem width {width.stem.dim}"),
        Candidate("hiera_tiny by depth", "baseline", depth, f"hiera_tiny with stage depths {depth_text(depth)}"),
        Candidate("turbovit", "baseline", load_genome("turbovit"), "the turbovit reference genome"),
    ]
    for candidate in found:
        if flops_of(candidate.genome) > budget:
            raise GasError(f"{candidate.name} has {format_count(flops_of(candidate.genome))} FLOPs, over the budget")
    return found


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
    from scipy import stats

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
        p = None
        if len(ours) > 1 and len(theirs) > 1 and (ours.std() > 0 or theirs.std() > 0):
            with warnings.catch_warnings():  # near-identical accuracies only make the p-value imprecise
                warnings.simplefilter("ignore", RuntimeWarning)
                p = stats.ttest_ind(ours, theirs, equal_var=False).pvalue
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
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px (default: 2.5G)")
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
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")
    parser.add_argument("--report-only", action="store_true", help="redraw the tables and summary from the CSV")
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
        budget = parse_count(args.budget)
        if args.report_only:
            runs = pd.read_csv(out / "bench_quality.csv")
        else:
            found = candidates(args.study, args.storage, args.picks, budget)
            jobs = []
            for dataset in args.datasets:
                for seed in range(args.seeds):
                    proxy = proxy_for(dataset, seed)
                    check_data(proxy)
                    jobs += [Job(candidate, dataset, seed, proxy, args.threads) for candidate in found]
            runs = pd.DataFrame(train_all(jobs, args.jobs))
            out.mkdir(parents=True, exist_ok=True)
            runs.to_csv(out / "bench_quality.csv", index=False)
    except (GasError, OSError) as error:
        print(f"bench_quality: error: {error}", file=sys.stderr)
        return 2

    table = summary_table(runs)
    table.to_csv(out / "bench_quality_summary.csv", index=False)
    lines = verdicts(runs)
    shown = table.assign(
        accuracy=[
            f"{mean:.2%} ± {std:.2%}" for mean, std in zip(table["accuracy_mean"], table["accuracy_std"], strict=True)
        ],
        params=table["params"].map(format_count),
        flops=table["flops"].map(format_count),
    )[["dataset", "candidate", "kind", "accuracy", "seeds", "params", "flops", "origin"]]
    markdown = shown.to_markdown(index=False)
    proxy = proxy_for(args.datasets[0], 0)
    setup = (
        f"Budget {compact_count(budget)} FLOPs at 224px; searched genomes from study `{args.study}`. Every "
        f"candidate trained from scratch at {proxy.resolution}px for {proxy.train.epochs} epochs on "
        f"{proxy.train_size} training images (lr {proxy.train.lr:g}, batch {proxy.train.batch_size}), scored on "
        f"{proxy.val_size} validation images, seeds 0..{args.seeds - 1}. Params and FLOPs at 224px with a "
        "1000-class head."
    )
    command = command_line(SCRIPT, argv)
    (out / "bench_quality.md").write_text(
        f"# Search quality at {compact_count(budget)} FLOPs\n\n{setup}\n\n" + "\n".join(lines) + f"\n\n{markdown}\n\n"
        f"{stamp(command)}\n"
    )
    update_summary(
        out,
        "bench_quality",
        f"## Search quality at {compact_count(budget)} FLOPs\n\n{setup}\n\n" + "\n".join(lines) + "\n\n"
        f"Table: [bench_quality.md](bench_quality.md); every run: [bench_quality.csv](bench_quality.csv).\n\n"
        f"{stamp(command)}",
    )
    print(markdown)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
