"""Early stopping against full fidelity: the front's hypervolume per worker-second, at equal worker time.

    python experiments/bench_early_stop/run.py --worker-seconds 720 --seeds 3 --jobs 2
    python experiments/bench_early_stop/run.py --report-only     # redraw table, plot and summary from the CSV

Three arms search the default space and budget on the default proxy data, each for the same worker time:

    es      gas's TPE with --early-stop (rungs 1, 3, ... epochs, the best third by Pareto rank goes on)
    full    gas's TPE, every feasible genome trained for the whole longest schedule (--max-epochs)
    random  random sampling, every genome trained for the whole longest schedule

All arms train on the same longest schedule, so a fully trained trial means the same in each. Worker
time is the sum of the trials' own wall time (training, evaluation, data loading), stopped and failed
trials included; an arm keeps proposing until its trials have used `--worker-seconds`. Hypervolume is
that of bench_search (accuracy against FLOPs divided by the budget, reference point accuracy 0 at the
budget), over fully trained trials only: a stopped trial's partial accuracy never counts.

Headlines: the worker-seconds at which each early-stopping run first reaches the final hypervolume of
full-fidelity TPE with the same seed (goal: at most a third of the budget), and the worker-seconds random
sampling needs to reach early stopping's final hypervolume (goal: three times as many; random runs only
the same budget, so a run that never gets there reads '>' the budget).

Writes into --out: bench_early_stop.csv (every trained trial of every run, with worker-seconds so far and
the hypervolume so far), bench_early_stop.md and .png, the studies under bench_early_stop_studies/ and its
section of SUMMARY.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import math
import statistics
from collections.abc import Sequence

import optuna
import pandas as pd
from optuna.trial import TrialState

from experiments.common.cli import harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.worker_time import search_for
from experiments.common.workers import worker_pool
from gas import record
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.search import SearchConfig, prepare
from gas.search.early_stop import DEFAULT_ETA, EarlyStopping
from gas.stats import hypervolume
from gas.study import trained_trials
from gas.units import compact_count, parse_count

SCRIPT = "experiments/bench_early_stop/run.py"
NAME = "bench_early_stop"
ARMS = ("es", "full", "random")
LABELS = {"es": "TPE + early stopping", "full": "TPE, full fidelity", "random": "random, full fidelity"}


def arm_config(arm: str, seed: int, args: argparse.Namespace, out: Path) -> SearchConfig:
    overrides = {"seed": seed, "epochs": args.max_epochs}
    if args.train_size:
        overrides["train_size"] = args.train_size
    return SearchConfig(
        budget=parse_count(args.budget),
        study=f"{NAME}-{arm}-s{seed}",
        storage=f"sqlite:///{out / f'{NAME}_studies' / f'{arm}-s{seed}.db'}",
        trials=1,
        sampler="random" if arm == "random" else "tpe",
        seed=seed,
        proxy=ProxyConfig().with_overrides(device="cpu", **overrides),
        progress=False,
        replicates=None,  # one seed per trial, as the committed figures were measured
        early_stop=EarlyStopping(max_epochs=args.max_epochs, eta=args.eta) if arm == "es" else None,
    )


def run_arm(task: tuple[str, int, SearchConfig, float]) -> list[dict]:
    """One arm and seed from an empty study, until its trials have used the worker time; one row per trial."""
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    arm, seed, config, budget_seconds = task
    storage_file = Path(config.storage.removeprefix("sqlite:///"))
    storage_file.parent.mkdir(parents=True, exist_ok=True)
    storage_file.unlink(missing_ok=True)
    outcome = search_for(config, budget_seconds)
    rows, spent, done = [], 0.0, []
    ordered = sorted(trained_trials(outcome.study), key=lambda t: (t.datetime_complete, t.number))
    for trial in ordered:
        recorded = record.trial_record(trial)
        spent += recorded.wall_time or 0.0
        if trial.state == TrialState.COMPLETE:
            done.append((trial.values[0], trial.values[1]))
        rows.append(
            {
                "arm": arm,
                "seed": seed,
                "trial": trial.number,
                "state": "stopped" if recorded.is_stopped else trial.state.name.lower(),
                "epochs": recorded.epochs_completed,
                "accuracy": trial.values[0] if trial.state == TrialState.COMPLETE else None,
                "flops": recorded.flops,
                "wall_time": recorded.wall_time,
                "worker_seconds": spent,
                "hypervolume": hypervolume(done, config.budget),
            }
        )
    print(f"{arm} seed {seed}: {len(rows)} trials, {len(done)} fully trained, {spent:.0f} worker-s", flush=True)
    return rows


def hypervolume_at(rows: pd.DataFrame, seconds: float) -> float:
    """A run's hypervolume after `seconds` of worker time (0 before its first trained trial)."""
    before = rows[rows.worker_seconds <= seconds]
    return float(before.hypervolume.iloc[-1]) if len(before) else 0.0


def seconds_to_reach(rows: pd.DataFrame, target: float) -> float | None:
    reached = rows[rows.hypervolume >= target - 1e-12]
    return float(reached.worker_seconds.iloc[0]) if len(reached) else None


