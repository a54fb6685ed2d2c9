"""`gas bench`: inference latency and throughput of gas models, exported modules and references, timed in turns.

A model is named the way other gas commands name one, plus exported files:

    hiera_tiny, turbovit, ...        a reference genome of a shipped space
    my_genome.json                   a genome file
    generated/NAME.py                a file `gas export` wrote (anything exposing `build_model()`)
    any of these + ":fused"          with its BatchNorms folded first (`model.fuse()`, e.g. efficientvit_m5:fused)

Settings: CPU in float32; on CUDA, bfloat16 weights and inputs, eagerly and under `torch.compile`. For each
setting and batch size every model first runs a few untimed batches, then the models take turns, one call
each per round, so a change in machine load during the run touches all of them alike; the figure is the
median. Batch 1 gives latency; larger batches give throughput (images per second of the median batch).
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gas.errors import GasError
from gas.space import get_space, load_genome
from gas.units import format_count

FUSED_SUFFIX = ":fused"
DEFAULT_BATCH_SIZES = (1, 64, 256)
DEFAULT_BASELINE = "hiera_tiny"


@dataclass
class BenchModel:
    """A model ready to time: eval mode, float32, on the CPU."""

    name: str
    model: nn.Module
    params: int
    flops: int | None  # fvcore-convention FLOPs of one image at `resolution` (after fusion for fused models)
    resolution: int


@dataclass(frozen=True)
class Setting:
    """Where and how the models run."""

    name: str
    device: str
    dtype: torch.dtype
    compiled: bool = False


CPU_FP32 = Setting("cpu fp32", "cpu", torch.float32)
CUDA_BF16 = Setting("cuda bf16", "cuda", torch.bfloat16)
CUDA_BF16_COMPILED = Setting("cuda bf16 compiled", "cuda", torch.bfloat16, compiled=True)


# ---- loading models ----------------------------------------------------------------------------------

_imported = itertools.count()


def _import_file(path: Path) -> Any:
    """Execute a Python file as a fresh module (an exported model needs torch only)."""
    if not path.is_file():
        raise GasError(f"cannot read {path}: no such file")
    name = f"_gas_bench_{next(_imported)}_{path.stem}"  # two files may share a name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GasError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the file look their module up while it executes
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # whatever the file raises, the user needs one line naming it
        del sys.modules[name]
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise GasError(f"cannot import {path}: {reason}") from None
    return module


def load_model(spec: str) -> BenchModel:
    """The model `spec` names (see the module docstring), built with fresh weights; GasError if it cannot be."""
    source, fuse = (spec.removesuffix(FUSED_SUFFIX), True) if spec.endswith(FUSED_SUFFIX) else (spec, False)
    genome = None
    if source.endswith(".py"):
        module = _import_file(Path(source))
        build = getattr(module, "build_model", None)
        if not callable(build):
            raise GasError(f"{source} defines no build_model(); is it a file `gas export` wrote?")
        try:
            model = build()
        except Exception as error:
            raise GasError(f"{source}: build_model() failed: {type(error).__name__}: {error}".splitlines()[0]) from None
        if isinstance(getattr(module, "GENOME", None), Mapping):
            genome = load_genome(module.GENOME)
    else:
        genome = load_genome(source)
        model = get_space(genome.space).build(genome)
    if not isinstance(model, nn.Module):
        raise GasError(f"{source}: build_model() returned a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    if fuse:
        if not callable(getattr(model, "fuse", None)):
            raise GasError(f"{source} cannot be fused: its model has no fuse() (no BatchNorms to fold)")
        model = model.fuse()
    flops = None
    if genome is not None:
        cost = get_space(genome.space).cost(genome)
        fused_cost = getattr(cost, "fused", None)
        flops = fused_cost.flops if fuse and fused_cost is not None else cost.flops
    params = sum(parameter.numel() for parameter in model.parameters())
    resolution = genome.resolution if genome is not None else 224
    return BenchModel(spec, model, params, flops, resolution)


def load_models(specs: Sequence[str]) -> list[BenchModel]:
    """Each distinct spec once, in order."""
    return [load_model(spec) for spec in dict.fromkeys(specs)]


def settings_for(device: str = "auto", compile: bool = True) -> list[Setting]:
    """CPU float32 and, where CUDA is (or `device` asks for it), CUDA bfloat16 eager and compiled."""
    if device not in ("auto", "cpu", "cuda"):
        raise GasError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise GasError("--device cuda asked for, but CUDA is not available here")
    settings = [CPU_FP32] if device in ("auto", "cpu") else []
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        settings += [CUDA_BF16, CUDA_BF16_COMPILED] if compile else [CUDA_BF16]
    return settings


# ---- timing ------------------------------------------------------------------------------------------


def time_call(call: Callable[[], object], device: str = "cpu") -> float:
    """Seconds one call takes on `device` ("cpu" or "cuda"), counting the work it queued there.

    On the CPU it reads the wall clock around the call. On CUDA, where a call returns before its kernels
    finish, a pair of CUDA events brackets the call on the current stream, and the reading waits for the
    second one: the figure is the stream's time from the first kernel's launch to the last one's end,
    which includes any gap the host's launches leave (what a batch-1 caller waits for) but not the time
    before the call started.
    """
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000  # elapsed_time is in milliseconds
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def time_in_turns(
    calls: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each callable, `repeats` times each, the callables taking turns.

    Each callable first runs `warmup` untimed calls (allocation, caches, compilation). Then every round
    calls each one once, starting one further along each round, so no callable always runs right after
    the same other one. Each call is timed by `time_call` on `device` ("cpu" or "cuda"); on CUDA the
    warm-up's queued work finishes before the first timed call.
    """
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repeats):
        for offset in range(len(names)):
            name = names[(round_number + offset) % len(names)]
            seconds[name].append(time_call(calls[name], device))
    return seconds


