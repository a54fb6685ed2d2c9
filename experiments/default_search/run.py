"""Run the default search (`gas search --budget 2.5G`) from scratch and record how the search itself behaves.

    python experiments/default_search/run.py [--trials 40] [--seed 0] [--study-file PATH]

Records trials/hour, the share of feasible proposals in the first and second half (the sampler learning
the budget), mean budget utilisation of trained trials, driver overhead per trial, each Ray worker's
resident memory after its first and after its last trial (what `run_trial` reports with every result),
and the fidelity audit `gas search` ends with (4 trials retrained with 3x the epochs, Kendall's tau), into
experiments/results/default_search.{csv,md}. The study is kept in --study-file (default
experiments/results/default_search.db), so its front can be inspected and exported:

    gas pareto --study turbovit-2.5G --storage sqlite:///experiments/results/default_search.db
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import statistics

import pandas as pd
from optuna.trial import TrialState

from experiments.common.cli import harness_parser
from experiments.common.results import RESULTS, command_line, stamp, write_page
from experiments.common.tables import markdown_table, write_csv
from gas import record
from gas.search import SearchConfig, run_search
from gas.search.audit import AuditConfig, after_search, run_audit
from gas.search.ray_tune import run_on_ray
from gas.study import feasible_share_by_half, proposals, trained_trials
from gas.units import compact_count

SCRIPT = "experiments/default_search/run.py"
STORAGE_FILE = RESULTS / "default_search.db"


def worker_memory(trials: list) -> dict[str, object]:
    """Per Ray worker, resident memory after its first and its last trial, in the order they finished."""
    by_worker: dict[int, list[float]] = {}
    for trial in sorted(trials, key=lambda t: t.datetime_complete):
        worker = record.trial_record(trial).worker
        if worker:
            by_worker.setdefault(worker.pid, []).append(worker.rss_mib)
    if not by_worker:
        return {}
    return {
        "workers": len(by_worker),
        "worker_trials": "/".join(str(len(rss)) for rss in by_worker.values()),
        "worker_rss_first_mib": max(rss[0] for rss in by_worker.values()),
        "worker_rss_last_mib": max(rss[-1] for rss in by_worker.values()),
        "worker_rss_last_over_first": round(max(rss[-1] / rss[0] for rss in by_worker.values()), 2),
    }


def main() -> None:
    parser = harness_parser(__doc__, out=None)
    parser.add_argument("--trials", type=int, default=SearchConfig(budget=1).trials)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=2.5e9)
    parser.add_argument("--study-file", type=Path, default=STORAGE_FILE, help="the study's SQLite file")
    parser.add_argument("--audit", type=int, default=AuditConfig().trials, help="trials the audit retrains (0: none)")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    args.study_file.unlink(missing_ok=True)  # a fresh search, not a resumed one
    config = SearchConfig(
        budget=int(args.budget), trials=args.trials, seed=args.seed, storage=f"sqlite:///{args.study_file}"
    )
    outcome = run_search(config)
    study = outcome.study
    audit = None
    if args.audit:  # as `gas search` ends, on the same kind of workers
        audit = run_audit(study, after_search(args.audit, config.proxy), run_on_ray, progress=print)
    trained = trained_trials(study)
    completed = [t for t in trained if t.state == TrialState.COMPLETE]
    first_half, second_half = feasible_share_by_half(study)
    proposed = proposals(study)
    records = [record.trial_record(t) for t in completed]
    trial_seconds = sum(r.wall_time or 0.0 for r in records)
    idle_slot_seconds = outcome.elapsed * outcome.concurrency - trial_seconds
    figures = {
        "trained_trials": len(trained),
        "failed_trials": len(trained) - len(completed),
        "proposals": len(proposed),
        "elapsed_s": round(outcome.elapsed, 1),
        "concurrent_trials": outcome.concurrency,
        "trials_per_hour": round(len(trained) / outcome.elapsed * 3600, 1),
        "feasible_share_first_half": round(first_half, 3),
        "feasible_share_second_half": round(second_half, 3),
        "mean_budget_utilisation": round(
            statistics.fmean(r.budget_utilisation for r in records), 3
        ),
        "median_trial_s": round(statistics.median(r.wall_time for r in records), 1),
        "driver_s_per_trial": round(outcome.driver_seconds / max(len(trained), 1), 2),
        "slot_s_outside_trials_per_trial": round(idle_slot_seconds / max(len(trained), 1), 2),
        "best_accuracy": round(max(t.values[0] for t in completed), 4),
        "front_size": len(study.best_trials),
        **worker_memory(completed),
    }
    if audit is not None:
        figures |= {
            "audit_trials": audit.n,
            "audit_tau": None if audit.tau is None else round(audit.tau, 3),
            "audit_tau_interval": "[" + ", ".join(f"{bound:.2f}" for bound in audit.interval or ()) + "]",
            "audit_s": round(audit.seconds, 1),
        }
    write_csv(RESULTS / "default_search.csv", pd.DataFrame([figures]))
    table = markdown_table(["figure", "value"], figures.items())
    write_page(
        RESULTS,
        "default_search",
        f"# The default search\n\n`gas search --budget {compact_count(args.budget)}` on its embedded defaults "
        f"({args.trials} trials, seed {args.seed}), from an empty study.\n\n{table}\n\n"
        "- driver_s_per_trial: time the driver spent proposing genomes (rejections included) and recording results.\n"
        "- slot_s_outside_trials_per_trial: worker-slot time not spent inside a trial's evaluation (Ray start-up,\n"
        "  scheduling, proposals, the tail where fewer trials than slots remain), per trained trial.\n"
        "- worker_rss_*: each Ray worker's resident memory after its first and after its last trial (MiB, the\n"
        "  largest over workers), and the largest ratio last / first; worker_trials: trials per worker.\n"
        "- audit_*: the fidelity audit the search ends with (its trials retrained with 3x the epochs): Kendall's\n"
        "  tau of proxy against long-run accuracy, its 95% interval, and its seconds.\n\n"
        f"{stamp(command_line(SCRIPT))}",
    )
    print(table)


if __name__ == "__main__":
    main()
