"""GPU check: does gas train on GPUs as designed, how fast, how busy the device is, and how well the GPU proxy ranks.

    bash experiments/gpu_check/run.sh                     # a machine with a CUDA GPU: about 8 minutes on one H200
    bash experiments/gpu_check/run.sh --dry-run           # anywhere: CPU only, tiny sizes, a few minutes
    python experiments/gpu_check/run.py --only bench      # one step again (tests, search, fidelity, bench)

Steps, each a row of the checks table in gpu_check.md (passed, failed, or skipped with the reason):

    tests     the suite's CUDA tests (names with "cuda", on the files in CUDA_TEST_FILES) must run and pass;
              a skipped one fails the check, since it means CUDA was not there for them
    search    short searches with the embedded GPU proxy at 1, 2, 4 and 8 trials per GPU; every trained trial
              must record a CUDA device in the study (TrialKey.DEVICE) and the study the GPU proxy's
              settings. The level of gas's own packing (TRIALS_PER_GPU) runs without --gpus-per-trial, as
              `gas search --budget 2.5G` does. Per level: trials/hour between the first proposal and the last
              result, the GPU's busy share in that window (nvidia-smi, sampled in the background), and the
              trials' mean model-FLOPs utilisation (TrialKey.MFU)
    fidelity  a few genomes trained with the CPU proxy's settings, the GPU proxy, and a longer, larger
              reference schedule (3x the GPU proxy's epochs at 128 px), side by side on the GPU; Kendall's tau
              of each proxy against the reference says whether the GPU proxy ranks better than the CPU one
    bench     bf16 inference, eager and under torch.compile: batch-1 latency and batch-256 throughput of the
              searched 2.5G picks (generated/turbovit_search_2_5g*.py), the turbovit reference, Hiera-T and
              the fused EfficientViT-M5, with ratios to Hiera-T (gas.bench, what `gas bench` runs)

Goals are printed beside the figures; they are not checks, so a missed goal does not fail the run:
trials/hour at least 100x the 2-core CPU's default search (experiments/results/default_search.csv), the GPU
busy at least 80% of the time with packed trials, the searched 2.5G pick at least 2x Hiera-T's bf16
batch-256 throughput.

`--dry-run` runs every step on the CPU at tiny sizes, so the plumbing is tested anywhere; its figures
measure nothing, the CUDA measurements are marked "skipped: no CUDA" (or "skipped: dry run" on a machine
that has CUDA), and it writes into a temporary folder unless --out names another one (never into
experiments/results). Exit status: 0 when no check failed, 1 when one did, 2 on bad usage.
Writes gpu_check.md, gpu_check.csv (one row per level), gpu_check_bench.csv and gpu_check_fidelity.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import contextlib
import csv
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from experiments.common.machine import machine_line
from experiments.common.results import RESULTS, command_line
from gas import study as record
from gas.defaults import TRIALS_PER_GPU
from gas.evaluate.proxy import GPU_PROXY, ProxyConfig, default_proxy
from gas.units import format_count

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "experiments/gpu_check/run.py"
STEPS = ("tests", "search", "fidelity", "bench")
CUDA_TEST_FILES = ("tests/test_train.py", "tests/test_gpu.py")
# Tests named for CUDA that check what happens without it (test_latency's) are not CUDA tests.
CUDA_TEST_SELECTION = "cuda and not without_cuda"
BASELINE = "hiera_tiny"
REFERENCES = ("hiera_tiny", "turbovit", "efficientvit_m5:fused")
SEARCHED_PICKS = "generated/turbovit_search_2_5g*.py"

# The goals printed beside the figures.
CPU_TRIALS_PER_HOUR_FILE = RESULTS / "default_search.csv"
GOAL_SPEEDUP_OVER_CPU = 100.0
GOAL_BUSY = 0.80
GOAL_THROUGHPUT_OVER_HIERA = 2.0


@dataclass(frozen=True)
class Sizes:
    """How big each step is; the device run's sizes fit its time budget, the dry run's a test's."""

    budget: int  # FLOPs at 224px of the genomes searched and sampled
    levels: tuple[int, ...]  # trials per GPU (on the CPU: concurrent trials)
    rounds: int  # trials per level = rounds x level (at least 2): later rounds reuse warm workers
    proxy: ProxyConfig  # the CPU proxy, as the search is given it
    gpu_proxy: ProxyConfig  # the GPU proxy, as the search is given it
    fidelity_genomes: int
    fidelity_workers: int  # runs side by side (0: one after another in this process)
    reference_epoch_factor: int  # the reference schedule trains this many times the GPU proxy's epochs
    reference_resolution: int
    bench_batches: tuple[int, ...]
    bench_repeats: int
    bench_batch_repeats: int
    bench_warmup: int


