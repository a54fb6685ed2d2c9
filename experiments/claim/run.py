"""The claim: each default search's best, by seed mean, against `turbovit` and Hiera-T scaled, on the test split.

    python experiments/claim/run.py --worker-seconds 1200 --searches 3 --seeds 3 --jobs 2
    python experiments/claim/run.py --report-only      # redraw the table and summary from the JSON

Three default searches (`gas search --budget 2.5G` with search seeds 0, 1, 2: the default proxy, replicates on),
each for the same worker time (the trainings' own wall time, every seed of every trial counted), one thread per
training, `--jobs` searches at a time. Each search's best pick by seed mean then goes through `gas compare`
(`gas.compare.run_compare`, one comparison for all of them, so the baselines train once) against `turbovit`,
Hiera-T scaled by width and Hiera-T scaled by depth to the same budget: every candidate retrained from
scratch on the target schedule (4x the proxy's epochs at 64px) with `--seeds` training seeds and scored on the
test split, which no search reads.

Reports, per search seed, its pick's test accuracy (mean ± sd) and latency against `turbovit`'s, and pooled
over search seeds (every pick's runs against `turbovit`'s) Welch's p-value; and the winner's curse: each
pick's accuracy in its search (validation split, seed mean, and its first seed alone) against its retrained
test accuracy. Goal: every search seed's best >= `turbovit`, and pooled >= +1 point at p < 0.05 at no more than
`turbovit`'s measured latency.

Writes claim.json (the comparison and the searches), claim.md and its section of SUMMARY.md into --out, and the
studies under claim_studies/.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import functools
import json
import statistics
from collections.abc import Sequence
from typing import Any

import optuna

from experiments.common.cli import fail, harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import markdown_table
from experiments.common.worker_time import search_for, worker_seconds
from experiments.common.workers import worker_pool
from gas import record
from gas.compare import CompareConfig, epochs_text, run_compare
from gas.defaults import COMPARE_AGAINST
from gas.errors import GasError
from gas.front import pick_trial
from gas.search import SearchConfig, prepare
from gas.stats import welch_p
from gas.storage import open_study
from gas.units import format_duration, parse_count

SCRIPT = "experiments/claim/run.py"
NAME = "claim"
BASELINE = "turbovit"


def search_config(seed: int, args: argparse.Namespace, out: Path) -> SearchConfig:
    """`gas search --budget BUDGET --seed SEED` as the command line builds it, in a study of the harness's own."""
    from gas.evaluate.proxy import ProxyConfig

    return SearchConfig(
        budget=parse_count(args.budget),
        study=f"{NAME}-s{seed}",
        storage=f"sqlite:///{out / f'{NAME}_studies' / f's{seed}.db'}",
        seed=seed,
        proxy=ProxyConfig().with_overrides(
            device="cpu", seed=seed, **({"train_size": args.train_size} if args.train_size else {})
        ),
        progress=False,
    )


def run_search(task: tuple[int, SearchConfig, float]) -> dict[str, Any]:
    """One search from an empty study for its worker time; what it found and what it spent."""
    seed, config, seconds = task
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = Path(config.storage.removeprefix("sqlite:///"))
    storage.parent.mkdir(parents=True, exist_ok=True)
    storage.unlink(missing_ok=True)
    study = search_for(config, seconds).study
    best = record.trial_record(pick_trial(study, "best"))
    noise = record.noise_record(study)
    print(f"search seed {seed}: best trial {best.number} at {best.accuracy:.2%} ({best.seeds} seeds)", flush=True)
    return {
        "seed": seed,
        "study": config.study_name,
        "storage": config.storage,
        "worker_s": worker_seconds(study),
        "best_trial": best.number,
        "best_genome": best.genome,
        "search_accuracy": best.accuracy,
        "first_seed_accuracy": best.first_seed_accuracy,
        "best_seeds": best.seeds,
        "noise": None if noise is None else noise.__dict__,
    }


