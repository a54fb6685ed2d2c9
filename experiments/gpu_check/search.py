"""GPU check, step search: short searches at 1, 2, 4 and 8 trials per GPU, their speed and the GPU's busy share.

    python experiments/gpu_check/search.py [--dry-run] [--out DIR]    # as run.py --only search

Every trained trial must record a CUDA device in the study and the study the GPU proxy's settings. The
level of gas's own packing (TRIALS_PER_GPU) runs without --gpus-per-trial, as `gas search --budget 2.5G`
does. Per level: trials/hour between the first proposal and the last result, the GPU's busy share in that
window (nvidia-smi, sampled in the background), and the trials' mean model-FLOPs utilisation.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/gpu_check/NAME.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib
import csv
import io
import math
import shutil
import statistics
import subprocess
import threading
import time
from typing import Any

import torch

from experiments.common.results import RESULTS
from experiments.common.tables import markdown_table, write_rows
from experiments.gpu_check.harness import Check, Report, Sizes
from gas import record
from gas.defaults import TRIALS_PER_GPU
from gas.evaluate.proxy import ProxyConfig
from gas.study import trained_trials, trial_error
from gas.units import format_count

# The goals printed beside the figures.
CPU_TRIALS_PER_HOUR_FILE = RESULTS / "default_search.csv"
GOAL_SPEEDUP_OVER_CPU = 100.0
GOAL_BUSY = 0.80


class BusySampler:
    """The GPUs' busy share over time: `nvidia-smi` queried every `period_ms` by a background reader.

    nvidia-smi's utilization.gpu is the share of its last sample period in which a kernel ran on the device;
    several GPUs give one line each per sample, and a window's figure is the mean over all lines in it.
    """

    def __init__(self, period_ms: int = 200) -> None:
        self.samples: list[tuple[float, float]] = []
        self.problem: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.period_ms = period_ms

    def __enter__(self) -> BusySampler:
        executable = shutil.which("nvidia-smi")
        if executable is None:
            self.problem = "nvidia-smi not found"
            return self
        query = [
            executable,
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            str(self.period_ms),
        ]
        self._process = subprocess.Popen(query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, name="busy-sampler", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with contextlib.suppress(ValueError):  # "[N/A]" on a device that does not report it
                self.samples.append((time.time(), float(line.strip()) / 100))

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def mean(self, start: float, end: float) -> float | None:
        """Mean busy share between two wall-clock times, or None without samples there."""
        values = [value for moment, value in self.samples if start <= moment <= end]
        return statistics.fmean(values) if values else None


def cpu_trials_per_hour() -> float | None:
    """The 2-core CPU's default search (CPU proxy), as experiments/default_search recorded it."""
    try:
        with CPU_TRIALS_PER_HOUR_FILE.open() as handle:
            return float(next(csv.DictReader(handle))["trials_per_hour"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


def run_level(level: int, gpus: int, sizes: Sizes, studies: Path, sampler: BusySampler) -> dict[str, Any]:
    """One search from an empty study with `level` trials per GPU; what its study recorded."""
    from gas.search import SearchConfig, run_search

    storage = studies / f"level{level}.db"
    storage.unlink(missing_ok=True)
    on_gpus = gpus > 0
    packed_by_gas = not on_gpus or level == TRIALS_PER_GPU
    concurrent = level * max(1, gpus)
    trials = max(2, sizes.rounds * concurrent)
    config = SearchConfig(
        budget=sizes.budget,
        study=f"gpu_check-level{level}",
        storage=f"sqlite:///{storage}",
        trials=trials,
        proxy=sizes.proxy,
        gpu_proxy=sizes.gpu_proxy,
        # gas's own packing where the level is its default: what `gas search` does without the flag.
        gpus_per_trial=None if packed_by_gas else 1.0 / level,
        max_concurrent=concurrent,
        progress=False,
        replicates=None,  # one seed per trial, as the committed figures were measured
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = run_search(config)
    sys.stdout.write(printed.getvalue())
    trained = trained_trials(outcome.study)
    complete = [trial for trial in trained if trial.state.name == "COMPLETE"]
    if not trained:
        raise RuntimeError(f"level {level}: no trial was trained ({outcome.stopped_reason or outcome.failed_run})")
    start = min(trial.datetime_start for trial in trained).timestamp()
    end = max(trial.datetime_complete for trial in trained if trial.datetime_complete).timestamp()
    records = [record.trial_record(trial) for trial in complete]
    mfus = [recorded.mfu for recorded in records if recorded.mfu is not None]
    seconds = [recorded.wall_time for recorded in records]
    speeds = [recorded.images_per_second for recorded in records]
    failed = [trial for trial in trained if trial.state.name == "FAIL"]
    settings = record.study_record(outcome.study).proxy_settings() or {}
    return {
        "level": level,
        "gpus_per_trial": (1.0 / level) if on_gpus else 0.0,
        "packed_by": "gas" if packed_by_gas and on_gpus else ("--gpus-per-trial" if on_gpus else "cpu"),
        "slots": outcome.concurrency,
        "trials": len(trained),
        "failed": len(trained) - len(complete),
        "window_s": end - start,
        "trials_per_hour": len(trained) / (end - start) * 3600 if end > start else math.nan,
        "elapsed_s": outcome.elapsed,
        "trials_per_hour_with_startup": len(trained) / outcome.elapsed * 3600,
        "median_trial_s": statistics.median(seconds) if seconds else math.nan,
        "train_images_per_s": statistics.fmean(speeds) if speeds else math.nan,
        "busy": sampler.mean(start, end),
        "mfu": statistics.fmean(mfus) if mfus else None,
        "devices": sorted({"" if recorded.device is None else recorded.device for recorded in records}),
        "proxy_device": settings.get("device"),
        "proxy_resolution": settings.get("resolution"),
        "first_error": trial_error(failed[0]) if failed else "",
        "packing_line": " ".join(line for line in printed.getvalue().splitlines() if "trials per GPU" in line),
    }


def run(report: Report, check: Check, sizes: Sizes) -> None:
    from gas.evaluate.datasets import load_dataset

    on_gpus = report.on_gpus
    gpus = torch.cuda.device_count() if on_gpus else 0
    names = {torch.cuda.get_device_name(index) for index in range(gpus)}
    proxy = sizes.gpu_proxy if on_gpus else sizes.proxy
    # Draw the proxy's images once here: otherwise the first trial of every worker draws them at once.
    load_dataset(proxy.dataset, proxy.resolution, proxy.data_dir, proxy.train_size, proxy.val_size)
    # The studies stay with the results (git ignores *_studies/): they are what the figures came from.
    studies = report.out / "gpu_check_studies"
    studies.mkdir(parents=True, exist_ok=True)
    rows = []
    idle = BusySampler()
    idle.problem = "not sampled: the trials ran on the CPU"
    with BusySampler() if on_gpus else contextlib.nullcontext(idle) as sampler:
        for level in sizes.levels:
            rows.append(run_level(level, gpus, sizes, studies, sampler))
            report.sections["search"] = search_section(rows, proxy, sampler, sizes.budget, sizes.rounds)
            report.write()
    write_rows(report.out / "gpu_check.csv", rows)
    problems = []
    for row in rows:
        if row["failed"]:
            problems.append(f"level {row['level']}: {row['failed']} trial(s) failed ({row['first_error']})")
        if on_gpus:
            if not row["devices"] or not set(row["devices"]) <= names:
                problems.append(f"level {row['level']}: trials recorded devices {row['devices']}, not {sorted(names)}")
            if row["proxy_device"] != "cuda" or row["proxy_resolution"] != sizes.gpu_proxy.resolution:
                problems.append(
                    f"level {row['level']}: the study recorded proxy {row['proxy_resolution']}px on "
                    f"{row['proxy_device']}, not the GPU proxy"
                )
    trials = sum(row["trials"] for row in rows)
    if problems:
        check.status, check.detail = "failed", "; ".join(problems)
    elif on_gpus:
        check.status = "passed"
        check.detail = f"{trials} trained trials at {len(rows)} levels, every one on {', '.join(sorted(names))}"
    else:
        check.status = report.skip_reason()
        check.detail = f"{trials} trained trials at {len(rows)} levels ran on the CPU"


def search_section(
    rows: list[dict[str, Any]], proxy: ProxyConfig, sampler: BusySampler, budget: int, rounds: int
) -> str:
    cpu = cpu_trials_per_hour()
    goal = GOAL_SPEEDUP_OVER_CPU * cpu if cpu else None
    lines = []
    for row in rows:
        busy = "n/a" if row["busy"] is None else f"{row['busy']:.0%}"
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.2%}"
        meets = "" if goal is None else ("yes" if row["trials_per_hour"] >= goal else "no")
        busy_goal = "" if row["busy"] is None or row["level"] < 2 else ("yes" if row["busy"] >= GOAL_BUSY else "no")
        lines.append(
            [
                row["level"],
                row["packed_by"],
                f"{row['slots']:g}",
                row["trials"],
                row["failed"],
                f"{row['trials_per_hour']:.0f}",
                meets,
                f"{row['trials_per_hour_with_startup']:.0f}",
                f"{row['median_trial_s']:.1f}",
                f"{row['train_images_per_s']:.0f}",
                busy,
                busy_goal,
                mfu,
            ]
        )
    cpu_proxy = ProxyConfig()
    cpu_pixels = (cpu_proxy.train_size or 0) * cpu_proxy.train.epochs * cpu_proxy.resolution**2
    pixels = (proxy.train_size or 0) * proxy.train.epochs * proxy.resolution**2
    packing = next((row["packing_line"] for row in rows if row["packing_line"]), "")
    setup = (
        f"Each level is `gas search --budget {format_count(budget)}` from an empty study (seed 0) with "
        f"`--max-concurrent` = level x GPUs and 1 CPU per trial, for {rounds} round(s) of concurrent trials "
        "(at least 2 trials). "
        f"Proxy: {proxy.resolution}px, {proxy.train.epochs} epochs of {proxy.train_size} images at batch "
        f"{proxy.train.batch_size}, device {proxy.train.device}. The level of gas's own packing "
        f"({TRIALS_PER_GPU} per GPU) runs without `--gpus-per-trial`"
        + (f"; gas printed: `{packing}`" if packing else "")
        + ". `trials/hour` counts from the first proposal to the last result (the search's steady state); "
        "`with start-up` adds Ray's start. `busy`: nvidia-smi's utilization.gpu over that window"
        + (f" ({sampler.problem})" if sampler.problem else "")
        + "; `MFU`: the trials' mean model-FLOPs utilisation (TrialKey.MFU)."
    )
    table = markdown_table(
        [
            "trials per GPU",
            "packed by",
            "slots",
            "trials",
            "failed",
            "trials/hour",
            "≥100x CPU",
            "with start-up",
            "median trial s",
            "train images/s",
            "busy",
            "≥80%",
            "MFU",
        ],
        lines,
    )
    if goal:
        speed_goal = (
            f"trials/hour ≥ {goal:,.0f}, {GOAL_SPEEDUP_OVER_CPU:g} x the 2-core CPU's {cpu:g} with the CPU proxy "
            "(experiments/results/default_search.md)"
        )
    else:
        speed_goal = f"trials/hour ≥ {GOAL_SPEEDUP_OVER_CPU:g} x the 2-core CPU's (default_search.csv not found)"
    goals = (
        f"Goals: {speed_goal}; busy ≥ {GOAL_BUSY:.0%} with packed trials (2 or more per GPU). A trial of this "
        f"proxy trains {pixels / cpu_pixels:.3g}x the image pixels of a CPU-proxy trial, so the trials/hour goal "
        "compares a much larger trial with the CPU's."
    )
    levels = ", ".join(str(row["level"]) for row in rows)
    title = f"## Search on the GPU: trials/hour at {levels} trials per GPU"
    return "\n\n".join([title, setup, table, goals])



if __name__ == "__main__":
    from experiments.gpu_check.run import main

    sys.exit(main(step="search"))