def summarise(trials: pd.DataFrame, budget_seconds: float) -> tuple[pd.DataFrame, list[str]]:
    """Per arm: final hypervolume and trial counts (mean ± std over seeds); headline sentences for the goals."""
    rows = []
    for arm in ARMS:
        runs = [group for _, group in trials[trials.arm == arm].groupby("seed")]
        if not runs:
            continue
        finals = [float(run.hypervolume.iloc[-1]) for run in runs]
        rows.append(
            {
                "arm": LABELS[arm],
                "seeds": len(runs),
                "final_hv_mean": statistics.fmean(finals),
                "final_hv_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                "trials_mean": statistics.fmean(len(run) for run in runs),
                "fully_trained_mean": statistics.fmean(int((run.state == "complete").sum()) for run in runs),
                "worker_s_mean": statistics.fmean(float(run.worker_seconds.iloc[-1]) for run in runs),
            }
        )
    headlines = []
    by_seed = {arm: dict(iter(trials[trials.arm == arm].groupby("seed"))) for arm in ARMS}
    fractions, ratios = [], []
    for seed, es in by_seed["es"].items():
        if seed in by_seed["full"]:
            target = float(by_seed["full"][seed].hypervolume.iloc[-1])
            reached = seconds_to_reach(es, target)
            fractions.append(math.inf if reached is None else reached / budget_seconds)
        if seed in by_seed["random"]:
            target = float(es.hypervolume.iloc[-1])
            random_run = by_seed["random"][seed]
            reached = seconds_to_reach(random_run, target)
            es_reached = seconds_to_reach(es, target) or budget_seconds
            # Not reached within its own worker time: all that is known is a lower bound, marked negative.
            bound = float(random_run.worker_seconds.iloc[-1]) / es_reached
            ratios.append(-bound if reached is None else reached / es_reached)

    def shown(values: list[float], prefix: str) -> str:
        return ", ".join(
            f">{prefix}" if math.isinf(value) else f">{-value:.2f}" if value < 0 else f"{value:.2f}" for value in values
        )

    if fractions:
        met = sum(value <= 1 / 3 for value in fractions)
        headlines.append(
            f"- Early stopping reaches full-fidelity TPE's final hypervolume (same seed) after these shares of the "
            f"worker time: {shown(fractions, '1')} (goal: at most 0.33; met on {met} of {len(fractions)} seeds)."
        )
    if ratios:
        met = sum(abs(value) >= 3 for value in ratios)
        headlines.append(
            "- Random sampling needs these multiples of early stopping's worker-seconds to reach its final "
            f"hypervolume: {shown(ratios, 'budget')} ('>x': not reached within random's own worker time, so only "
            f"a lower bound; goal: at least 3x, shown on {met} of {len(ratios)} seeds)."
        )
    return pd.DataFrame(rows), headlines


def plot(trials: pd.DataFrame, budget_seconds: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, budget_seconds, 200)
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange", "tab:grey"), strict=True):
        runs = [group for _, group in trials[trials.arm == arm].groupby("seed")]
        if not runs:
            continue
        curves = np.array([[hypervolume_at(run, seconds) for seconds in grid] for run in runs])
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        axes.plot(grid, mean, color=colour, label=f"{LABELS[arm]} ({len(runs)} seeds)")
        axes.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.15)
    axes.set_xlabel("worker-seconds")
    axes.set_ylabel("hypervolume of fully trained trials")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness_parser(__doc__, redraw="redraw from the CSV; train nothing")
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px (default: 2.5G)")
    parser.add_argument("--worker-seconds", type=float, default=720.0, help="worker time per run (default: 720)")
    parser.add_argument("--max-epochs", type=int, default=9, help="the longest schedule, every arm (default: 9)")
    parser.add_argument("--eta", type=int, default=DEFAULT_ETA, help=f"early stopping's η (default: {DEFAULT_ETA})")
    parser.add_argument("--train-size", type=int, help="training images (default: the proxy's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (default: 3)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    budget = parse_count(args.budget)
    if args.report_only:
        try:
            trials = pd.read_csv(out / f"{NAME}.csv")
        except OSError as error:
            print(f"bench_early_stop: error: cannot read {out / f'{NAME}.csv'}: {error.strerror}", file=sys.stderr)
            return 2
    else:
        tasks = [
            (arm, seed, arm_config(arm, seed, args, out), args.worker_seconds)
            for seed in range(args.seeds)
            for arm in args.arms
        ]
        try:
            prepare(tasks[0][2])
        except GasError as error:
            print(f"bench_early_stop: error: {error}", file=sys.stderr)
            return 2
        if args.jobs <= 1:
            results = [run_arm(task) for task in tasks]
        else:
            with worker_pool(args.jobs, threads=1) as pool:
                results = list(pool.map(run_arm, tasks))
        trials = pd.DataFrame([row for rows in results for row in rows])
        write_csv(out / f"{NAME}.csv", trials)
    budget_seconds = float(trials.groupby(["arm", "seed"]).worker_seconds.max().min())
    budget_seconds = max(budget_seconds, args.worker_seconds if not args.report_only else 0.0)
    table, headlines = summarise(trials, budget_seconds)
    title = f"turbovit, {compact_count(budget)} FLOPs, longest schedule {args.max_epochs} epochs"
    plot(trials, budget_seconds, out / f"{NAME}.png", title)
    markdown = "\n".join(
        [
            "## Early stopping against full fidelity, at equal worker time",
            "",
            stamp(command_line(SCRIPT, argv)),
            "",
            f"Each arm searched until its trials had used {budget_seconds:.0f} worker-seconds (one thread per "
            f"run, {args.jobs} runs at a time), on the default proxy data "
            f"({f'{args.train_size} training images, ' if args.train_size else ''}shapes at 32px) with a longest "
            "schedule of "
            f"{args.max_epochs} epochs (early stopping: η = {args.eta}, rungs "
            f"{', '.join(map(str, EarlyStopping(args.max_epochs, args.eta).rungs))}). Hypervolume counts fully "
            "trained trials only.",
            "",
            frame_markdown(table, ".3f"),
            "",
            *headlines,
            "",
            f"![hypervolume against worker-seconds]({NAME}.png)",
        ]
    )
    write_page(out, NAME, markdown, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
