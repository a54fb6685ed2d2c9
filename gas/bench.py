"""The backend of `gas bench`: inference latency and throughput of models at several batch sizes, in turns.

Models are named as `gas.named_model` reads them. Settings: CPU in float32, in torch and (with the onnx
extra) in ONNX Runtime; on CUDA, bfloat16 weights and inputs, eagerly and under `torch.compile` (each a
`LatencySettings`). For each device and batch size every model in every setting first runs a few untimed
batches, then they all take turns, one call each per round (`gas.latency.measure.time_in_turns`), so a
change in machine load during the run touches all of them alike; the figure is the median. Batch 1 gives
latency; larger batches give throughput (images per second of the median batch).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gas.defaults import LATENCY_DEVICES, LATENCY_RUNTIMES
from gas.errors import GasError
from gas.latency.device import LatencySettings, running_with
from gas.latency.measure import prepare, time_in_turns
from gas.named_model import NamedModel

DEFAULT_BATCH_SIZES = (1, 64, 256)

CPU_FP32 = LatencySettings("cpu", dtype="fp32")
CUDA_BF16 = LatencySettings("cuda", dtype="bf16")
CUDA_BF16_COMPILED = LatencySettings("cuda", dtype="bf16", compile=True)


def settings_for(
    device: str = "auto", compile: bool = True, runtimes: Sequence[str] = ("torch",)
) -> list[LatencySettings]:
    """CPU float32 in each of `runtimes` and, where CUDA is (or `device` asks for it), CUDA bfloat16 eager
    and compiled (torch only: ONNX Runtime runs on the CPU here)."""
    if device not in ("auto", *LATENCY_DEVICES):
        raise GasError(f"unknown device {device!r}; use auto, {' or '.join(LATENCY_DEVICES)}")
    unknown = [runtime for runtime in runtimes if runtime not in LATENCY_RUNTIMES]
    if unknown or not runtimes:
        raise GasError(f"unknown runtime {unknown[0] if unknown else ''!r}; use {' or '.join(LATENCY_RUNTIMES)}")
    if device == "cuda":
        CUDA_BF16.check_available()
        if "torch" not in runtimes:
            raise GasError("ONNX Runtime runs on the CPU here; use --device cpu or auto")
    cpu = [dataclasses.replace(CPU_FP32, runtime=runtime) for runtime in dict.fromkeys(runtimes)]
    settings = cpu if device in ("auto", "cpu") else []
    if "torch" in runtimes and (device == "cuda" or (device == "auto" and torch.cuda.is_available())):
        settings += [CUDA_BF16, CUDA_BF16_COMPILED] if compile else [CUDA_BF16]
    for setting in settings:
        setting.check_available()  # ONNX Runtime without the onnx extra: one line, before any model loads
    return settings


def run_benchmark(
    models: Sequence[NamedModel],
    settings: Sequence[LatencySettings],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 20,
    batch_repeats: int = 5,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """One row per setting, batch size and model: median and fastest time per batch, and images/s.

    Batch 1 is timed `repeats` times; larger batches `batch_repeats` times (each takes much longer). The
    settings' own batch is ignored: each batch size of `batch_sizes` is timed in turn. Settings on one
    device are timed in the same turns, so eager torch, torch.compile and ONNX Runtime see the same load;
    each takes its CPU thread count from torch's when this is called (their `threads` are not applied).
    """
    if not models:
        raise GasError("give at least one model")
    if any(size < 1 for size in batch_sizes) or repeats < 1 or batch_repeats < 1 or warmup < 0:
        raise GasError("batch sizes and repeats must be at least 1, warm-up runs at least 0")
    by_name = {entry.name: entry for entry in models}
    rows = []
    for device in dict.fromkeys(setting.device for setting in settings):
        on_device = [setting for setting in settings if setting.device == device]
        # Static shapes under torch.compile: one specialised graph per batch size, built in its warm-up.
        # ONNX Runtime sessions take any batch size: one export per model, not per batch size.
        prepared = {
            (setting, entry.name): prepare(entry.model, setting, (3, entry.resolution, entry.resolution))
            for setting in on_device
            for entry in models
        }
        for batch in batch_sizes:
            calls = {}
            for (setting, name), run in prepared.items():
                entry = by_name[name]
                shape = (batch, 3, entry.resolution, entry.resolution)
                images = torch.randn(*shape, device=device, dtype=setting.torch_dtype)
                calls[f"{setting.kind}|{name}"] = lambda run=run, images=images: run(images)
            with running_with(dataclasses.replace(on_device[0], threads=None, batch=batch)):
                seconds = time_in_turns(calls, repeats if batch == 1 else batch_repeats, warmup, device)
            for setting in on_device:
                for entry in models:
                    timed = seconds[f"{setting.kind}|{entry.name}"]
                    median = statistics.median(timed)
                    rows.append(
                        {
                            "model": entry.name,
                            "setting": setting.kind,
                            "runtime": setting.runtime,
                            "compiled": setting.compile,
                            "device": setting.device,
                            "dtype": setting.dtype,
                            "batch": batch,
                            "params": entry.params,
                            "flops": entry.flops,
                            "resolution": entry.resolution,
                            "median_ms": 1000 * median,
                            "min_ms": 1000 * min(timed),
                            "images_per_s": batch / median,
                            "runs": len(timed),
                        }
                    )
        del prepared
        if device == "cuda":
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


def add_runtime_ratios(rows: list[dict[str, Any]]) -> bool:
    """Add `vs_eager` to each row: its median time over the same model's in eager torch at the same device,
    dtype and batch size (below 1: faster than eager). Returns whether any row was timed other than eagerly."""
    eager = {
        (row["model"], row["device"], row["dtype"], row["batch"]): row["median_ms"]
        for row in rows
        if row["runtime"] == "torch" and not row["compiled"]
    }
    for row in rows:
        base = eager.get((row["model"], row["device"], row["dtype"], row["batch"]))
        row["vs_eager"] = None if base is None else row["median_ms"] / base
    return any(row["runtime"] != "torch" or row["compiled"] for row in rows)


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