DEVICE_SIZES = Sizes(
    budget=2_500_000_000,
    levels=(1, 2, 4, 8),
    rounds=2,
    proxy=default_proxy(False),
    gpu_proxy=default_proxy(True),
    fidelity_genomes=8,
    fidelity_workers=8,
    reference_epoch_factor=3,
    reference_resolution=128,
    bench_batches=(1, 256),
    # Fewer timed runs than gas bench's defaults: compiling dominates this step, and medians of these hold.
    bench_repeats=10,
    bench_batch_repeats=3,
    bench_warmup=2,
)
# Small genomes, a few images, one epoch, the CPU only: each trial takes about a second.
_TINY = {
    "resolution": 32,
    "train_size": 32,
    "val_size": 16,
    "zero_cost_batch": 0,
    "epochs": 1,
    "batch_size": 16,
    "device": "cpu",
}
DRY_SIZES = Sizes(
    budget=500_000_000,
    levels=(2,),
    rounds=1,
    proxy=ProxyConfig().with_overrides(**_TINY),
    gpu_proxy=GPU_PROXY.with_overrides(**_TINY),
    fidelity_genomes=3,
    fidelity_workers=0,
    reference_epoch_factor=2,
    reference_resolution=32,
    bench_batches=(1,),
    bench_repeats=1,
    bench_batch_repeats=1,
    bench_warmup=0,
)


@dataclass
class Check:
    name: str
    status: str = "not run"  # "passed", "failed", "skipped: WHY" or "not run"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    """Everything the markdown shows; written again after every step, so a cut-short run leaves its part."""

    out: Path
    dry_run: bool
    cuda: bool
    checks: dict[str, Check] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)

    def write(self) -> Path:
        failed = [check.name for check in self.checks.values() if check.status == "failed"]
        verdict = f"**{len(failed)} check(s) failed: {', '.join(failed)}.**" if failed else "No check failed."
        if self.dry_run:
            verdict += (
                " DRY RUN: every step ran on the CPU at tiny sizes to test the harness; its figures measure nothing."
            )
        rows = "\n".join(
            f"| {check.name} | {check.status} | {check.detail} | {check.seconds:.0f} |"
            for check in self.checks.values()
        )
        text = (
            "# GPU check: packed proxy trials, the GPU proxy, bf16 inference\n\n"
            f"{verdict}\n\n| check | status | detail | seconds |\n|---|---|---|---|\n{rows}\n\n"
            + "".join(f"{section}\n\n" for section in self.sections.values())
            + f"Machine: {machine_line()}\n\nCommand: `bash experiments/gpu_check/run.sh"
            + "".join(f" {argument}" for argument in sys.argv[1:])
            + f"` (helper: `{command_line(SCRIPT)}`)\n"
        )
        path = self.out / "gpu_check.md"
        path.write_text(text)
        return path


def _skip_reason(report: Report) -> str:
    return "skipped: dry run" if report.cuda else "skipped: no CUDA"


