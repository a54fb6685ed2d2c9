"""Search efficiency: the front's hypervolume after every evaluation, gas's generator (TPE) against other samplers.

    python experiments/bench_search/run.py --evaluator zero-cost --trials 200 --seeds 5 --jobs 2
    python experiments/bench_search/run.py --evaluator train --trials 40 --seeds 3
    python experiments/bench_search/run.py ... --report-only     # redraw table, plot and summary from the CSVs

Every sampler runs through gas's own search engine (`gas.search.Engine`): it creates the study with
`make_sampler(name, seed)`, proposes (ask → sample → analytic cost → over budget: recorded as infeasible,
never evaluated; a genome already evaluated: not evaluated again) and records results. Only the sampler
differs; the space, budget, evaluator and its seed are the same. Two drivers of that engine:

    inprocess  `gas.search.search_in_process`: proposals evaluated one after another in this process; no
               Ray, so a large zero-cost run spends its time in the sampler and the evaluator only.
    ray        `gas.search.run_search`, exactly what `gas search --sampler NAME` runs (local Ray cluster).

Hypervolume. Objectives: maximise accuracy, minimise FLOPs. FLOPs are divided by the budget, so both lie
in [0, 1]; the reference point is (accuracy 0, FLOPs = the budget). The hypervolume after k evaluations
is the area that the first k evaluated (feasible, trained) trials dominate up to that point: 1.0 would be
accuracy 1 at no cost. Over-budget proposals cost no evaluation and never count.

The headline: how many evaluations random sampling needs to reach the hypervolume that a sampler reaches
after N evaluations, as a ratio to N, per seed (seed s of random against seed s of the sampler) with the
median and range over seeds. Random sampling runs `--random-trials` evaluations (default 2 x --trials);
a seed that never gets there within them is reported as '>' that many.

Writes into --out: bench_search_EVALUATOR.csv (every evaluation of every run, with the hypervolume so far),
bench_search_EVALUATOR_runs.csv (one row per run), bench_search_EVALUATOR.md and .png (mean ± std per
sampler), the studies under bench_search_EVALUATOR_studies/, and its section of SUMMARY.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from experiments.common.cli import fail, harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.workers import worker_pool
from gas import record
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.search import SAMPLERS, SearchConfig, prepare, run_search, search_in_process
from gas.stats import hypervolume_curve
from gas.study import proposals, trained_trials, trial_error
from gas.units import compact_count, parse_count

SCRIPT = "experiments/bench_search/run.py"
DEFAULTS = {"zero-cost": {"trials": 200, "seeds": 5}, "train": {"trials": 40, "seeds": 3}}
LABELS = {"tpe": "gas (TPE)", "random": "random", "nsga2": "NSGA-II", "gp": "GP"}


# ---- hypervolume -------------------------------------------------------------------------------------


def evaluations_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first evaluation count at which `curve` reaches `target`, or None if it never does."""
    return next((count for count, value in enumerate(curve, start=1) if value >= target - 1e-12), None)


# ---- one run: a sampler and a seed -------------------------------------------------------------------


@dataclass(frozen=True)
class RunTask:
    """One search to run: a sampler, a seed, and the gas search configuration that says the rest."""

    sampler: str
    seed: int
    trials: int
    config: SearchConfig
    driver: str
    threads: int


@dataclass
class RunResult:
    """What a run leaves for the summary, read back from its study."""

    sampler: str
    seed: int
    evaluations: list[tuple[float, float] | None]  # (accuracy, FLOPs) per trained trial, failures as None
    trial_numbers: list[int]
    proposals: int
    feasible: int
    elapsed: float
    driver_seconds: float
    stopped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


def completion_order(study: optuna.Study) -> list[FrozenTrial]:
    """Trained trials in the order their results came back (proposal order when they ran one at a time)."""
    return sorted(trained_trials(study), key=lambda trial: (trial.datetime_complete, trial.number))


