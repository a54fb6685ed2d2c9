"""Latency-aware search against the FLOPs-budget search: the best network each finds at the reference's latency.

    python experiments/bench_latency_search/run.py --worker-seconds 540 --seeds 3 --jobs 2
    python experiments/bench_latency_search/run.py --report-only     # redraw table and summary from the CSVs

First the `turbovit` reference's latency is measured on this CPU (one thread, batch 1, fp32, --runs runs);
that is the limit L. Two arms then search the turbovit space on the default proxy, each for the same
worker time, one thread per run. Worker time is all the work a search does for its results: the trials'
own wall time (as in bench_early_stop) and, for the latency arm, the driver's measurement of every trained
network and the latency model's build. Each latency run builds its model from nothing, in a cache of its
own, as a search on a device gas has not timed before does; so no run's model learns from another's.

    flops     `gas search --budget 2.5G`: FLOPs within the budget, latency never looked at
    latency   `gas search --max-latency L`: every proposal's latency predicted before it trains, every trained
              trial's measured after, only those measured under L kept feasible, and the front taken on
              measured latency (the default of a latency-limited search)

Both arms are scored alike, after all searches have ended, on an otherwise idle machine: their trained
trials, most accurate first, are measured again end to end (--runs runs) until one is at or under L; its
proxy accuracy is the arm's "best at L". The `turbovit` reference is trained on the same proxy with the
same seeds, so the figures compare at the proxy's fidelity; this harness trains nothing on a longer
schedule (bench_quality does that for a study's picks).

Writes into --out: bench_latency_search.csv (one row per arm and seed), bench_latency_search_trials.csv
(every measurement of the scoring), bench_latency_search.md, the studies under bench_latency_search_studies/
and its section of SUMMARY.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import os
import shutil
import time
from collections.abc import Sequence

import optuna
import pandas as pd
from optuna.trial import TrialState

from experiments.common.cli import harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.worker_time import measure_seconds, search_for, worker_seconds
from experiments.common.workers import worker_pool
from gas import record
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig, evaluate
from gas.latency import LatencySettings, measure
from gas.search import SearchConfig, prepare
from gas.search.latency_limit import LatencyTarget
from gas.space import load_genome
from gas.stats import welch_p
from gas.storage import open_study
from gas.study import trained_trials
from gas.units import format_count, parse_count

SCRIPT = "experiments/bench_latency_search/run.py"
NAME = "bench_latency_search"
ARMS = ("flops", "latency")
LABELS = {"flops": "FLOPs budget", "latency": "latency limit", "turbovit": "turbovit reference"}
SETTINGS = LatencySettings(device="cpu", threads=1, batch=1, dtype="fp32")
MAX_MEASURED = 12  # trials measured per run while looking for one at or under the limit


def arm_config(arm: str, seed: int, limit: float, args: argparse.Namespace, out: Path) -> SearchConfig:
    return SearchConfig(
        budget=parse_count(args.budget) if arm == "flops" else None,
        study=f"{NAME}-{arm}-s{seed}",
        storage=f"sqlite:///{out / f'{NAME}_studies' / f'{arm}-s{seed}.db'}",
        trials=1,
        seed=seed,
        proxy=ProxyConfig().with_overrides(device="cpu", seed=seed),
        progress=False,
        replicates=None,  # one seed per trial, as the committed figures were measured
        latency=LatencyTarget(SETTINGS, limit, runs=args.runs) if arm == "latency" else None,
        objective="latency" if arm == "latency" else "flops",
    )


def own_cache(shared: Path, run: str) -> Path:
    """An empty cache folder for one run, sharing only the decoded datasets of `shared`."""
    own = shared / "runs" / run
    shutil.rmtree(own, ignore_errors=True)
    own.mkdir(parents=True)
    (shared / "datasets").mkdir(parents=True, exist_ok=True)
    (own / "datasets").symlink_to(shared / "datasets", target_is_directory=True)
    return own


def run_arm(task: tuple[str, int, SearchConfig, float, Path]) -> dict:
    """One arm and seed from an empty study (and, under a latency target, no latency model), until its work has
    used the worker time; `task` ends with the shared cache folder."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    arm, seed, config, seconds, cache = task
    storage_file = Path(config.storage.removeprefix("sqlite:///"))
    storage_file.parent.mkdir(parents=True, exist_ok=True)
    storage_file.unlink(missing_ok=True)
    os.environ["GAS_CACHE_DIR"] = str(cache)
    build = 0.0
    if config.latency is not None:
        os.environ["GAS_CACHE_DIR"] = str(own_cache(cache, f"{arm}-s{seed}"))
        started = time.perf_counter()
        prepare(config)  # the datasets are cached already: this is the latency model's build
        build = time.perf_counter() - started
    study = search_for(config, seconds - build).study
    trained = trained_trials(study)
    measuring = measure_seconds(study)
    spent = build + worker_seconds(study)
    print(
        f"{arm} seed {seed}: {len(trained)} trials, {spent:.0f} worker-s ({build + measuring:.0f} on latency)",
        flush=True,
    )
    return {
        "arm": arm,
        "seed": seed,
        "trials": len(trained),
        "worker_s": spent,
        "build_s": build,
        "measure_s": measuring,
    }


