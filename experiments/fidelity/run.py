"""Ranking fidelity: how well the cheap proxy signals order genomes the way a longer training run does.

    nice -n 10 .venv/bin/python experiments/fidelity/run.py [--genomes 30] [--workers 2] [--long-factor 4]

Samples budget-respecting genomes from the turbovit space, then on each dataset (default: shapes and
digits) trains every genome with the default proxy (ProxyConfig()) and with a schedule `--long-factor`
times as many epochs, everything else equal. The proxy run also yields the zero-cost scores of the same
initialised model. Each signal (proxy accuracy, naswot, synflow, grad_norm, and params or FLOPs alone as
baselines) is ranked against the long schedule's accuracy with Kendall's tau and Spearman's rho.

Resumable: every finished run is appended to experiments/results/fidelity.csv at once and skipped on the
next start, so an interrupted study continues where it stopped. `--report-only` redraws the table and plot.
Writes experiments/results/fidelity.{csv,md,png} and fidelity_genomes.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import csv
import hashlib
import json
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from experiments.common.cli import harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown

if TYPE_CHECKING:
    from gas.evaluate.proxy import ProxyConfig

FIELDS = (
    "dataset",
    "genome",
    "genome_key",
    "schedule",
    "epochs",
    "accuracy",
    "wall_time",
    "images_per_second",
    "params",
    "flops",
    "naswot",
    "synflow",
    "grad_norm",
    "error",
)
SIGNALS = ("proxy accuracy", "naswot", "synflow", "grad_norm", "params alone", "FLOPs alone")


def _run_one(genome_json: str, config_fields: dict[str, Any]) -> dict[str, Any]:
    """Train one genome in a worker process; a diverged run is a row with its reason, not a crash."""
    from gas.evaluate.proxy import ProxyConfig, TrialFailed, evaluate
    from gas.space import load_genome

    genome = load_genome(json.loads(genome_json))
    try:
        result = evaluate(genome, ProxyConfig.from_dict(config_fields))
    except TrialFailed as error:
        return {"accuracy": math.nan, "wall_time": math.nan, "images_per_second": math.nan, "error": str(error)}
    return {
        "accuracy": result.accuracy,
        "wall_time": result.wall_time,
        "images_per_second": result.images_per_second,
        "zero_cost": dict(result.zero_cost),
    }


def base_config(args: argparse.Namespace) -> ProxyConfig:
    """The default proxy on CPU, at --epochs if given: the 'proxy' schedule; 'long' is --long-factor x its epochs."""
    from gas.evaluate.proxy import ProxyConfig

    config = ProxyConfig().with_overrides(device="cpu")
    return config.with_overrides(epochs=args.epochs) if args.epochs else config


def genome_key(genome_json: str) -> str:
    return hashlib.sha1(genome_json.encode()).hexdigest()[:12]


def done_runs(csv_path: Path) -> set[tuple[str, str, str]]:
    if not csv_path.exists():
        return set()
    with csv_path.open() as handle:
        return {(row["dataset"], row["genome_key"], row["schedule"]) for row in csv.DictReader(handle)}


def append_row(csv_path: Path, row: dict[str, Any]) -> None:
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({field: row.get(field, "") for field in FIELDS})


def run_study(args: argparse.Namespace) -> None:
    from experiments.common.workers import worker_pool
    from gas.search.sampling import sample_genomes
    from gas.units import parse_count

    budget = parse_count(args.budget)
    sampled = sample_genomes("turbovit", args.genomes, seed=args.seed, budget=budget)
    genomes = [(genome.to_json(), cost) for genome, cost in sampled]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fidelity_genomes.json").write_text(
        json.dumps([json.loads(text) for text, _ in genomes], indent=1) + "\n"
    )
    base = base_config(args)
    schedules = {"proxy": base.train.epochs, "long": base.train.epochs * args.long_factor}
    csv_path = args.out / "fidelity.csv"
    done = done_runs(csv_path)
    jobs = []
    for index, (text, cost) in enumerate(genomes):
        for dataset in args.datasets:
            # Long runs first within a genome: the longest jobs starting early shortens the whole study.
            for schedule in ("long", "proxy"):
                if (dataset, genome_key(text), schedule) in done:
                    continue
                config = base.with_overrides(dataset=dataset, epochs=schedules[schedule])
                meta = {"dataset": dataset, "genome": index, "genome_key": genome_key(text), "schedule": schedule}
                jobs.append((text, config, meta | {"params": cost.params, "flops": cost.flops}))
    print(f"{len(jobs)} runs to do ({len(done)} already in {csv_path}), {args.workers} workers", flush=True)
    started = time.perf_counter()
    with worker_pool(args.workers, threads=1) as pool:  # one core per worker: workers run side by side
        pending: dict[Future, dict[str, Any]] = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < args.workers:
                text, config, meta = queue.pop(0)
                pending[pool.submit(_run_one, text, config.to_dict())] = meta | {"epochs": config.train.epochs}
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                meta = pending.pop(future)
                result = future.result()
                row = meta | {
                    key: result.get(key, "") for key in ("accuracy", "wall_time", "images_per_second", "error")
                }
                row |= result.get("zero_cost", {}) if meta["schedule"] == "proxy" else {}
                append_row(csv_path, row)
                print(
                    f"[{time.perf_counter() - started:7.0f}s] {meta['dataset']:7s} genome {meta['genome']:2d} "
                    f"{meta['schedule']:5s} acc {row['accuracy']:.3f} in {row['wall_time']:.1f}s",
                    flush=True,
                )


def _signal_table(frame, dataset: str):
    from scipy.stats import spearmanr

    from gas.stats import CONFIDENCE, kendall_tau, tau_interval

    proxy = frame[(frame.dataset == dataset) & (frame.schedule == "proxy")].set_index("genome_key")
    long = frame[(frame.dataset == dataset) & (frame.schedule == "long")].set_index("genome_key")
    common = proxy.index.intersection(long.index)
    proxy, long = proxy.loc[common], long.loc[common]
    target = long["accuracy"]
    columns = {
        "proxy accuracy": proxy["accuracy"],
        "naswot": proxy["naswot"],
        "synflow": proxy["synflow"],
        "grad_norm": proxy["grad_norm"],
        "params alone": proxy["params"],
        "FLOPs alone": proxy["flops"],
    }
    rows = []
    for signal in SIGNALS:
        values = columns[signal]
        usable = values.notna() & target.notna()
        x, y = values[usable].to_numpy(), target[usable].to_numpy()
        low, high = tau_interval(x, y)
        rows.append(
            {
                "dataset": dataset,
                "signal": signal,
                "kendall_tau": kendall_tau(x, y),
                f"tau_{CONFIDENCE:.0%}_interval": f"[{low:.2f}, {high:.2f}]",
                "spearman_rho": spearmanr(x, y).statistic,
                "n": usable.sum(),
            }
        )
    return rows, proxy, long


TARGET_TAU = 0.6  # the proxy must rank at least this well against the long schedule


def _verdict(table, dataset: str, long) -> str:
    """One line per dataset: does the proxy reach the target and beat counting params and FLOPs?"""
    taus = table[table.dataset == dataset].set_index("signal").kendall_tau
    proxy = taus["proxy accuracy"]
    reaches = "reaches" if proxy >= TARGET_TAU else "misses"
    beats = all(proxy > taus[baseline] for baseline in ("params alone", "FLOPs alone"))
    accuracy = long["accuracy"]
    return (
        f"- {dataset}: proxy τ = {proxy:.2f} {reaches} the {TARGET_TAU} target and is "
        f"{'above' if beats else 'not above'} both baselines (params {taus['params alone']:.2f}, FLOPs "
        f"{taus['FLOPs alone']:.2f}); the long schedule's accuracies span {accuracy.min():.3f}–{accuracy.max():.3f} "
        f"(std {accuracy.std():.3f}).\n"
    )


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(args.out / "fidelity.csv")
    frame["genome_key"] = frame["genome_key"].astype(str)
    datasets = [dataset for dataset in args.datasets if dataset in set(frame.dataset)]
    rows, pairs = [], {}
    for dataset in datasets:
        dataset_rows, proxy, long = _signal_table(frame, dataset)
        rows += dataset_rows
        pairs[dataset] = (proxy, long)
    table = pd.DataFrame(rows)

    panels = (("accuracy", "proxy accuracy"), ("naswot", "naswot"), ("flops", "FLOPs alone"))
    figure, axes = plt.subplots(len(datasets), len(panels), figsize=(13, 4 * len(datasets)), squeeze=False)
    for row_axes, dataset in zip(axes, datasets, strict=True):
        proxy, long = pairs[dataset]
        taus = table[table.dataset == dataset].set_index("signal").kendall_tau
        for axis, (column, signal) in zip(row_axes, panels, strict=True):
            axis.scatter(proxy[column], long["accuracy"], s=18)
            axis.set_title(f"{dataset}: {signal} (Kendall τ = {taus[signal]:.2f})")
            axis.set_xlabel(signal if column != "flops" else "FLOPs at 224px")
            axis.set_ylabel(f"accuracy after {args.long_factor}x the epochs")
    figure.tight_layout()
    figure.savefig(args.out / "fidelity.png", dpi=110)

    config = base_config(args)
    timing = (
        frame.groupby(["dataset", "schedule"])
        .agg(runs=("accuracy", "size"), mean_accuracy=("accuracy", "mean"), mean_seconds=("wall_time", "mean"))
        .reset_index()
    )
    failures = frame[frame["error"].notna() & (frame["error"].astype(str) != "")]
    command = command_line("experiments/fidelity/run.py")
    note = (
        f". {args.workers} runs side by side, one torch thread each, on a machine shared with other jobs (absolute "
        "times carry that noise; accuracies do not)."
    )
    text = (
        "# Proxy ranking fidelity\n\n"
        f"{frame.genome_key.nunique()} genomes sampled at random from the turbovit space within "
        f"{args.budget} FLOPs at 224px (seed {args.seed}), each trained on every dataset with the default proxy "
        f"(`ProxyConfig()`: {config.resolution}px, {config.train.epochs} epochs of {config.train_size} images, "
        f"batch {config.train.batch_size}, AdamW lr {config.train.lr:g}, seed {config.train.seed}) and with "
        f"{args.long_factor}x the epochs, all else equal. Each signal is ranked against the long schedule's "
        "validation accuracy; the zero-cost scores come from the proxy's model at initialisation (one batch of "
        f"{config.zero_cost_batch} training images). Params and FLOPs alone are the baselines a proxy must "
        "beat.\n\n"
        + frame_markdown(table, ".3f")
        + "\n\n"
        + "".join(_verdict(table, dataset, pairs[dataset][1]) for dataset in datasets)
        + "\nRuns and timings (one torch thread per run; wall time includes data loading and zero-cost scores):\n\n"
        + frame_markdown(timing, ".3f")
        + f"\n\nFailed runs: {len(failures)}"
        + "".join(f"\n- {row.dataset} genome {row.genome} {row.schedule}: {row.error}" for row in failures.itertuples())
        + "\n\n"
        + stamp(command, note)
        + "\n\n![scatter](fidelity.png)"
    )
    write_page(args.out, "fidelity", text)
    print(table.to_string(index=False))


def main() -> None:
    parser = harness_parser(__doc__, redraw="only redraw the table and plot from the CSV")
    parser.add_argument("--genomes", type=int, default=30, help="how many genomes to sample (default: 30)")
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px for sampling (default: 2.5G)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--datasets", default="shapes,digits", help="comma-separated (default: shapes,digits)")
    parser.add_argument("--long-factor", type=int, default=4, help="long schedule = this x the epochs (default: 4)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="runs side by side")
    parser.add_argument("--epochs", type=int, help="proxy epochs (default: ProxyConfig's); long = this x factor")
    args = parser.parse_args()
    args.datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    if not args.report_only:
        run_study(args)
    report(args)


if __name__ == "__main__":
    main()