def run_one(task: RunTask) -> RunResult:
    """Run one search from an empty study and read its evaluations back from the study."""
    import torch

    torch.set_num_threads(task.threads)
    # GP warns on every trial that it samples the depth-dependent parameters independently.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage_file = Path(task.config.storage.removeprefix("sqlite:///"))
    storage_file.parent.mkdir(parents=True, exist_ok=True)
    storage_file.unlink(missing_ok=True)  # a fresh search, not a resumed one
    started = time.perf_counter()
    outcome = run_search(task.config) if task.driver == "ray" else search_in_process(task.config)
    study, driver_seconds, stopped = outcome.study, outcome.driver_seconds, outcome.stopped_reason
    elapsed = time.perf_counter() - started
    trained = completion_order(study)
    proposed = proposals(study)
    return RunResult(
        sampler=task.sampler,
        seed=task.seed,
        evaluations=[(t.values[0], t.values[1]) if t.state == TrialState.COMPLETE else None for t in trained],
        trial_numbers=[t.number for t in trained],
        proposals=len(proposed),
        feasible=sum(bool(record.trial_record(t).feasible) for t in proposed),
        elapsed=elapsed,
        driver_seconds=driver_seconds,
        stopped_reason=stopped,
        errors=[trial_error(t) for t in trained if t.state == TrialState.FAIL],
    )


def run_all(tasks: list[RunTask], jobs: int) -> list[RunResult]:
    """Runs one after another, or `jobs` at a time in fresh processes (each run is independent)."""
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            print(f"running {task.sampler} seed {task.seed} ({task.trials} evaluations)", flush=True)
            results.append(run_one(task))
        return results
    with worker_pool(jobs) as pool:
        return list(pool.map(run_one, tasks))


# ---- summary -----------------------------------------------------------------------------------------


def checkpoints_for(trials: int) -> list[int]:
    """Evaluation counts at which the ratio is reported: an eighth, a quarter, half and all of the run."""
    return sorted({max(1, round(trials * fraction)) for fraction in (0.125, 0.25, 0.5, 1.0)})


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def ratio_text(counts: Sequence[int | None], n: int, horizon: int) -> str:
    """Median [min–max] of evaluations-needed / n over seeds; seeds that never got there read '>horizon/n'."""
    ratios = sorted(math.inf if count is None else count / n for count in counts)
    median = statistics.median(ratios)

    def shown(value: float) -> str:
        return f">{horizon / n:.2f}" if math.isinf(value) else f"{value:.2f}"

    return f"{shown(median)} [{shown(ratios[0])}–{shown(ratios[-1])}]"


def summarise(
    curves: dict[str, dict[int, list[float]]], trials: int, random_trials: int
) -> tuple[pd.DataFrame, list[str]]:
    """One row per sampler and checkpoint; and headline sentences for the markdown."""
    rows, headlines = [], []
    random_curves = curves.get("random", {})
    for sampler, by_seed in curves.items():
        for n in checkpoints_for(trials):
            at_n = [curve[n - 1] for curve in by_seed.values() if len(curve) >= n]
            if not at_n:
                continue
            mean, std = mean_std(at_n)
            row = {"sampler": LABELS.get(sampler, sampler), "evaluations": n, "hv_mean": mean, "hv_std": std}
            if sampler != "random" and random_curves:
                paired = [
                    evaluations_to_reach(random_curves[seed], curve[n - 1])
                    for seed, curve in by_seed.items()
                    if seed in random_curves and len(curve) >= n
                ]
                length = min(len(curve) for curve in random_curves.values())
                mean_random = [statistics.fmean(curve[k] for curve in random_curves.values()) for k in range(length)]
                on_means = evaluations_to_reach(mean_random, mean)
                needed = ", ".join("-" if count is None else str(count) for count in paired)
                row["random_evals_per_seed"] = f"[{needed}]"  # brackets: a list, not a number, in the table
                row["random_x_median_range"] = ratio_text(paired, n, random_trials)
                row["random_x_of_means"] = f">{length / n:.2f}" if on_means is None else f"{on_means / n:.2f}"
                row["seeds_reached"] = f"{sum(count is not None for count in paired)}/{len(paired)}"
                if n == trials:
                    headlines.append(
                        f"- {LABELS.get(sampler, sampler)}: random sampling needs {row['random_x_median_range']} "
                        f"times the {n} evaluations (median [range] over {len(paired)} seed"
                        f"{'' if len(paired) == 1 else 's'}; on the mean curves "
                        f"{row['random_x_of_means']}) to reach the hypervolume it reaches after {n}."
                    )
            rows.append(row)
    return pd.DataFrame(rows), headlines