@contextlib.contextmanager
def _step(report: Report, name: str) -> Iterator[Check]:
    """Time a step and record it; an exception fails the step with its message, and the run goes on."""
    check = report.checks[name]
    started = time.perf_counter()
    print(f"gpu_check: {name}...", flush=True)
    try:
        yield check
    except Exception as error:  # one broken step must not hide the others' figures
        check.status = "failed"
        check.detail = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    finally:
        check.seconds = time.perf_counter() - started
        print(f"gpu_check: {name}: {check.status} ({check.seconds:.0f}s) {check.detail}", flush=True)
        report.write()


# ---- step 1: the CUDA tests ------------------------------------------------------------------------------


def junit_counts(path: Path) -> dict[str, int]:
    """Tests, failures, errors and skips in a pytest JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}


def run_cuda_tests(report: Report, check: Check, scratch: Path) -> None:
    junit = scratch / "cuda_tests.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        CUDA_TEST_SELECTION,
        f"--junitxml={junit}",
        *CUDA_TEST_FILES,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if not junit.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pytest exited {done.returncode} without a report: {tail[0]}")
    counts = junit_counts(junit)
    ran = counts["tests"] - counts["skipped"]
    summary = (
        f"`pytest -k '{CUDA_TEST_SELECTION}' {' '.join(CUDA_TEST_FILES)}`: {counts['tests']} selected, {ran} ran, "
        f"{counts['skipped']} skipped, {counts['failures'] + counts['errors']} failed"
    )
    if counts["failures"] or counts["errors"] or done.returncode not in (0, 5):
        check.status, check.detail = "failed", summary
    elif report.cuda and not report.dry_run:
        passed = counts["tests"] > 0 and counts["skipped"] == 0
        check.status = "passed" if passed else "failed"
        check.detail = summary + ("" if passed else " (a CUDA test must run here, not skip)")
    else:
        check.status, check.detail = _skip_reason(report), summary


# ---- step 2: searches at 1, 2, 4, 8 trials per GPU ------------------------------------------------------


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
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outcome = run_search(config)
    sys.stdout.write(printed.getvalue())
    trained = record.trained_trials(outcome.study)
    complete = [trial for trial in trained if trial.state.name == "COMPLETE"]
    if not trained:
        raise RuntimeError(f"level {level}: no trial was trained ({outcome.stopped_reason or outcome.failed_run})")
    start = min(trial.datetime_start for trial in trained).timestamp()
    end = max(trial.datetime_complete for trial in trained if trial.datetime_complete).timestamp()
    mfus = [trial.user_attrs[record.TrialKey.MFU] for trial in complete if record.TrialKey.MFU in trial.user_attrs]
    seconds = [trial.user_attrs[record.TrialKey.WALL_TIME] for trial in complete]
    speeds = [trial.user_attrs[record.TrialKey.IMAGES_PER_SECOND] for trial in complete]
    failed = [trial for trial in trained if trial.state.name == "FAIL"]
    settings = outcome.study.user_attrs.get(record.StudyKey.SETTINGS, {}).get("proxy", {})
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
        "devices": sorted({str(trial.user_attrs.get(record.TrialKey.DEVICE, "")) for trial in complete}),
        "proxy_device": settings.get("device"),
        "proxy_resolution": settings.get("resolution"),
        "first_error": record.trial_error(failed[0]) if failed else "",
        "packing_line": " ".join(line for line in printed.getvalue().splitlines() if "trials per GPU" in line),
    }


def run_searches(report: Report, check: Check, sizes: Sizes, folder: Path) -> None:
    from gas.evaluate.datasets import load_dataset

    on_gpus = report.cuda and not report.dry_run
    gpus = torch.cuda.device_count() if on_gpus else 0
    names = {torch.cuda.get_device_name(index) for index in range(gpus)}
    proxy = sizes.gpu_proxy if on_gpus else sizes.proxy
    # Draw the proxy's images once here: otherwise the first trial of every worker draws them at once.
    load_dataset(proxy.dataset, proxy.resolution, proxy.data_dir, proxy.train_size, proxy.val_size)
    studies = folder / "gpu_check_studies"
    studies.mkdir(parents=True, exist_ok=True)
    rows = []
    idle = BusySampler()
    idle.problem = "not sampled: the trials ran on the CPU"
    with BusySampler() if on_gpus else contextlib.nullcontext(idle) as sampler:
        for level in sizes.levels:
            rows.append(run_level(level, gpus, sizes, studies, sampler))
            report.sections["search"] = search_section(rows, proxy, sampler, sizes.budget, sizes.rounds)
            report.write()
    _write_csv(report.out / "gpu_check.csv", rows)
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
        check.status = _skip_reason(report)
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
            f"| {row['level']} | {row['packed_by']} | {row['slots']:g} | {row['trials']} | {row['failed']} | "
            f"{row['trials_per_hour']:.0f} | {meets} | {row['trials_per_hour_with_startup']:.0f} | "
            f"{row['median_trial_s']:.1f} | {row['train_images_per_s']:.0f} | {busy} | {busy_goal} | {mfu} |"
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
    header = (
        "| trials per GPU | packed by | slots | trials | failed | trials/hour | ≥100x CPU | with start-up | "
        "median trial s | train images/s | busy | ≥80% | MFU |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
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
    return "\n\n".join([title, setup, header + "\n" + "\n".join(lines), goals])


# ---- step 3: fidelity of the CPU and the GPU proxy against a longer schedule ----------------------------


def train_one(genome_json: str, config_fields: dict[str, Any]) -> dict[str, Any]:
    """Train one genome with one schedule (in a worker process); a failed run is a row with its reason."""
    from gas.evaluate.proxy import ProxyConfig, evaluate
    from gas.space import load_genome

    try:
        result = evaluate(load_genome(json.loads(genome_json)), ProxyConfig.from_dict(config_fields))
    except Exception as error:  # diverged, out of memory, a CUDA fault: the other runs' figures still count
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        return {"accuracy": math.nan, "wall_time": math.nan, "device": "", "error": reason}
    return {"accuracy": result.accuracy, "wall_time": result.wall_time, "device": result.device, "error": ""}


def fidelity_schedules(sizes: Sizes, device: str) -> dict[str, ProxyConfig]:
    # Zero-cost scores change no accuracy (they score copies), and skipping them saves each run seconds.
    gpu = sizes.gpu_proxy.with_overrides(zero_cost_batch=0, device=device)
    return {
        "cpu proxy": sizes.proxy.with_overrides(zero_cost_batch=0, device=device),
        "gpu proxy": gpu,
        "reference": gpu.with_overrides(
            resolution=sizes.reference_resolution, epochs=gpu.train.epochs * sizes.reference_epoch_factor
        ),
    }


def kendall_with_interval(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Kendall's tau and its interval (gas.stats' convention) over genomes resampled with replacement."""
    from gas.stats import kendall_tau, tau_interval

    return (kendall_tau(x, y), *tau_interval(x, y))


