"""Where latency is measured: the settings a user picks, and the fingerprint a latency model is kept under.

A latency figure holds only for the hardware and the way the network runs on it, so every measurement and
every latency model carries `LatencySettings` (device, CPU threads, batch, dtype, torch.compile, runtime).
The `fingerprint` adds what the user does not pick but the figure depends on (the CPU or GPU model, the
torch and ONNX Runtime versions); a cached latency model is reused only where the fingerprint is the same.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gas.defaults import LATENCY_DEVICES, LATENCY_DTYPES, LATENCY_RUNTIMES
from gas.errors import GasError

DEVICES = LATENCY_DEVICES
DTYPES = dict(zip(LATENCY_DTYPES, (torch.float32, torch.bfloat16), strict=True))
RUNTIMES = LATENCY_RUNTIMES

#: Fingerprint fields added after latency models were first cached, at the value every earlier model had.
#: `difference` reads a fingerprint without them as having these values, and `fingerprint_id` leaves them
#: out while they have them, so an earlier cache file keeps its name and still loads as a torch one.
LEGACY_FINGERPRINT = {"runtime": "torch", "runtime_version": None}


@dataclass(frozen=True)
class LatencySettings:
    """How a network is run when its latency is measured or predicted.

    `threads` is the CPU thread count while timing (None: whatever torch uses at that moment); `batch`
    images per call (1 is latency as a single user sees it); `dtype` of weights and inputs, fp32 or bf16;
    `compile` runs the network under `torch.compile`; `runtime` is what runs it: eager (or compiled)
    torch, or ONNX Runtime on the model exported to ONNX, with `threads` intra-op threads.

    >>> LatencySettings(device="cpu", threads=1).batch
    1
    """

    device: str = "cpu"
    threads: int | None = None
    batch: int = 1
    dtype: str = "fp32"
    compile: bool = False
    runtime: str = "torch"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise GasError(f"unknown device {self.device!r}; use {' or '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise GasError(f"unknown dtype {self.dtype!r}; use {' or '.join(DTYPES)}")
        if self.runtime not in RUNTIMES:
            raise GasError(f"unknown runtime {self.runtime!r}; use {' or '.join(RUNTIMES)}")
        if self.runtime == "onnxruntime":
            # The onnxruntime package runs on the CPU, and its CPU kernels have no bfloat16 matmul or Gemm.
            if self.compile:
                raise GasError("--compile is torch.compile; ONNX Runtime optimises the graph itself, drop --compile")
            if self.device != "cpu":
                raise GasError(f"ONNX Runtime runs on the CPU here, not {self.device}; use --device cpu")
            if self.dtype != "fp32":
                raise GasError(f"ONNX Runtime's CPU kernels run fp32, not {self.dtype}; use --dtype fp32")
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise GasError(f"threads must be at least 1, got {self.threads}")
        if isinstance(self.batch, bool) or self.batch < 1:
            raise GasError(f"batch must be at least 1, got {self.batch}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def check_available(self) -> None:
        """GasError in one line if this machine cannot run these settings (CUDA asked for, none here, or
        ONNX Runtime without the onnx extra)."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise GasError("--device cuda asked for, but CUDA is not available here")
        if self.runtime == "onnxruntime":
            from gas.onnx_model import require

            require("latency in ONNX Runtime")

    def effective_threads(self) -> int:
        """The CPU thread count the settings time with."""
        return self.threads if self.threads is not None else torch.get_num_threads()

    @property
    def kind(self) -> str:
        """'cpu fp32', 'cuda bf16 compiled' or 'cpu fp32 onnxruntime': where and how, without threads or batch."""
        words = [self.device, self.dtype] + (["compiled"] if self.compile else [])
        return " ".join(words + ([self.runtime] if self.runtime != "torch" else []))

    def describe(self) -> str:
        """'cpu fp32, 1 thread, batch 1', 'cuda bf16 compiled, batch 8' or 'cpu fp32 onnxruntime, 1 thread, batch 1'."""
        threads = self.effective_threads()
        where = f", {threads} thread{'s' if threads != 1 else ''}" if self.device == "cpu" else ""
        return f"{self.kind}{where}, batch {self.batch}"


def processor_name() -> str:
    """The CPU model as the kernel reports it ('AMD EPYC 7B13'), or what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(settings: LatencySettings) -> dict[str, Any]:
    """What a latency figure depends on: the settings plus the hardware model and the runtimes' versions.

    The CPU thread count is the effective one (so `threads=None` on a 2-thread torch equals `threads=2`);
    on CUDA the thread count is left out (the GPU does the work) and the GPU's name is added. The CPU model
    stays in on CUDA: at batch 1 the host's kernel launches are a large part of the time. `runtime_version`
    is ONNX Runtime's version under it, and None under torch, whose version is `torch`; that stays in under
    ONNX Runtime too, since torch's exporter writes the graph ONNX Runtime runs.

    >>> sorted(fingerprint(LatencySettings(threads=1)))
    ['batch', 'compile', 'cpu', 'device', 'dtype', 'gpu', 'runtime', 'runtime_version', 'threads', 'torch']
    """
    settings.check_available()
    on_cuda = settings.device == "cuda"
    version = None
    if settings.runtime == "onnxruntime":
        from gas.onnx_model import runtime_version

        version = runtime_version()
    return {
        "device": settings.device,
        "cpu": processor_name(),
        "threads": None if on_cuda else settings.effective_threads(),
        "gpu": torch.cuda.get_device_name() if on_cuda else None,
        "dtype": settings.dtype,
        "batch": settings.batch,
        "compile": settings.compile,
        "torch": torch.__version__,
        "runtime": settings.runtime,
        "runtime_version": version,
    }


def fingerprint_id(fields: dict[str, Any]) -> str:
    """A short stable name for a fingerprint, used as the cache file's name.

    Fields at their `LEGACY_FINGERPRINT` value are left out, so a torch fingerprint keeps the name it had
    before those fields existed.
    """
    kept = {name: value for name, value in fields.items() if LEGACY_FINGERPRINT.get(name, object()) != value}
    text = json.dumps(kept, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def difference(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """'threads 1 here, 2 in the file' for the first field that differs, or None if none does.

    A field `LEGACY_FINGERPRINT` names and a fingerprint lacks reads as its value there (a torch runtime).
    """
    expected, found = {**LEGACY_FINGERPRINT, **expected}, {**LEGACY_FINGERPRINT, **found}
    for name in sorted(set(expected) | set(found)):
        if expected.get(name) != found.get(name):
            return f"{name} {expected.get(name)!r} here, {found.get(name)!r} in the file"
    return None


@contextmanager
def running_with(settings: LatencySettings) -> Iterator[None]:
    """Set torch's CPU thread count for the duration (restoring it after), in inference mode."""
    before = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(before)


def settings_dict(settings: LatencySettings) -> dict[str, Any]:
    """The settings as plain JSON data."""
    return asdict(settings)
