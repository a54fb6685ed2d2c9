"""Measured inference latency: warm-up runs, then the median and interquartile range of timed runs.

A network runs as its settings say: in torch (eager or compiled), or exported to ONNX and run by an ONNX
Runtime session (`gas.onnx_model`). The clock (`time_in_turns`, which `gas bench` uses too) is wall time on
the CPU and CUDA events on a GPU.
Several networks measured together take turns, one call each per round, so a change in the machine's
load during the measurement touches all of them alike. The median of the timed runs is the figure; the
interquartile range (IQR) says how much the runs scattered, and so how far to trust it. Measured
`beside_reference`, the turns include `gas.latency.reference`'s network, and each figure carries the
reference's median from the same turns: the latency model keeps the ratio of the two.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gas.errors import GasError
from gas.genome import Genome
from gas.latency.device import LatencySettings, running_with
from gas.latency.reference import REFERENCE_SHAPE, ReferenceNetwork, reference_network
from gas.named_model import load_model
from gas.space import get_space

#: Timed runs per measurement. The median's own scatter shrinks as 1/√runs: with an interquartile range of
#: 10% of the median (a quiet CPU), 20 runs give the median a standard error of about 2%. On the 2-core
#: development machine, busy with other jobs (load 6-9), repeated medians of one network spread 6-46% at 20
#: runs and 10-56% at 40: the load's drift, not the run count, set the spread there.
#: experiments/bench_latency repeats the check; run it on an idle machine.
DEFAULT_RUNS = 20
#: Untimed runs first: allocation, caches, the one-time work of oneDNN and cuDNN kernel selection.
DEFAULT_WARMUP = 3

#: What `measure` accepts: a built module, a genome, or a name as `gas.named_model` reads one (a reference,
#: a genome file, an exported .py file, any of them with ":fused").
Target = nn.Module | Genome | str

#: The reference's name among the timed modules: a name no caller's module takes (it starts with a NUL).
_REFERENCE_KEY = "\0reference"


@dataclass(frozen=True)
class Measurement:
    """Latency of one network: the median of `runs` timed calls and their interquartile range, in seconds.

    `reference` is the median seconds of the reference network (`gas.latency.reference`) in the same turns,
    when it was measured beside it; `ratio` is then the network's time in reference units.
    """

    median: float
    spread: float
    runs: int
    reference: float | None = None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Measurement:
        """The median and IQR of timed runs (a single run has no spread)."""
        if not seconds:
            raise GasError("a measurement needs at least one timed run")
        spread = 0.0
        if len(seconds) > 1:
            lower, _, upper = statistics.quantiles(seconds, n=4, method="inclusive")
            spread = upper - lower
        return cls(statistics.median(seconds), spread, len(seconds))

    @property
    def relative_spread(self) -> float:
        """IQR over the median: 0.05 means the middle half of the runs lay within 5% of the median's size."""
        return self.spread / self.median if self.median > 0 else 0.0

    @property
    def ratio(self) -> float:
        """The median over the reference's median in the same turns; GasError if it was measured alone."""
        if not self.reference:
            raise GasError("this measurement was not taken beside the reference network")
        return self.median / self.reference

    def to_dict(self) -> dict[str, Any]:
        beside = {} if self.reference is None else {"reference_s": self.reference}
        return {"median_s": self.median, "spread_s": self.spread, "runs": self.runs, **beside}


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


def prepare(module: nn.Module, settings: LatencySettings, shape: tuple[int, ...]) -> Callable[[torch.Tensor], object]:
    """A function that runs a copy of `module` as `settings` say, on a batch of inputs of per-example `shape`.

    In torch: the copy in eval mode on the settings' device and dtype, compiled if they say so. In ONNX
    Runtime: a session of the copy's ONNX export, whose batch dimension is dynamic. A copy, so measuring
    never moves, converts or switches the mode of the caller's module.
    """
    if settings.runtime == "onnxruntime":
        from gas.onnx_model import INPUT_NAME, session, to_onnx

        if isinstance(module, ReferenceNetwork) and shape == REFERENCE_SHAPE:
            exported = _reference_onnx()  # the same network every time: exported once per process
        else:
            exported = to_onnx(copy.deepcopy(module), shape, "latency in ONNX Runtime").SerializeToString()
        runner = session(exported, settings.effective_threads())
        # A CPU tensor's .numpy() shares its memory: the call times the session, not a copy.
        return lambda images: runner.run(None, {INPUT_NAME: images.numpy()})
    module = copy.deepcopy(module).eval().to(device=settings.device, dtype=settings.torch_dtype)
    # Static shapes: one graph for the one input shape this module is timed at.
    return torch.compile(module, dynamic=False) if settings.compile else module