def run_fidelity(report: Report, check: Check, sizes: Sizes) -> None:
    from experiments.common.workers import worker_pool
    from gas.evaluate.datasets import load_dataset
    from gas.search.sampling import sample_genomes

    on_gpus = report.cuda and not report.dry_run
    schedules = fidelity_schedules(sizes, "cuda" if on_gpus else "cpu")
    for config in schedules.values():  # draw each schedule's images once, before the workers want them
        load_dataset(config.dataset, config.resolution, config.data_dir, config.train_size, config.val_size)
    genomes = [
        genome.to_json() for genome, _ in sample_genomes("turbovit", sizes.fidelity_genomes, 0, budget=sizes.budget)
    ]
    # Longest runs first, so the last ones to finish are short.
    jobs = [(name, index) for name in ("reference", "gpu proxy", "cpu proxy") for index in range(len(genomes))]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if sizes.fidelity_workers:
        with worker_pool(sizes.fidelity_workers, threads=1) as pool:
            futures = {job: pool.submit(train_one, genomes[job[1]], schedules[job[0]].to_dict()) for job in jobs}
            results = {job: future.result() for job, future in futures.items()}
    else:
        results = {job: train_one(genomes[job[1]], schedules[job[0]].to_dict()) for job in jobs}
    rows = [{"schedule": name, "genome": index, **results[(name, index)]} for name, index in jobs]
    _write_csv(report.out / "gpu_check_fidelity.csv", rows)
    failures = [row for row in rows if row["error"]]
    usable = [index for index in range(len(genomes)) if all(not results[(name, index)]["error"] for name in schedules)]
    reference = [results[("reference", index)]["accuracy"] for index in usable]
    taus = {
        name: kendall_with_interval([results[(name, index)]["accuracy"] for index in usable], reference)
        for name in ("cpu proxy", "gpu proxy")
    }
    report.sections["fidelity"] = fidelity_section(sizes, schedules, rows, taus, len(usable))
    if failures or len(usable) < 3:
        check.status = "failed"
        check.detail = f"{len(failures)} run(s) failed" + (f": {failures[0]['error']}" if failures else "")
        return
    summary = ", ".join(f"{name} τ = {tau:.2f}" for name, (tau, _, _) in taus.items())
    check.status = "passed" if on_gpus else _skip_reason(report)
    check.detail = f"{len(usable)} genomes against the reference: {summary}"