def train_reference(seed: int) -> dict:
    """The turbovit reference on the search's proxy, at one seed."""
    result = evaluate(load_genome("turbovit"), ProxyConfig().with_overrides(device="cpu", seed=seed))
    return {"arm": "turbovit", "seed": seed, "best_accuracy": result.accuracy}


def best_at_limit(arm: str, seed: int, study: optuna.Study, limit: float, runs: int) -> tuple[dict, list[dict]]:
    """The most accurate trained trial measured at or under `limit`, measuring down the accuracy order."""
    complete = sorted(
        (t for t in trained_trials(study) if t.state == TrialState.COMPLETE),
        key=lambda t: t.values[0],
        reverse=True,
    )
    measured = []
    for trial in complete[:MAX_MEASURED]:
        recorded = record.trial_record(trial)
        genome = load_genome(recorded.genome)
        seconds = measure(genome, SETTINGS, runs).median
        measured.append(
            {
                "arm": arm,
                "seed": seed,
                "trial": trial.number,
                "accuracy": trial.values[0],
                "flops": recorded.flops,
                "latency_s": seconds,
                "searched_latency_s": recorded.measured_latency,
            }
        )
        if seconds <= limit:
            return {"best_trial": trial.number, "best_accuracy": trial.values[0], "best_latency_s": seconds}, measured
    return {"best_trial": None, "best_accuracy": None, "best_latency_s": None}, measured


def accounting_text(runs: pd.DataFrame) -> str:
    """What the worker-seconds counted, and under what load; nothing for runs recorded before either was kept
    (their worker-seconds were the trials' wall time alone, the latency arm's build and measurements on top)."""
    if "build_s" not in runs:
        return ""
    return (
        "Worker-seconds count the trials' wall time and, for the latency arm, the latency model's build (each "
        "run builds its own, from nothing) and the driver's measurement of every trained network "
        "(of_which_build_s, of_which_measure_s). Worker time and latency depend on what else the machine ran: "
        f"its load average (1 min) was {runs.load_start.iloc[0]:.1f} at the start and "
        f"{runs.load_end.iloc[0]:.1f} at the end. "
    )


def summarise(runs: pd.DataFrame, limit: float) -> tuple[pd.DataFrame, list[str]]:
    table = []
    for arm in (*ARMS, "turbovit"):
        rows = runs[runs.arm == arm]
        if rows.empty:
            continue  # an arm left out by --arms
        found = rows.best_accuracy.dropna()
        table.append(
            {
                "arm": LABELS[arm],
                "seeds": len(rows),
                "best_at_limit_mean": found.mean() if len(found) else None,
                "best_at_limit_std": found.std(ddof=1) if len(found) > 1 else None,
                "found": f"{len(found)}/{len(rows)}",
                "trials_mean": rows.trials.mean() if arm != "turbovit" else None,
                "worker_s_mean": rows.worker_s.mean() if arm != "turbovit" else None,
                "of_which_build_s": rows["build_s"].mean() if arm != "turbovit" and "build_s" in rows else None,
                "of_which_measure_s": rows["measure_s"].mean() if arm != "turbovit" and "measure_s" in rows else None,
            }
        )
    headlines, p_values = [], {}
    latency = runs[runs.arm == "latency"].best_accuracy.dropna()
    for other in ("flops", "turbovit"):
        against = runs[runs.arm == other].best_accuracy.dropna()
        p = welch_p(latency, against)
        if p is not None:
            p_values[other] = p
            headlines.append(
                f"- Latency-aware search against {LABELS[other]}: {100 * (latency.mean() - against.mean()):+.2f} "
                f"points of proxy accuracy at or under {1000 * limit:.1f} ms (Welch's t-test p = "
                f"{p_values[other]:.3f}, {len(latency)} and {len(against)} seeds)."
            )
    reference = runs[runs.arm == "turbovit"].best_accuracy.mean()
    gap = 100 * (latency.mean() - reference) if len(latency) else float("nan")
    met = gap >= 1.0 and p_values.get("turbovit", 1.0) < 0.05
    headlines.append(
        f"- Goal (at the reference's latency, at least +1 point over it beyond seed noise, p < 0.05): "
        f"{'met' if met else 'missed'} ({gap:+.2f} points)."
    )
    # Runs recorded before the build and measurements were counted leave those columns empty: no column then.
    return pd.DataFrame(table).dropna(axis=1, how="all"), headlines


