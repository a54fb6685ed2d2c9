"""Worker memory: resident memory of a Ray Tune worker after each default proxy trial, against one process's loop.

    python experiments/worker_memory/run.py                                   # every variant, 20 trials each
    python experiments/worker_memory/run.py --variants ray ray-arena2 --trials 20
    python experiments/worker_memory/run.py --variants loop ray --epochs 1    # a cheaper screening run
    python experiments/worker_memory/run.py --report-only                     # redraw the table from the CSV

Every variant evaluates the same `--trials` random genomes within the budget (what TPE's start-up trials
are) with `gas.evaluate.proxy.evaluate` at the default `ProxyConfig()` (`--epochs` overrides only the
epochs), one torch thread per trial, and records after each trial, in the process that ran it: resident
memory (VmRSS), glibc malloc's bytes in use and bytes held free (`mallinfo2`, all arenas), the number of
malloc arenas (`malloc_info`), which arena served the trial's thread, threads and live Python objects.
The loop variants run in a fresh spawned process each, so no variant inherits another's heap.

Variants:
    loop          one process evaluating the genomes in a loop on its main thread
    loop-threads  the same loop, but each trial on a fresh thread, as Ray Tune runs a function trial
    ray           `gas search` as it ran before its fix: a local cluster from `gas.search.cluster.ray_cluster`
                  with glibc's malloc defaults, trials of 1 CPU on a Tuner with reuse_actors=True,
                  per-epoch `tune.report` (as `run_trial` does), nothing trimmed after a trial
    ray-arena2    ray with MALLOC_ARENA_MAX=2 in the workers' environment
    ray-arena1    ray with MALLOC_ARENA_MAX=1: every thread of a worker allocates from glibc's main arena
    ray-trim      ray with glibc's malloc_trim(0) called at the end of every trial
    ray-arena1-trim  both: what `gas search` runs now (cluster.py sets MALLOC_ARENA_MAX=1 for the workers
                  and `run_trial` calls malloc_trim after each trial)
    ray-mmap      ray with MALLOC_MMAP_THRESHOLD_=131072: glibc's mmap threshold fixed at its default, so
                  large blocks are always mapped and unmapped, never kept in an arena
    ray-no-reuse  ray with reuse_actors=False: a fresh worker process for every trial

A ray variant's environment reaches the workers through the `runtime_env` that `ray_cluster` passes to
`ray.init`: what `gas.search.cluster._worker_env` returns, less any MALLOC_* setting of its own, plus the
variant's. So each variant runs with exactly the malloc settings it names, whatever cluster.py sets.

Writes worker_memory_trials.csv (one row per trial), worker_memory.csv (one row per worker: memory after
its first and its last trial) and worker_memory.md into --out (default: this folder). A rerun replaces
the rows of the variants it ran with the same epochs and trials, and keeps the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from experiments.common.cli import harness_parser
from experiments.common.results import command_line, machine_stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.workers import worker_pool
from gas.defaults import DEFAULT_SPACE
from gas.evaluate.proxy import ProxyConfig, evaluate
from gas.search.sampling import sample_genomes
from gas.space import load_genome
from gas.units import compact_count, parse_count

SCRIPT = "experiments/worker_memory/run.py"
OUT = Path(__file__).resolve().parent
MIB = 1024**2
# glibc's alignment of a secondary arena's heaps: 2 x DEFAULT_MMAP_THRESHOLD_MAX on 64-bit.
HEAP_MAX_SIZE = 64 * MIB
# What identifies a run in the tables: a rerun with the same ones replaces its rows.
RUN = ["variant", "epochs", "run_trials"]
# The goal: a worker's RSS after its last trial within this factor of its RSS after its first.
GOAL_RATIO = 1.5


@dataclass(frozen=True)
class Variant:
    kind: str  # "loop", "threads" or "ray"
    what: str
    env: dict[str, str] = field(default_factory=dict)
    trim: bool = False
    reuse_actors: bool = True


VARIANTS = {
    "loop": Variant("loop", "one process, main thread"),
    "loop-threads": Variant("threads", "one process, a fresh thread per trial"),
    "ray": Variant("ray", "Ray Tune as gas search ran it, glibc defaults"),
    "ray-arena2": Variant("ray", "ray, MALLOC_ARENA_MAX=2 in the workers", env={"MALLOC_ARENA_MAX": "2"}),
    "ray-arena1": Variant("ray", "ray, MALLOC_ARENA_MAX=1 in the workers", env={"MALLOC_ARENA_MAX": "1"}),
    "ray-trim": Variant("ray", "ray, malloc_trim(0) after every trial", trim=True),
    "ray-arena1-trim": Variant(
        "ray", "ray, MALLOC_ARENA_MAX=1 and malloc_trim(0) after every trial", env={"MALLOC_ARENA_MAX": "1"}, trim=True
    ),
    "ray-mmap": Variant(
        "ray", "ray, MALLOC_MMAP_THRESHOLD_=131072 in the workers", env={"MALLOC_MMAP_THRESHOLD_": "131072"}
    ),
    "ray-no-reuse": Variant("ray", "ray, reuse_actors=False", reuse_actors=False),
}


# ---- measuring one process --------------------------------------------------------------------------


MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`: every field a size_t, summed over all arenas."""

    _fields_ = tuple((name, ctypes.c_size_t) for name in MALLINFO2_FIELDS)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _proc_status(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def _arena_count(libc: ctypes.CDLL) -> int:
    """Malloc arenas of this process, from the XML that glibc's malloc_info writes."""
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as file:
        stream = libc.fopen(file.name.encode(), b"w")
        if not stream:
            return -1
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return Path(file.name).read_text().count("<heap nr=")


def _brk_heap() -> tuple[int, int]:
    """Address range of the main arena's heap (the brk segment), or (0, 0) if this process has none."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[heap]"):
                start, end = line.split()[0].split("-")
                return int(start, 16), int(end, 16)
    return 0, 0


def thread_arena() -> str:
    """Which malloc arena serves the calling thread: "main", or the address of a secondary arena.

    A small block is allocated and freed. In the brk heap it belongs to the main arena; otherwise it lies in
    a secondary arena's heap, which glibc aligns to HEAP_MAX_SIZE (64 MiB on 64-bit) and starts with a
    `heap_info` whose first field points to the arena.
    """
    libc = _libc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(64)
    try:
        start, end = _brk_heap()
        if start <= block < end:
            return "main"
        heap = block & ~(HEAP_MAX_SIZE - 1)
        return hex(ctypes.c_void_p.from_address(heap).value or 0)
    finally:
        libc.free(block)


def memory_sample() -> dict[str, float]:
    """This process's resident memory and what glibc malloc holds, in MiB; arenas, threads, Python objects."""
    libc = _libc()
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {
        "rss_mib": _proc_status("VmRSS") / 1024,
        "malloc_in_use_mib": (info.uordblks + info.hblkhd) / MIB,
        "malloc_free_mib": info.fordblks / MIB,
        "arenas": _arena_count(libc),
        "threads": _proc_status("Threads"),
        "python_objects": len(gc.get_objects()),
    }


def malloc_trim() -> None:
    _libc().malloc_trim(0)


def _accuracy(result: Any) -> float:
    return float(result["accuracy"] if isinstance(result, dict) else result.accuracy)


def evaluate_and_measure(genome: dict, proxy: ProxyConfig, trim: bool, report: Any = None) -> dict[str, Any]:
    """One trial as `run_trial` runs it (on whatever thread calls this), then the memory it left behind."""
    import torch

    torch.set_num_threads(1)
    started, started_cpu = time.perf_counter(), time.thread_time()
    accuracy = _accuracy(evaluate(load_genome(genome), proxy, report=report))
    seconds, cpu_seconds = time.perf_counter() - started, time.thread_time() - started_cpu
    trim_started = time.perf_counter()
    if trim:
        malloc_trim()
    return {
        "pid": os.getpid(),
        "thread": threading.get_native_id(),
        "arena": thread_arena(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # the trial thread's CPU time, kernel time (page faults, mmap) included
        "trim_seconds": time.perf_counter() - trim_started,
        "accuracy": accuracy,
        **memory_sample(),
    }


# ---- the variants -----------------------------------------------------------------------------------


def run_loop(genomes: list[dict], proxy: ProxyConfig, fresh_threads: bool) -> list[dict[str, Any]]:
    """Evaluate every genome in this process, one after another."""
    rows = []
    for index, genome in enumerate(genomes):
        if fresh_threads:  # a pool of one that ends with the trial: a fresh thread every time
            with ThreadPoolExecutor(max_workers=1) as pool:
                row = pool.submit(evaluate_and_measure, genome, proxy, False).result()
        else:
            row = evaluate_and_measure(genome, proxy, False)
        rows.append({"index": index, **row})
        print(f"trial {index}: {row['rss_mib']:.0f} MiB resident", flush=True)
    return rows


def run_loop_alone(genomes: list[dict], proxy: ProxyConfig, variant: Variant) -> list[dict[str, Any]]:
    """`run_loop` in a fresh process with the variant's environment, so no earlier variant's heap is in it."""
    saved = {name: os.environ.get(name) for name in variant.env}
    os.environ.update(variant.env)  # a spawned process inherits it
    try:
        with worker_pool(1, threads=1) as pool:
            return pool.submit(run_loop, genomes, proxy, variant.kind == "threads").result()
    finally:
        _restore(saved)


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def ray_trial(config: dict[str, Any], proxy: ProxyConfig, log: str, trim: bool) -> None:
    """The Tune function: `run_trial`'s reporting (every epoch, then the final result), plus a memory sample."""
    from ray import tune

    genome = config["genomes"][config["index"]]
    row = evaluate_and_measure(genome, proxy, trim, report=lambda metrics: tune.report(dict(metrics)))
    row["index"] = config["index"]
    with open(log, "a") as file:  # a line is one write, so concurrent workers do not interleave
        file.write(json.dumps(row) + "\n")
    tune.report({"accuracy": row["accuracy"], "finished": True})


def run_ray(genomes: list[dict], proxy: ProxyConfig, variant: Variant) -> list[dict[str, Any]]:
    """The genomes as Ray Tune trials on a local cluster that `gas.search.cluster.ray_cluster` starts.

    The variant's environment replaces the malloc settings in the `runtime_env` of that cluster, next to
    the rest of what `_worker_env` puts there.
    """
    from ray import tune

    from gas.search import cluster

    worker_env = cluster._worker_env
    cluster._worker_env = lambda: {
        **{name: value for name, value in worker_env().items() if not name.startswith("MALLOC_")},
        **variant.env,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="worker_memory-") as folder:
            log = str(Path(folder) / "trials.jsonl")
            Path(log).touch()
            with cluster.ray_cluster():
                trainable = tune.with_parameters(ray_trial, proxy=proxy, log=log, trim=variant.trim)
                tuner = tune.Tuner(
                    tune.with_resources(trainable, {"cpu": 1, "gpu": 0}),
                    param_space={
                        "index": tune.grid_search(list(range(len(genomes)))),
                        "genomes": genomes,
                    },
                    tune_config=tune.TuneConfig(
                        reuse_actors=variant.reuse_actors,
                        trial_name_creator=lambda trial: f"trial_{trial.config['index']}",
                        trial_dirname_creator=lambda trial: f"trial_{trial.config['index']}",
                    ),
                    run_config=tune.RunConfig(storage_path=folder, name="worker_memory", verbose=0),
                )
                tuner.fit()
            return [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    finally:
        cluster._worker_env = worker_env


# ---- tables -----------------------------------------------------------------------------------------


def per_worker(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per run and worker process: memory after the worker's first and its last trial."""
    rows = []
    for (variant, epochs, run_trials, pid), group in trials.groupby([*RUN, "pid"], sort=False):
        group = group.sort_values("order")
        first, last = group.iloc[0], group.iloc[-1]
        rows.append(
            {
                "variant": variant,
                "epochs": epochs,
                "run_trials": run_trials,
                "worker": pid,
                "trials": len(group),
                "rss_first_mib": first["rss_mib"],
                "rss_last_mib": last["rss_mib"],
                "rss_max_mib": group["rss_mib"].max(),
                "ratio": last["rss_mib"] / first["rss_mib"],
                "in_use_last_mib": last["malloc_in_use_mib"],
                "free_held_last_mib": last["malloc_free_mib"],
                "arenas_last": last["arenas"],
                "trial_arenas": group["arena"].nunique(),
                "threads_last": last["threads"],
                "median_trial_s": group["seconds"].median(),
                "median_trial_cpu_s": group["cpu_seconds"].median(),
                "max_trim_s": group["trim_seconds"].max(),
            }
        )
    return pd.DataFrame(rows)


def cpu_against_ray(trials: pd.DataFrame, variant: str, epochs: int) -> float | None:
    """Median over genomes of this variant's trial CPU time / the ray variant's on the same genome."""
    if variant == "ray" or "cpu_seconds" not in trials:
        return None
    same = trials[trials["epochs"] == epochs].drop_duplicates(["variant", "index"])
    mine = same[same["variant"] == variant].set_index("index")["cpu_seconds"]
    ray = same[same["variant"] == "ray"].set_index("index")["cpu_seconds"]
    ratios = (mine / ray).dropna()
    return float(ratios.median()) if len(ratios) else None


def write_report(out: Path, trials: pd.DataFrame, args: argparse.Namespace, argv: Sequence[str]) -> str:
    workers = per_worker(trials)
    write_csv(out / "worker_memory.csv", workers)
    shown = workers.copy()
    shown["worker"] = shown.groupby(RUN).cumcount() + 1
    shown["what"] = shown["variant"].map(lambda name: VARIANTS[name].what if name in VARIANTS else "")
    order = {name: position for position, name in enumerate(VARIANTS)}
    shown = shown.sort_values(
        ["epochs", "run_trials", "variant"], key=lambda column: column.map(lambda v: order.get(v, v)), kind="stable"
    )
    columns = ["variant", "what", "epochs", "run_trials", "worker", "trials", "rss_first_mib", "rss_last_mib"]
    columns += ["ratio"]
    columns += [
        "in_use_last_mib",
        "free_held_last_mib",
        "arenas_last",
        "trial_arenas",
        "threads_last",
        "median_trial_s",
        "median_trial_cpu_s",
    ]
    table = frame_markdown(shown[columns], ".3g")
    lines = []
    for (variant, epochs, run_trials), group in shown.groupby(RUN, sort=False):
        worst = group["ratio"].max()
        verdict = "within" if worst <= GOAL_RATIO else "over"
        cost = cpu_against_ray(trials, variant, epochs)
        lines.append(
            f"- {variant} ({run_trials} trials of {epochs} epochs, {len(group)} worker process(es)): the worst ends "
            f"at {worst:.2f}x its RSS after its first trial, "
            f"{group['rss_last_mib'].max():.0f} MiB; {verdict} the {GOAL_RATIO}x goal"
            + ("" if cost is None else f"; trial CPU time {cost:.2f}x ray's on the same genomes (median)")
        )
    commands = sorted(set(trials["command"]))
    proxy = ProxyConfig()
    markdown = (
        "# Worker memory across trials\n\n"
        f"Each variant trains the same random {DEFAULT_SPACE} genomes within the {compact_count(args.budget)} budget "
        f"(seed {args.seed}) with the default proxy ({proxy.dataset}, {proxy.resolution}px, {proxy.train_size} "
        "images; `epochs` as shown), one torch thread per trial. RSS, malloc in use and malloc free-but-held are "
        "measured in the process that ran the trial, right after it (MiB); `ratio` = RSS after the worker's last "
        "trial / after its first; `run_trials`: trials of the whole run, `trials`: of the worker. "
        "`trial_arenas`: distinct malloc arenas the worker's trials ran on; "
        "`median_trial_cpu_s`: the trial thread's CPU time, which other jobs on the machine disturb less than "
        "the wall time.\n\n"
        f"{table}\n\n"
        + "\n".join(lines)
        + f"\n\n{machine_stamp()}\n\nCommands:\n\n"
        + "".join(f"- `{command}`\n" for command in commands)
    )
    write_page(out, "worker_memory", markdown)
    return table + "\n\n" + "\n".join(lines)


def proxy_config(epochs: int | None) -> ProxyConfig:
    config = ProxyConfig()
    if epochs is None:
        return config
    if hasattr(config, "with_overrides"):
        return config.with_overrides(epochs=epochs)
    return dataclasses.replace(config, epochs=epochs)


def proxy_epochs(config: ProxyConfig) -> int:
    return int(config.train.epochs if hasattr(config, "train") else config.epochs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw the table from the trials CSV", out=OUT)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--trials", type=int, default=20, help="trials per variant (default: 20)")
    parser.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: the proxy's own)")
    parser.add_argument("--budget", type=parse_count, default=parse_count("2.5G"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    trials_csv = args.out / "worker_memory_trials.csv"
    existing = pd.read_csv(trials_csv) if trials_csv.exists() else pd.DataFrame()
    if not args.report_only:
        proxy = proxy_config(args.epochs)
        epochs = proxy_epochs(proxy)
        genomes = [
            genome.to_dict() for genome, _ in sample_genomes(DEFAULT_SPACE, args.trials, args.seed, 224, args.budget)
        ]
        command = command_line(SCRIPT, argv)
        for name in args.variants:
            variant = VARIANTS[name]
            print(f"== {name}: {variant.what}", flush=True)
            if variant.kind == "ray":
                rows = run_ray(genomes, proxy, variant)
            else:
                rows = run_loop_alone(genomes, proxy, variant)
            table = pd.DataFrame(rows)
            table["order"] = range(len(table))  # the order trials finished in
            table[[*RUN, "command"]] = name, epochs, args.trials, command
            if len(existing):
                same_run = existing[RUN].eq(pd.Series([name, epochs, args.trials], index=RUN)).all(axis=1)
                existing = existing[~same_run]
            existing = pd.concat([existing, table], ignore_index=True)
            write_csv(trials_csv, existing)
    if not len(existing):
        print(f"no trials in {trials_csv}", file=sys.stderr)
        return 1
    print(write_report(args.out, existing, args, argv))
    return 0


if __name__ == "__main__":
    # Through the package, so Ray's workers import this module's functions instead of unpickling copies.
    from experiments.worker_memory import run

    sys.exit(run.main())
