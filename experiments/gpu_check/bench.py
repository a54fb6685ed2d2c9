"""GPU check, step bench: bf16 inference of the searched 2.5G picks against Hiera-T, eager and compiled.

    python experiments/gpu_check/bench.py [--dry-run] [--out DIR]    # as run.py --only bench

Batch-1 latency and batch-256 throughput of the searched 2.5G picks (generated/turbovit_search_2_5g*.py),
the turbovit reference, Hiera-T and the fused EfficientViT-M5, with ratios to Hiera-T (gas.bench, what
`gas bench` runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/gpu_check/NAME.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.common.results import REPO
from experiments.gpu_check.harness import Check, Report, Sizes

BASELINE = "hiera_tiny"
REFERENCES = ("hiera_tiny", "turbovit", "efficientvit_m5:fused")
SEARCHED_PICKS = "generated/turbovit_search_2_5g*.py"
# The goal printed beside the figures.
GOAL_THROUGHPUT_OVER_HIERA = 2.0


def bench_models() -> list[str]:
    picks = sorted(str(path.relative_to(REPO)) for path in REPO.glob(SEARCHED_PICKS))
    return [*picks, *REFERENCES]


def run(report: Report, check: Check, sizes: Sizes) -> None:
    from gas.bench import CPU_FP32, add_ratios, run_benchmark, settings_for, write_csv
    from gas.cli.bench import format_rows
    from gas.named_model import load_models

    on_gpus = report.on_gpus
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
    check.status = "passed" if on_gpus else report.skip_reason()
    check.detail = f"{len(models)} models x {len(settings)} settings x {len(sizes.bench_batches)} batch sizes" + (
        "" if on_gpus else " timed on the CPU in fp32 (the CUDA bf16 rows need CUDA)"
    )


if __name__ == "__main__":
    from experiments.gpu_check.run import main

    sys.exit(main(step="bench"))