def compare(searches: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One `gas compare` over every search's best (as genome files) and the baselines, on the first study."""
    from gas.search.local import run_in_process
    from gas.search.ray_tune import run_on_ray

    files = []
    for search in searches:
        path = out / f"{NAME}_studies" / f"best-s{search['seed']}.json"
        path.write_text(json.dumps(search["best_genome"], indent=1) + "\n")
        files.append(str(path))
    study = open_study(searches[0]["study"], searches[0]["storage"])
    config = CompareConfig(
        picks=tuple(files), against=COMPARE_AGAINST, seeds=args.seeds, epochs=args.epochs, resolution=args.resolution
    )
    train = (
        run_in_process
        if args.jobs <= 1
        else functools.partial(run_on_ray, cpus_per_trial=1.0, name=NAME)
    )
    return run_compare(study, config, train, progress=lambda line: print(line, flush=True))


def _accuracies(row: dict[str, Any]) -> list[float]:
    return [run["test_accuracy"] for run in row["runs"]]


def summarise(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The table rows and the verdict lines."""
    searches, comparison = result["searches"], result["comparison"]
    rows = {row["name"]: row for row in comparison["candidates"]}
    baseline = next(row for name, row in rows.items() if name == BASELINE)
    theirs = _accuracies(baseline)
    table, pooled = [], []
    for search in searches:
        row = next(row for name, row in rows.items() if name.endswith(f"best-s{search['seed']}.json"))
        mine = _accuracies(row)
        pooled += mine
        table.append(
            [
                f"search seed {search['seed']} (trial {search['best_trial']})",
                f"{100 * search['first_seed_accuracy']:.1f} / {100 * search['search_accuracy']:.1f} "
                f"({search['best_seeds']} seeds)",
                _spread(mine),
                format_duration(row["latency_s"]),
                f"{100 * (statistics.fmean(mine) - statistics.fmean(theirs)):+.1f}" if mine and theirs else "-",
                _p(welch_p(mine, theirs)),
            ]
        )
    for name, row in rows.items():
        if row["baseline"]:
            table.append([name, "-", _spread(_accuracies(row)), format_duration(row["latency_s"]), "", ""])
    gap = statistics.fmean(pooled) - statistics.fmean(theirs) if pooled and theirs else None
    p = welch_p(pooled, theirs)
    every = all(
        statistics.fmean(_accuracies(row)) >= statistics.fmean(theirs)
        for name, row in rows.items()
        if not row["baseline"] and _accuracies(row)
    )
    slowest = max(row["latency_s"] for row in rows.values() if not row["baseline"])
    verdict = [
        f"Pooled over search seeds: {100 * gap:+.1f} points against {BASELINE} (Welch p = {_p(p)}, "
        f"{len(pooled)} runs against {len(theirs)})." if gap is not None else "Pooled: no finished runs.",
        f"Every search seed's best at least {BASELINE}'s accuracy: {'yes' if every else 'no'}. "
        f"Goal (+1 point, p < 0.05, at no more than {BASELINE}'s latency): "
        + (
            "met."
            if gap is not None and gap >= 0.01 and p is not None and p < 0.05 and slowest <= baseline["latency_s"]
            else "missed."
        ),
    ]
    header = ["candidate", "search: 1st seed / mean", "test accuracy", "latency", "vs turbovit", "Welch p"]
    return [markdown_table(header, table)], verdict


def _spread(accuracies: list[float]) -> str:
    """'85.1 ± 2.3' in points over seeds, '-' with fewer than two."""
    if len(accuracies) < 2:
        return "-"
    return f"{100 * statistics.fmean(accuracies):.1f} ± {100 * statistics.stdev(accuracies):.1f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness_parser(__doc__, redraw="redraw the table and summary from claim.json")
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px (default: 2.5G)")
    parser.add_argument("--searches", type=int, default=3, help="search seeds 0..N-1 (default: 3)")
    parser.add_argument("--worker-seconds", type=float, default=1200.0, help="worker time per search (default: 1200)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per candidate in compare (default: 3)")
    parser.add_argument("--epochs", type=int, help="compare's epochs (default: the target schedule's)")
    parser.add_argument("--resolution", type=int, help="compare's resolution (default: the target schedule's)")
    parser.add_argument("--train-size", type=int, help="the searches' training images (default: the proxy's)")
    parser.add_argument("--jobs", type=int, default=2, help="searches and retrainings at a time (default: 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    path = out / f"{NAME}.json"
    if args.report_only:
        try:
            result = json.loads(path.read_text())
        except OSError as error:
            return fail(NAME, f"cannot read {path}: {error.strerror}")
    else:
        tasks = [(seed, search_config(seed, args, out), args.worker_seconds) for seed in range(args.searches)]
        try:
            prepare(tasks[0][1])
            with worker_pool(max(1, args.jobs), threads=1) as pool:
                searches = list(pool.map(run_search, tasks))
            result = {"searches": searches, "comparison": compare(searches, args, out)}
        except GasError as error:
            return fail(NAME, str(error))
        path.write_text(json.dumps(result, indent=1) + "\n")
    table, verdict = summarise(result)
    comparison = result["comparison"]
    schedule = comparison["schedule"]
    markdown = "\n".join(
        [
            "## The claim: searched best against turbovit and Hiera-T, on the test split",
            "",
            stamp(command_line(SCRIPT, argv)),
            "",
            f"{len(result['searches'])} default searches ({args.budget} FLOPs, replicates on), each for "
            f"{min(s['worker_s'] for s in result['searches']):.0f}-{max(s['worker_s'] for s in result['searches']):.0f}"
            " worker-seconds; each one's best by seed mean retrained with "
            f"{len(comparison['seeds'])} seeds on the target schedule ({epochs_text(schedule['epochs'])} at "
            f"{schedule['resolution']}px on {schedule['dataset']}) and scored on "
            f"{comparison['test_images']} test images; latency on {comparison['latency']['describe']}.",
            "",
            *table,
            "",
            *verdict,
        ]
    )
    write_page(out, NAME, markdown, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