def plot(curves: dict[str, dict[int, list[float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for sampler, by_seed in curves.items():
        length = min(len(curve) for curve in by_seed.values())
        values = np.array([curve[:length] for curve in by_seed.values()])
        mean, std = values.mean(axis=0), values.std(axis=0)
        x = np.arange(1, length + 1)
        (line,) = axes.plot(x, mean, label=f"{LABELS.get(sampler, sampler)} ({len(by_seed)} seeds)")
        axes.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("evaluations (feasible genomes trained or scored)")
    axes.set_ylabel("hypervolume (area dominated in accuracy x FLOPs/budget)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ---- main --------------------------------------------------------------------------------------------


def record_runs(
    results: list[RunResult], budget: float, out: Path, name: str
) -> tuple[dict[str, dict[int, list[float]]], pd.DataFrame]:
    """Write every evaluation and every run to CSV; return the hypervolume curves and the run table."""
    curve_rows, run_rows = [], []
    curves: dict[str, dict[int, list[float]]] = {}
    for result in results:
        curve = hypervolume_curve(result.evaluations, budget)
        curves.setdefault(result.sampler, {})[result.seed] = curve
        for index, (point, number, value) in enumerate(
            zip(result.evaluations, result.trial_numbers, curve, strict=True), start=1
        ):
            curve_rows.append(
                {
                    "sampler": result.sampler,
                    "seed": result.seed,
                    "evaluation": index,
                    "trial": number,
                    "accuracy": None if point is None else point[0],
                    "flops": None if point is None else point[1],
                    "hypervolume": value,
                }
            )
        run_rows.append(
            {
                "sampler": result.sampler,
                "seed": result.seed,
                "evaluations": len(result.evaluations),
                "failed": len(result.errors),
                "proposals": result.proposals,
                "feasible_share": result.feasible / max(result.proposals, 1),
                "final_hypervolume": curve[-1] if curve else 0.0,
                "elapsed_s": result.elapsed,
                "driver_s": result.driver_seconds,
                "stopped_reason": result.stopped_reason or "",
                "first_error": result.errors[0] if result.errors else "",
            }
        )
    write_csv(out / f"{name}.csv", pd.DataFrame(curve_rows))
    runs = pd.DataFrame(run_rows)
    write_csv(out / f"{name}_runs.csv", runs)
    return curves, runs


def read_back(out: Path, name: str, samplers: Sequence[str]) -> tuple[dict[str, dict[int, list[float]]], pd.DataFrame]:
    """The curves and run table of an earlier run, from the CSVs `record` wrote, samplers in the given order."""
    evaluations = pd.read_csv(out / f"{name}.csv").sort_values(["sampler", "seed", "evaluation"])
    curves: dict[str, dict[int, list[float]]] = {}
    for sampler in samplers:
        for seed, rows in evaluations[evaluations.sampler == sampler].groupby("seed"):
            curves.setdefault(sampler, {})[int(seed)] = rows["hypervolume"].tolist()
    if not curves:
        raise ValueError(f"none of the samplers {' '.join(samplers)} is in it")
    runs = pd.read_csv(out / f"{name}_runs.csv")
    return curves, runs[runs.sampler.isin(curves)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness_parser(__doc__, redraw="redraw table, plot and summary from the CSVs")
    parser.add_argument("--evaluator", choices=sorted(DEFAULTS), default="zero-cost", help="(default: zero-cost)")
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px (default: 2.5G)")
    parser.add_argument("--space", default="turbovit", help="search space (default: turbovit)")
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random", "nsga2", "gp"], choices=SAMPLERS)
    parser.add_argument("--trials", type=int, help="evaluations per run (default: 200 zero-cost, 40 train)")
    parser.add_argument("--random-trials", type=int, help="evaluations per random run (default: 2 x --trials)")
    parser.add_argument("--seeds", type=int, help="seeds 0..K-1 per sampler (default: 5 zero-cost, 3 train)")
    parser.add_argument("--driver", choices=["inprocess", "ray"], help="default: inprocess for zero-cost, else ray")
    parser.add_argument("--jobs", type=int, default=1, help="inprocess runs at a time, one process each (1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per evaluation (default: 1)")
    parser.add_argument("--dataset", help="proxy dataset (default: gas's)")
    parser.add_argument("--resolution", type=int, help="proxy resolution in px (default: gas's)")
    parser.add_argument("--epochs", type=int, help="proxy epochs (train evaluator; default: gas's)")
    parser.add_argument("--train-size", type=int, help="proxy training images (default: gas's)")
    parser.add_argument("--val-size", type=int, help="proxy validation images (default: gas's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        budget = parse_count(args.budget)
    except GasError as error:
        return fail("bench_search", str(error))
    trials = args.trials or DEFAULTS[args.evaluator]["trials"]
    random_trials = args.random_trials or 2 * trials
    seeds = range(args.seeds or DEFAULTS[args.evaluator]["seeds"])
    driver = args.driver or ("inprocess" if args.evaluator == "zero-cost" else "ray")
    overrides = {
        "dataset": args.dataset,
        "resolution": args.resolution,
        "epochs": args.epochs,
        "train_size": args.train_size,
        "val_size": args.val_size,
    }
    name = f"bench_search_{args.evaluator}"
    out = args.out.resolve()
    tasks = []
    for sampler in args.samplers:
        for seed in seeds:
            proxy = ProxyConfig(evaluator=args.evaluator).with_overrides(
                seed=seed, **{key: value for key, value in overrides.items() if value is not None}
            )
            count = random_trials if sampler == "random" else trials
            config = SearchConfig(
                budget=budget,
                space=args.space,
                study=f"{name}-{sampler}-s{seed}",
                storage=f"sqlite:///{out / f'{name}_studies' / f'{sampler}-s{seed}.db'}",
                trials=count,
                sampler=sampler,
                seed=seed,
                proxy=proxy,
                cpus_per_trial=args.threads,
                progress=False,
                replicates=None,  # one seed per trial, as the committed figures were measured
            )
            tasks.append(RunTask(sampler, seed, count, config, driver, args.threads))
    if args.report_only:
        try:
            curves, runs = read_back(out, name, args.samplers)
        except (OSError, KeyError, ValueError) as error:
            return fail("bench_search", f"cannot redraw from {out / name}.csv: {error}")
    else:
        try:
            prepare(tasks[0].config)
            results = run_all(tasks, args.jobs if driver == "inprocess" else 1)
        except GasError as error:
            return fail("bench_search", str(error))
        curves, runs = record_runs(results, budget, out, name)
    table, headlines = summarise(curves, trials, random_trials)
    table = table.fillna("")  # random's own rows have no ratio to random
    write_csv(out / f"{name}_summary.csv", table)
    title = f"{args.space}, budget {compact_count(budget)} FLOPs, {args.evaluator} evaluator, {driver} driver"
    plot(curves, out / f"{name}.png", f"Front hypervolume vs evaluations\n{title}")

    command = command_line(SCRIPT, argv)
    proxy = tasks[0].config.proxy
    setup = (
        f"{args.space} space, budget {compact_count(budget)} FLOPs at 224px, evaluator `{args.evaluator}` "
        f"({proxy.dataset}, {proxy.resolution}px"
        + (f", {proxy.train.epochs} epochs" if args.evaluator == "train" else "")
        + f"), {len(seeds)} seeds, {trials} evaluations per run ({random_trials} for random), {driver} driver."
        + (
            " Here 'accuracy' is the normalised NASWOT score at initialisation, the objective this evaluator gives"
            " the search."
            if args.evaluator == "zero-cost"
            else ""
        )
    )
    per_run = runs.groupby("sampler")[["feasible_share", "elapsed_s", "driver_s", "failed"]].mean()
    body = (
        f"Hypervolume of the accuracy/FLOPs front after every evaluation: maximise accuracy, minimise FLOPs/budget, "
        f"reference point (accuracy 0, FLOPs = budget); 1.0 would be accuracy 1 at no cost. Every sampler runs "
        f"through gas's generator (same space, budget check, deduplication and evaluator); only the sampler "
        f"differs. `random_x_median_range`: evaluations random sampling needs to reach the hypervolume the sampler "
        f"reaches after `evaluations`, divided by `evaluations`, paired by seed: median [min–max]; '>' means not "
        f"reached within random's {random_trials} evaluations.\n\n"
        f"Setup: {setup}\n\n"
        + ("\n".join(headlines) + "\n\n" if headlines else "")
        + frame_markdown(table, ".4f")
        + "\n\nPer run, mean over seeds:\n\n"
        + frame_markdown(per_run, ".3g", index=True)
        + f"\n\n![hypervolume]({name}.png)"
    )
    write_page(
        out,
        name,
        f"# Search efficiency ({args.evaluator} evaluator)\n\n{body}\n\n{stamp(command)}",
        f"## Search efficiency, {args.evaluator} evaluator\n\n"
        + ("\n".join(headlines) + "\n\n" if headlines else "")
        + f"Setup: {setup} Table: [{name}.md]({name}.md); "
        f"curves: [{name}.csv]({name}.csv).\n\n![hypervolume vs evaluations]({name}.png)\n\n{stamp(command)}",
    )
    print(frame_markdown(table, ".4f"))
    print("\n".join(headlines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
