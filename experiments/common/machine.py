"""What a benchmark ran on: CPU, cores, GPU and library versions, stamped next to every figure."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from gas.latency.device import processor_name


def machine_info() -> dict[str, Any]:
    import torch

    versions = {}
    for package in ("torch", "optuna", "ray", "fvcore", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": processor_name(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": gpu,
        "python": sys.version.split()[0],
        **versions,
    }


def machine_line() -> str:
    """One line for a results table: 'CPU: ... (2 cores), GPU: none, torch 2.13.0, ...'."""
    info = machine_info()
    libraries = ", ".join(f"{name} {info[name]}" for name in ("torch", "optuna", "ray", "fvcore"))
    return f"CPU: {info['cpu']} ({info['cores']} cores), GPU: {info['gpu']}, Python {info['python']}, {libraries}"


def load_line(before: Sequence[float], after: Sequence[float]) -> str:
    """'Load average (1 min) 5.9 before, 3.0 after', from `os.getloadavg()` before and after a measurement."""
    return f"Load average (1 min) {before[0]:.1f} before, {after[0]:.1f} after"
