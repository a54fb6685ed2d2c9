"""Scaling: trials/hour of the default search with 1, 2, ... concurrent Ray trials, and where it stops scaling.

    python experiments/bench_scale/run.py                      # CPU: 1 and 2 concurrent trials
    python experiments/bench_scale/run.py --concurrency 1 2 4 8   # on a GPU machine: 1, 1/2, 1/4, 1/8 GPU each
    python experiments/bench_scale/run.py --report-only           # redraw the table and diagnosis from the CSV

Each level runs `gas.search.run_search` (what `gas search --budget 2.5G --max-concurrent C` runs) from an
empty study, with the same seed and --trials trained trials, and records trials/hour and the driver-time
accounting the search returns. With CUDA, each trial gets 1/C of the GPUs unless --gpus-per-trial says
otherwise, so C trials share the devices.

Where the time goes. For each level, one worker slot's time per trained trial
(elapsed x concurrency / trials) splits into
    train steps      inside the trial, training (epochs x images / the trial's training images/s)
    rest of trial    inside the trial, not training: loading data, building the model, validation
    outside trials   slot time in no trial: Ray start-up, scheduling, waiting on the driver, the tail
                     where fewer trials than slots remain
Each level's search proposes its own genomes, so the growth of train steps over the first level is split
further: the share the level's mean FLOPs explain (genome mix: larger networks train slower anywhere)
and the rest (contention for the device). And the driver's own time (proposing genomes, recording
results: `SearchOutcome.driver_seconds`) is shown as a share of the elapsed time: it is serial, so it
caps trials/hour whatever the concurrency.
Perfect scaling keeps slot time per trial flat; the part that grows is why scaling stops.

Writes bench_scale.csv, bench_scale.md and its section of SUMMARY.md into --out (default:
experiments/results), the studies under bench_scale_studies/.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import itertools
import statistics
from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import torch
from optuna.trial import TrialState

from experiments.common.cli import fail, harness_parser
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas import record
from gas.errors import GasError
from gas.evaluate.datasets import load_dataset
from gas.evaluate.proxy import ProxyConfig
from gas.search import SearchConfig, run_search
from gas.study import trained_trials, trial_error
from gas.units import compact_count, format_count, parse_count

SCRIPT = "experiments/bench_scale/run.py"
# Scaling "stops" at the first level that adds less than this share of the ideal gain over the level before.
STOP_SHARE = 0.25


def run_level(concurrency: int, gpus_per_trial: float | None, args: argparse.Namespace, out: Path) -> dict:
    """One search from an empty study at this concurrency; its throughput and where its time went."""
    storage_file = out / "bench_scale_studies" / f"c{concurrency}.db"
    storage_file.parent.mkdir(parents=True, exist_ok=True)
    storage_file.unlink(missing_ok=True)
    overrides = {
        "dataset": args.dataset,
        "resolution": args.resolution,
        "epochs": args.epochs,
        "train_size": args.train_size,
        "val_size": args.val_size,
    }
    proxy = ProxyConfig().with_overrides(
        seed=args.seed, **{key: value for key, value in overrides.items() if value is not None}
    )
    config = SearchConfig(
        budget=parse_count(args.budget),
        study=f"bench_scale-c{concurrency}",
        storage=f"sqlite:///{storage_file}",
        trials=args.trials,
        seed=args.seed,
        proxy=proxy,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=concurrency,
        progress=False,
        replicates=None,  # one seed per trial, as the committed figures were measured
    )
    print(f"concurrency {concurrency}, GPUs per trial {gpus_per_trial or 0:g}: {args.trials} trials", flush=True)
    started_at = datetime.now()
    outcome = run_search(config)
    trained = trained_trials(outcome.study)
    complete = [trial for trial in trained if trial.state == TrialState.COMPLETE]
    if not complete:
        raise GasError(f"no trial completed at concurrency {concurrency}; first error: {_first_error(trained)}")
    first_start = min(trial.datetime_start for trial in trained)
    # What one epoch trains on: the training split as the proxy caps it.
    splits = load_dataset(proxy.dataset, proxy.resolution, proxy.data_dir, proxy.train_size, proxy.val_size)
    train_images = len(splits.train_labels)

    records = [record.trial_record(trial) for trial in complete]
    trial_seconds = statistics.fmean(float(recorded.wall_time) for recorded in records)
    train_steps = statistics.fmean(
        recorded.epochs_completed * train_images / recorded.images_per_second if recorded.images_per_second else 0.0
        for recorded in records
    )
    slots = outcome.concurrency
    slot_per_trial = outcome.elapsed * slots / len(trained)
    return {
        "concurrency": concurrency,
        "slots": slots,
        "gpus_per_trial": gpus_per_trial or 0.0,
        "trials": len(trained),
        "failed": len(trained) - len(complete),
        "elapsed_s": outcome.elapsed,
        "trials_per_hour": len(trained) / outcome.elapsed * 3600,
        "startup_s": (first_start - started_at).total_seconds(),
        "driver_s": outcome.driver_seconds,
        "driver_share": outcome.driver_seconds / outcome.elapsed,
        "slot_s_per_trial": slot_per_trial,
        "trial_s": trial_seconds,
        "train_steps_s": train_steps,
        "rest_of_trial_s": trial_seconds - train_steps,
        "outside_trials_s": slot_per_trial - trial_seconds,
        "train_images_per_s": statistics.fmean(float(recorded.images_per_second) for recorded in records),
        "mean_flops": statistics.fmean(float(recorded.flops) for recorded in records),
        "device": "?" if records[0].device is None else records[0].device,
    }


def _first_error(trials: list) -> str:
    failed = [trial for trial in trials if trial.state == TrialState.FAIL]
    return trial_error(failed[0]) if failed else "?"


def diagnose(rows: list[dict]) -> list[str]:
    """Speed-up per level, where scaling stops, and which part of the slot time per trial grew."""
    first = rows[0]
    lines, stopped = [], False
    causes = {
        "train steps": "the device: trials that run together train slower each (cores or GPU shared)",
        "genome mix": "the genomes: each level's search proposes its own networks, and these were larger",
        "rest of trial": "work inside trials besides training (data loading, model building, validation)",
        "outside trials": "Ray and the driver: start-up, scheduling, proposals and idle slots",
    }
    for previous, row in itertools.pairwise(rows):
        ideal = row["slots"] / previous["slots"]
        gain = row["trials_per_hour"] / previous["trials_per_hour"]
        # Training time grows with the networks trained, not only with contention: the part of the growth
        # that the level's mean FLOPs explain is the genome mix, the rest is the device.
        mix = first["train_steps_s"] * (row.get("mean_flops", 1.0) / first.get("mean_flops", 1.0) - 1)
        growth = {
            "train steps": row["train_steps_s"] - first["train_steps_s"] - mix,
            "genome mix": mix,
            "rest of trial": row["rest_of_trial_s"] - first["rest_of_trial_s"],
            "outside trials": row["outside_trials_s"] - first["outside_trials_s"],
        }
        worst = max(growth, key=lambda name: growth[name])
        line = (
            f"- {previous['slots']:g} → {row['slots']:g} slots: trials/hour x{gain:.2f} (ideal x{ideal:.2f}); slot "
            f"time per trial {first['slot_s_per_trial']:.1f}s → {row['slot_s_per_trial']:.1f}s, most growth in "
            f"{worst} (+{growth[worst]:.1f}s: {causes[worst]}); then "
            + ", ".join(f"{name} {growth[name]:+.1f}s" for name in sorted(growth, key=growth.get, reverse=True)[1:])
            + f"; driver busy {row['driver_share']:.0%} of the time."
        )
        lines.append(line)
        if not stopped and gain - 1 < STOP_SHARE * (ideal - 1):
            stopped = True
            lines.append(
                f"- Scaling stops at {row['slots']:g} concurrent trials: the extra slots bring less than "
                f"{STOP_SHARE:.0%} of their ideal gain; the limit is {causes[worst]}."
                + (" The serial driver is also near saturation." if row["driver_share"] > 0.5 else "")
            )
    if not stopped and len(rows) > 1:
        last = rows[-1]
        speedup = last["trials_per_hour"] / first["trials_per_hour"]
        lines.append(
            f"- Scaling holds up to {last['slots']:g} concurrent trials (x{speedup:.2f} trials/hour over "
            f"{first['slots']:g}); try more levels to find where it stops."
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw the table and diagnosis from the CSV")
    parser.add_argument("--concurrency", type=int, nargs="+", help="levels (default: 1 2; with CUDA 1 2 4 8)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (default with CUDA: GPUs / level)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs (torch threads) per trial (1)")
    parser.add_argument("--trials", type=int, default=12, help="trained trials per level (default: 12)")
    parser.add_argument("--budget", default="2.5G", help="FLOPs budget at 224px (default: 2.5G)")
    parser.add_argument("--seed", type=int, default=0, help="search seed, the same at every level (default: 0)")
    parser.add_argument("--dataset", help="proxy dataset (default: gas's)")
    parser.add_argument("--resolution", type=int, help="proxy resolution in px (default: gas's)")
    parser.add_argument("--epochs", type=int, help="proxy epochs (default: gas's)")
    parser.add_argument("--train-size", type=int, help="proxy training images (default: gas's)")
    parser.add_argument("--val-size", type=int, help="proxy validation images (default: gas's)")
    args = parser.parse_args(argv)

    gpus = torch.cuda.device_count()
    levels = args.concurrency or ([1, 2, 4, 8] if gpus else [1, 2])
    out = args.out.resolve()
    rows: list[dict] = []
    try:
        if args.report_only:
            rows = pd.read_csv(out / "bench_scale.csv").to_dict("records")
        else:
            for concurrency in sorted(set(levels)):
                share = args.gpus_per_trial
                if share is None and gpus:
                    share = gpus / concurrency  # the levels' trials share the GPUs evenly
                rows.append(run_level(concurrency, share, args, out))
    except (GasError, OSError) as error:
        return fail("bench_scale", str(error))

    first = rows[0]
    for row in rows:
        row["speedup"] = row["trials_per_hour"] / first["trials_per_hour"]
        row["efficiency"] = row["speedup"] / (row["slots"] / first["slots"])
    table = pd.DataFrame(rows)
    write_csv(out / "bench_scale.csv", table)
    shown = table.assign(mean_flops=table["mean_flops"].map(lambda flops: format_count(int(flops))))
    columns = [
        "concurrency",
        "slots",
        "gpus_per_trial",
        "trials",
        "failed",
        "trials_per_hour",
        "speedup",
        "efficiency",
        "startup_s",
        "driver_share",
        "slot_s_per_trial",
        "train_steps_s",
        "rest_of_trial_s",
        "outside_trials_s",
        "train_images_per_s",
        "mean_flops",
    ]
    markdown = frame_markdown(shown[columns], ".3g")
    lines = diagnose(rows)
    proxy = ProxyConfig()
    setup = (
        f"`gas search --budget {compact_count(parse_count(args.budget))}` with --max-concurrent at each level, "
        f"{args.trials} trials per level from an empty study, seed {args.seed}, {args.cpus_per_trial:g} CPU per "
        f"trial, device {first['device']}; proxy: {args.dataset or proxy.dataset}, "
        f"{args.resolution or proxy.resolution}px, {args.epochs or proxy.train.epochs} epochs, "
        f"{args.train_size or proxy.train_size} training images. `slots`: trials the cluster ran at once. Seconds "
        "per trial are one slot's: train steps + rest of trial + outside trials = slot_s_per_trial. The genomes "
        "differ between levels (the sampler sees results in another order), hence `mean_flops`."
    )
    command = command_line(SCRIPT, argv)
    write_page(
        out,
        "bench_scale",
        f"# Scaling with concurrent trials\n\n{setup}\n\n{markdown}\n\n" + "\n".join(lines) + f"\n\n{stamp(command)}",
        "## Scaling with concurrent trials\n\n"
        + "\n".join(lines)
        + f"\n\n{markdown}\n\nDetails: [bench_scale.md](bench_scale.md), [bench_scale.csv](bench_scale.csv).\n\n"
        f"{stamp(command)}",
    )
    print(markdown)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
