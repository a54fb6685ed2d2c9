"""What the GPU check's steps share: the sizes they run at, the checks they pass or fail, and gpu_check.md."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import markdown_table
from gas.evaluate.proxy import GPU_PROXY, ProxyConfig, default_proxy

SCRIPT = "experiments/gpu_check/run.py"
RUN_SH = "experiments/gpu_check/run.sh"


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
    argv: Sequence[str] = ()  # the arguments the run was given, for the command in the stamp
    checks: dict[str, Check] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def on_gpus(self) -> bool:
        """Whether the steps measure on the GPUs (else on the CPU, at whatever sizes they were given)."""
        return self.cuda and not self.dry_run

    def skip_reason(self) -> str:
        """The status of a step that ran on the CPU instead of the GPUs."""
        return "skipped: dry run" if self.cuda else "skipped: no CUDA"

    def write(self) -> Path:
        failed = [check.name for check in self.checks.values() if check.status == "failed"]
        verdict = f"**{len(failed)} check(s) failed: {', '.join(failed)}.**" if failed else "No check failed."
        if self.dry_run:
            verdict += (
                " DRY RUN: every step ran on the CPU at tiny sizes to test the harness; its figures measure nothing."
            )
        checks = markdown_table(
            ["check", "status", "detail", "seconds"],
            ([check.name, check.status, check.detail, f"{check.seconds:.0f}"] for check in self.checks.values()),
        )
        text = (
            "# GPU check: packed proxy trials, the GPU proxy, bf16 inference\n\n"
            f"{verdict}\n\n{checks}\n\n"
            + "".join(f"{section}\n\n" for section in self.sections.values())
            + stamp(command_line(RUN_SH, self.argv, runner="bash"))
            + f" (helper: `{command_line(SCRIPT, self.argv)}`)\n"
        )
        return write_page(self.out, "gpu_check", text)


@contextlib.contextmanager
def timed_step(report: Report, name: str) -> Iterator[Check]:
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
