"""GPU check: does gas train on GPUs as designed, how fast, how busy the device is, and how well the GPU proxy ranks.

    bash experiments/gpu_check/run.sh                     # a machine with a CUDA GPU: about 8 minutes on one H200
    bash experiments/gpu_check/run.sh --dry-run           # anywhere: CPU only, tiny sizes, a few minutes
    python experiments/gpu_check/run.py --only bench      # one step again (tests, search, fidelity, bench)
    python experiments/gpu_check/bench.py --dry-run       # the same: each step is a script of its own

Steps, each a module of this folder that `run.py` calls in this order, and a row of the checks table in
gpu_check.md (passed, failed, or skipped with the reason):

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

import os
import tempfile
from collections.abc import Sequence

import torch

from experiments.common.cli import fail, harness_parser
from experiments.common.results import REPO, RESULTS
from experiments.gpu_check import bench, fidelity, search, tests
from experiments.gpu_check.harness import DEVICE_SIZES, DRY_SIZES, Check, Report, timed_step

# The steps in the order they run: each module's run() takes the report, its check and the sizes.
STEPS = {"tests": tests, "search": search, "fidelity": fidelity, "bench": bench}


def main(argv: Sequence[str] | None = None, step: str | None = None) -> int:
    """The GPU check; with `step`, the command line of that step's own script, which runs it alone."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = harness_parser(STEPS[step].__doc__ if step else __doc__, out=None)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (no CUDA needed)")
    parser.add_argument("--out", type=Path, help="results folder (default: experiments/results; dry run: a tmp one)")
    if step is None:
        parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps (default: all)")
    args = parser.parse_args(argv)
    if step is not None:  # the runner's command that does the same, for the page's stamp
        args.only, argv = [step], [*argv, "--only", step]
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        return fail("gpu_check", "no CUDA device here; --dry-run runs the harness on the CPU")
    if args.dry_run:
        out = args.out or Path(tempfile.mkdtemp(prefix="gas-gpu-check-"))
        if out.resolve() == RESULTS.resolve():
            return fail("gpu_check", "a dry run never writes into experiments/results; give another --out")
    else:
        out = args.out or RESULTS
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)  # model names like generated/NAME.py and Ray's runs/ folder are relative to the repository
    sizes = DRY_SIZES if args.dry_run else DEVICE_SIZES
    if args.dry_run:  # runs in this process take one core, as each search trial does: no oversubscription
        torch.set_num_threads(1)
    report = Report(out, args.dry_run, cuda, argv)
    chosen = args.only or list(STEPS)
    for name in STEPS:
        report.checks[name] = Check(name, "not run" if name in chosen else "not run (--only)")
    report.write()
    for name in chosen:
        with timed_step(report, name) as check:
            STEPS[name].run(report, check, sizes)
    path = report.write()
    failed = [check.name for check in report.checks.values() if check.status == "failed"]
    print(f"gpu_check: wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else "; no check failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