def fidelity_section(
    sizes: Sizes,
    schedules: dict[str, ProxyConfig],
    rows: list[dict[str, Any]],
    taus: dict[str, tuple[float, float, float]],
    genomes: int,
) -> str:
    described = "; ".join(
        f"{name}: {config.resolution}px, {config.train.epochs} epochs of {config.train_size} images, batch "
        f"{config.train.batch_size}"
        for name, config in schedules.items()
    )
    table = "\n".join(f"| {name} | {tau:.2f} | [{low:.2f}, {high:.2f}] |" for name, (tau, low, high) in taus.items())
    seconds = {
        name: statistics.fmean(row["wall_time"] for row in rows if row["schedule"] == name and not row["error"])
        for name in schedules
        if any(row["schedule"] == name and not row["error"] for row in rows)
    }
    timing = ", ".join(f"{name} {value:.1f}s" for name, value in seconds.items())
    return (
        "## Proxy fidelity at the GPU default\n\n"
        f"{genomes} genomes sampled at random within {format_count(sizes.budget)} FLOPs (seed 0), each trained with "
        f"three schedules on {schedules['gpu proxy'].train.device}, {sizes.fidelity_workers or 1} at a time: "
        f"{described}. Kendall's τ of each proxy's accuracies against the reference's (95% bootstrap interval "
        "over genomes; with this few genomes it is wide):\n\n"
        "| proxy | Kendall τ vs reference | 95% interval |\n|---|---|---|\n"
        f"{table}\n\n"
        "For scale: on 30 genomes, the CPU proxy ranked with τ = 0.59 against 4x its own epochs "
        "(experiments/results/fidelity.md). Both proxies here are ranked against the same reference, so their "
        "difference is the answer; the reference shares the GPU proxy's images, which favours it somewhat. "
        f"Mean seconds per run: {timing}. Runs: gpu_check_fidelity.csv."
    )


# ---- step 4: bf16 inference ---------------------------------------------------------------------------


def bench_models() -> list[str]:
    picks = sorted(str(path.relative_to(REPO)) for path in REPO.glob(SEARCHED_PICKS))
    return [*picks, *REFERENCES]