def arms_text(arms: set[str], budget: str) -> str:
    """What each arm that ran searched under, in words."""
    texts = {
        "flops": f"the FLOPs arm within {format_count(parse_count(budget))} FLOPs",
        "latency": "the latency arm under the limit alone",
    }
    return ", ".join(text for arm, text in texts.items() if arm in arms)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness_parser(__doc__, redraw="redraw from the CSVs; measure nothing")
    parser.add_argument("--budget", default="2.5G", help="the FLOPs arm's budget at 224px (default: 2.5G)")
    parser.add_argument("--worker-seconds", type=float, default=540.0, help="worker time per run (default: 540)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (default: 3)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="(default: flops latency)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency measurement (default: 20)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    try:
        if args.report_only:
            runs = pd.read_csv(out / f"{NAME}.csv")
            limit = float(runs.limit_s.iloc[0])
        else:
            cache = Path(os.environ.setdefault("GAS_CACHE_DIR", str(out / f"{NAME}_studies" / "cache"))).resolve()
            load_start = os.getloadavg()[0]
            limit = measure(load_genome("turbovit"), SETTINGS, 2 * args.runs).median
            print(f"turbovit reference: {1000 * limit:.1f} ms on {SETTINGS.describe()}", flush=True)
            tasks = [
                (arm, seed, arm_config(arm, seed, limit, args, out), args.worker_seconds, cache)
                for seed in range(args.seeds)
                for arm in args.arms
            ]
            # Bad input in one line, and the datasets cached before any run's clock starts; each latency run
            # builds its own latency model, on its own clock.
            prepare(arm_config("flops", 0, limit, args, out))
            with worker_pool(args.jobs, threads=1) as pool:
                searched = list(pool.map(run_arm, tasks))
                references = list(pool.map(train_reference, range(args.seeds)))
            rows, measured = [], []
            for (arm, seed, config, _, _), result in zip(tasks, searched, strict=True):
                study = open_study(config.study_name, config.storage)
                best, tried = best_at_limit(arm, seed, study, limit, args.runs)
                rows.append({**result, **best})
                measured += tried
            runs = pd.DataFrame([*rows, *references]).assign(
                limit_s=limit, load_start=load_start, load_end=os.getloadavg()[0]
            )
            write_csv(out / f"{NAME}.csv", runs)
            write_csv(out / f"{NAME}_trials.csv", pd.DataFrame(measured))
    except (GasError, OSError) as error:
        print(f"bench_latency_search: error: {error}", file=sys.stderr)
        return 2
    table, headlines = summarise(runs, limit)
    markdown = "\n".join(
        [
            "## Latency-aware search against the FLOPs budget, at equal worker time",
            "",
            stamp(command_line(SCRIPT, argv)),
            "",
            f"Limit: the `turbovit` reference's measured latency, {1000 * limit:.1f} ms ({SETTINGS.describe()}). "
            f"Each arm searched until its {'work' if 'build_s' in runs else 'trials'} had used "
            f"{runs.worker_s.dropna().min():.0f}+ worker-seconds on the default proxy (one thread per run, "
            f"{args.jobs} runs at a time): "
            + arms_text(set(runs.arm), args.budget)
            + ". "
            + accounting_text(runs)
            + "Each run's 'best at limit' is its most accurate trained trial re-measured at or under the limit "
            "after all searches ended; the reference row is turbovit trained on the same proxy and seeds. Proxy "
            "accuracy only: nothing here trains on a longer schedule.",
            "",
            frame_markdown(table, ".3f"),
            "",
            *headlines,
        ]
    )
    write_page(out, NAME, markdown, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