def run_benchmark(
    models: Sequence[BenchModel],
    settings: Sequence[Setting],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 20,
    batch_repeats: int = 5,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """One row per setting, batch size and model: median and fastest time per batch, and images/s.

    Batch 1 is timed `repeats` times; larger batches `batch_repeats` times (each takes much longer).
    """
    if not models:
        raise GasError("give at least one model")
    if any(size < 1 for size in batch_sizes) or repeats < 1 or batch_repeats < 1 or warmup < 0:
        raise GasError("batch sizes and repeats must be at least 1, warm-up runs at least 0")
    rows = []
    for setting in settings:
        device = torch.device(setting.device)
        prepared = {}
        for entry in models:
            module = copy.deepcopy(entry.model).to(device=device, dtype=setting.dtype)
            # Static shapes: one specialised graph per batch size, built during that size's warm-up.
            prepared[entry.name] = torch.compile(module, dynamic=False) if setting.compiled else module
        for batch in batch_sizes:
            inputs = {
                entry.name: torch.randn(batch, 3, entry.resolution, entry.resolution).to(device, setting.dtype)
                for entry in models
            }
            calls = {
                name: (lambda module=module, images=inputs[name]: module(images)) for name, module in prepared.items()
            }
            with torch.inference_mode():
                seconds = time_in_turns(calls, repeats if batch == 1 else batch_repeats, warmup, device.type)
            for entry in models:
                median = statistics.median(seconds[entry.name])
                rows.append(
                    {
                        "model": entry.name,
                        "setting": setting.name,
                        "batch": batch,
                        "params": entry.params,
                        "flops": entry.flops,
                        "resolution": entry.resolution,
                        "median_ms": 1000 * median,
                        "min_ms": 1000 * min(seconds[entry.name]),
                        "images_per_s": batch / median,
                        "runs": len(seconds[entry.name]),
                    }
                )
        del prepared
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def add_ratios(rows: list[dict[str, Any]], baseline: str) -> str | None:
    """Add each row's latency and throughput relative to `baseline` at the same setting and batch size.

    `latency_x` is this model's median time over the baseline's (below 1: faster); `throughput_x` its
    images/s over the baseline's (above 1: more). Returns the baseline used: `baseline` if it was timed,
    otherwise the first model, or None when there are no rows.
    """
    if not rows:
        return None
    names = [row["model"] for row in rows]
    chosen = baseline if baseline in names else names[0]
    reference = {(row["setting"], row["batch"]): row for row in rows if row["model"] == chosen}
    for row in rows:
        base = reference[(row["setting"], row["batch"])]
        row["baseline"] = chosen
        row["latency_x"] = row["median_ms"] / base["median_ms"]
        row["throughput_x"] = row["images_per_s"] / base["images_per_s"]
    return chosen


# ---- output ------------------------------------------------------------------------------------------


def format_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as an aligned text table."""
    header = ("model", "setting", "batch", "params", "FLOPs", "median ms", "images/s", "latency x", "throughput x")
    body = [
        (
            str(row["model"]),
            str(row["setting"]),
            str(row["batch"]),
            format_count(row["params"]),
            "?" if row["flops"] is None else format_count(row["flops"]),
            f"{row['median_ms']:.2f}",
            f"{row['images_per_s']:.1f}",
            f"{row['latency_x']:.2f}" if "latency_x" in row else "",
            f"{row['throughput_x']:.2f}" if "throughput_x" in row else "",
        )
        for row in rows
    ]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    lines = []
    for cells in [header, *body]:
        text = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(text).rstrip())
    return lines


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The rows as CSV, one column per key (in the order keys first appear)."""
    path = Path(path)
    columns = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path