def run_bench(report: Report, check: Check, sizes: Sizes) -> None:
    from gas.bench import CPU_FP32, add_ratios, run_benchmark, settings_for, write_csv
    from gas.cli.bench import format_rows
    from gas.named_model import load_models

    on_gpus = report.cuda and not report.dry_run
    names = bench_models()
    settings = settings_for("cuda", compile=True) if on_gpus else [CPU_FP32]
    models = load_models(names)
    rows = run_benchmark(
        models, settings, sizes.bench_batches, sizes.bench_repeats, sizes.bench_batch_repeats, sizes.bench_warmup
    )
    add_ratios(rows, BASELINE)
    write_csv(rows, report.out / "gpu_check_bench.csv")
    largest = max(sizes.bench_batches)
    picks = [name for name in names if name.startswith("generated/")]
    verdicts = []
    for row in rows:
        if row["model"] in picks and row["batch"] == largest:
            met = "meets" if row["throughput_x"] >= GOAL_THROUGHPUT_OVER_HIERA else "misses"
            verdicts.append(
                f"- {row['model']}, {row['setting']}: {row['throughput_x']:.2f}x Hiera-T's batch-{largest} "
                f"throughput ({met} the {GOAL_THROUGHPUT_OVER_HIERA:g}x goal); batch-1 latency "
                + next(
                    f"{other['latency_x']:.2f}x Hiera-T's"
                    for other in rows
                    if other["model"] == row["model"] and other["setting"] == row["setting"] and other["batch"] == 1
                )
            )
    report.sections["bench"] = (
        "## Inference: bf16 eager and compiled\n\n"
        f"`gas bench {' '.join(names)}` on {', '.join(setting.kind for setting in settings)}, batch sizes "
        f"{', '.join(map(str, sizes.bench_batches))}: median of {sizes.bench_repeats} timed runs at batch 1 and "
        f"{sizes.bench_batch_repeats} at larger batches after {sizes.bench_warmup} warm-up runs, models taking "
        "turns; `latency x` and `throughput x` against Hiera-T at the same setting and batch.\n\n"
        "```\n" + "\n".join(format_rows(rows)) + "\n```\n\n" + "\n".join(verdicts)
    )
    expected = {(setting.kind, batch) for setting in settings for batch in sizes.bench_batches}
    timed = {(row["setting"], row["batch"]) for row in rows}
    if timed != expected:
        check.status, check.detail = "failed", f"timed {sorted(timed)}, expected {sorted(expected)}"
        return
    check.status = "passed" if on_gpus else _skip_reason(report)
    check.detail = f"{len(models)} models x {len(settings)} settings x {len(sizes.bench_batches)} batch sizes" + (
        "" if on_gpus else " timed on the CPU in fp32 (the CUDA bf16 rows need CUDA)"
    )


# ---- the run --------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (no CUDA needed)")
    parser.add_argument("--out", type=Path, help="results folder (default: experiments/results; dry run: a tmp one)")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps (default: all)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_check: error: no CUDA device here; --dry-run runs the harness on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        out = args.out or Path(tempfile.mkdtemp(prefix="gas-gpu-check-"))
        if out.resolve() == RESULTS.resolve():
            print(
                "gpu_check: error: a dry run never writes into experiments/results; give another --out", file=sys.stderr
            )
            return 2
    else:
        out = args.out or RESULTS
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)  # model names like generated/NAME.py and Ray's runs/ folder are relative to the repository
    sizes = DRY_SIZES if args.dry_run else DEVICE_SIZES
    if args.dry_run:  # runs in this process take one core, as each search trial does: no oversubscription
        torch.set_num_threads(1)
    report = Report(out, args.dry_run, cuda)
    with tempfile.TemporaryDirectory(prefix="gas-gpu-check-scratch-") as scratch_name:
        scratch = Path(scratch_name)
        steps: dict[str, Callable[[Check], None]] = {
            "tests": lambda check: run_cuda_tests(report, check, scratch),
            # The studies stay with the results (git ignores *_studies/): they are what the figures came from.
            "search": lambda check: run_searches(report, check, sizes, out),
            "fidelity": lambda check: run_fidelity(report, check, sizes),
            "bench": lambda check: run_bench(report, check, sizes),
        }
        chosen = args.only or list(STEPS)
        for name in STEPS:
            report.checks[name] = Check(name, "not run" if name in chosen else "not run (--only)")
        report.write()
        for name in chosen:
            with _step(report, name) as check:
                steps[name](check)
    path = report.write()
    failed = [check.name for check in report.checks.values() if check.status == "failed"]
    print(f"gpu_check: wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else "; no check failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
