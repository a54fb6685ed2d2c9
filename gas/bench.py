"""The backend of `gas bench`: inference latency and throughput of models at several batch sizes, in turns.

Models are named as `gas.named_model` reads them. Settings: CPU in float32; on CUDA, bfloat16 weights and
inputs, eagerly and under `torch.compile` (each a `LatencySettings`). For each setting and batch size every
model first runs a few untimed batches, then the models take turns, one call each per round
(`gas.latency.measure.time_in_turns`), so a change in machine load during the run touches all of them
alike; the figure is the median. Batch 1 gives latency; larger batches give throughput (images per second
of the median batch).
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

from gas.defaults import LATENCY_DEVICES
from gas.errors import GasError
from gas.latency.device import LatencySettings, running_with
from gas.latency.measure import prepare, time_in_turns
from gas.named_model import NamedModel

DEFAULT_BATCH_SIZES = (1, 64, 256)

CPU_FP32 = LatencySettings("cpu", dtype="fp32")
CUDA_BF16 = LatencySettings("cuda", dtype="bf16")
CUDA_BF16_COMPILED = LatencySettings("cuda", dtype="bf16", compile=True)


def settings_for(device: str = "auto", compile: bool = True) -> list[LatencySettings]:
    """CPU float32 and, where CUDA is (or `device` asks for it), CUDA bfloat16 eager and compiled."""
    if device not in ("auto", *LATENCY_DEVICES):
        raise GasError(f"unknown device {device!r}; use auto, {' or '.join(LATENCY_DEVICES)}")
    if device == "cuda":
        CUDA_BF16.check_available()
    settings = [CPU_FP32] if device in ("auto", "cpu") else []
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        settings += [CUDA_BF16, CUDA_BF16_COMPILED] if compile else [CUDA_BF16]
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
    settings' own batch is ignored: each batch size of `batch_sizes` is timed in turn.
    """
    if not models:
        raise GasError("give at least one model")
    if any(size < 1 for size in batch_sizes) or repeats < 1 or batch_repeats < 1 or warmup < 0:
        raise GasError("batch sizes and repeats must be at least 1, warm-up runs at least 0")
    rows = []
    for setting in settings:
        # Static shapes under torch.compile: one specialised graph per batch size, built in its warm-up.
        prepared = {entry.name: prepare(entry.model, setting) for entry in models}
        for batch in batch_sizes:
            sized = dataclasses.replace(setting, batch=batch)
            inputs = {
                entry.name: torch.randn(
                    batch, 3, entry.resolution, entry.resolution, device=setting.device, dtype=setting.torch_dtype
                )
                for entry in models
            }
            calls = {
                name: (lambda module=module, images=inputs[name]: module(images)) for name, module in prepared.items()
            }
            with running_with(sized):
                seconds = time_in_turns(calls, repeats if batch == 1 else batch_repeats, warmup, setting.device)
            for entry in models:
                median = statistics.median(seconds[entry.name])
                rows.append(
                    {
                        "model": entry.name,
                        "setting": setting.kind,
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
        if setting.device == "cuda":
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