@functools.cache
def _reference_onnx() -> bytes:
    from gas.onnx_model import to_onnx

    return to_onnx(reference_network(), REFERENCE_SHAPE, "latency in ONNX Runtime").SerializeToString()


def time_modules(
    modules: Mapping[str, tuple[nn.Module, tuple[int, ...]]],
    settings: LatencySettings,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    beside_reference: bool = False,
) -> dict[str, Measurement]:
    """Latency of each module on a random input of shape (batch, *shape), measured in turns.

    `modules` maps a name to (module, per-example input shape); this is the primitive both end-to-end
    measurements and the latency model's part timings rest on. `beside_reference` adds the reference
    network to the turns and its median to every measurement.
    """
    if runs < 1 or warmup < 0:
        raise GasError(f"runs must be at least 1 and warm-up runs at least 0, got {runs} and {warmup}")
    settings.check_available()
    if beside_reference:
        with_reference = {**modules, _REFERENCE_KEY: (reference_network(), REFERENCE_SHAPE)}
        timed = time_modules(with_reference, settings, runs, warmup)
        reference = timed.pop(_REFERENCE_KEY).median
        return {name: dataclasses.replace(measured, reference=reference) for name, measured in timed.items()}
    with running_with(settings):
        calls = {}
        for name, (module, shape) in modules.items():
            prepared = prepare(module, settings, shape)
            inputs = torch.randn(settings.batch, *shape, device=settings.device, dtype=settings.torch_dtype)
            calls[name] = lambda prepared=prepared, inputs=inputs: prepared(inputs)
        try:
            seconds = time_in_turns(calls, runs, warmup, settings.device)
        except torch.OutOfMemoryError:
            raise GasError(f"out of memory at batch {settings.batch} on {settings.device}") from None
        except Exception as error:
            if not settings.compile:
                raise
            # Compilation happens in the first call; whatever it raises, the user needs one line naming it.
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            raise GasError(f"torch.compile failed: {reason}") from None
        finally:
            del calls
            if settings.device == "cuda":
                torch.cuda.empty_cache()
    return {name: Measurement.of(times) for name, times in seconds.items()}


def measure_reference(settings: LatencySettings, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> Measurement:
    """The reference network's latency, measured on its own."""
    return time_modules({"reference": (reference_network(), REFERENCE_SHAPE)}, settings, runs, warmup)["reference"]


def _resolve(target: Target, resolution: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The module a target names and the shape of one input image."""
    if isinstance(target, str):
        loaded = load_model(target)
        return loaded.model, (3, loaded.resolution, loaded.resolution)
    if isinstance(target, Genome):
        return get_space(target.space).build(target), (3, target.resolution, target.resolution)
    if isinstance(target, nn.Module):
        return target, (3, resolution, resolution)
    raise GasError(f"cannot measure a {type(target).__name__}: give a module, a genome or a model name")


def measure_many(
    targets: Mapping[str, Target] | Sequence[str],
    settings: LatencySettings | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    resolution: int = 224,
    beside_reference: bool = False,
) -> dict[str, Measurement]:
    """End-to-end latency of several networks, measured in turns; names as `gas latency` takes them, or a mapping.

    Genomes and named models run at their own resolution (224px for references and searched genomes);
    bare modules at `resolution`. `beside_reference`: the reference network takes its turns too (see
    `time_modules`).
    """
    named = dict(targets) if isinstance(targets, Mapping) else {name: name for name in dict.fromkeys(targets)}
    if not named:
        raise GasError("give at least one model to measure")
    modules = {name: _resolve(target, resolution) for name, target in named.items()}
    return time_modules(modules, settings or LatencySettings(), runs, warmup, beside_reference)


def measure(
    target: Target,
    settings: LatencySettings | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    resolution: int = 224,
    beside_reference: bool = False,
) -> Measurement:
    """End-to-end inference latency of one network: `warmup` untimed calls, then `runs` timed ones.

    >>> from gas.latency import LatencySettings, measure
    >>> measure(genome, LatencySettings(threads=1), runs=3).median > 0
    True
    """
    return measure_many({"model": target}, settings, runs, warmup, resolution, beside_reference)["model"]
