"""CPU inference speed of EfficientViT-M5 (fused), the TurboViT reference and Hiera-T, as gas builds them.

    nice python experiments/bench_inference/run.py [--threads 2] [--repeats 30] [--batch-repeats 3]

Reports batch-1 latency (median over repeats, after warm-up) and batch-64 throughput (images/s from the
median batch time), with ratios against EfficientViT-M5. The models take turns within each repeat, so a
change in machine load during the run affects all of them alike (`gas.latency.measure.time_in_turns`, the timing that
`gas bench` uses). EfficientViT-M5 is also timed before fusion to show what folding its BatchNorms buys.
Writes bench_inference.{csv,md} into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import copy
import os
import statistics

import pandas as pd
import torch
from torch import nn

from experiments.common.cli import harness_parser
from experiments.common.machine import load_line
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas.latency.measure import time_in_turns
from gas.space import get_space, load_genome
from gas.units import format_count

SCRIPT = "experiments/bench_inference/run.py"
BASELINE = "efficientvit_m5 (fused)"


def build_models() -> dict[str, tuple[nn.Module, int, int]]:
    """Name → (eval-mode model at 224px, params, FLOPs) for every model in the comparison."""
    models = {}
    efficientvit = load_genome("efficientvit_m5")
    cost = get_space(efficientvit.space).cost(efficientvit)
    unfused = get_space(efficientvit.space).build(efficientvit).eval()
    models[BASELINE] = (copy.deepcopy(unfused).fuse(), cost.fused.params, cost.fused.flops)
    models["efficientvit_m5 (unfused)"] = (unfused, cost.params, cost.flops)
    for name in ("turbovit", "hiera_tiny"):
        genome = load_genome(name)
        space = get_space(genome.space)
        cost = space.cost(genome)
        models[name] = (space.build(genome).eval(), cost.params, cost.flops)
    return models


def main() -> None:
    parser = harness_parser(__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batch-1 runs per model first (default: 5)")
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1 runs per model (default: 30)")
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size (default: 64)")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed batches per model (default: 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = build_models()
    single = torch.randn(1, 3, 224, 224)
    batch = torch.randn(args.batch, 3, 224, 224)
    load_before = os.getloadavg()

    with torch.inference_mode():
        latencies = time_in_turns(
            {name: (lambda model=model: model(single)) for name, (model, _, _) in models.items()},
            repeats=args.repeats,
            warmup=args.warmup,
        )
        # One untimed large batch first: it allocates that size's buffers.
        batch_times = time_in_turns(
            {name: (lambda model=model: model(batch)) for name, (model, _, _) in models.items()},
            repeats=args.batch_repeats,
            warmup=1,
        )
    load_after = os.getloadavg()

    rows = []
    for name, (_, params, flops) in models.items():
        rows.append(
            {
                "model": name,
                "params": params,
                "flops": flops,
                "batch1_ms_median": 1000 * statistics.median(latencies[name]),
                "batch1_ms_min": 1000 * min(latencies[name]),
                f"batch{args.batch}_images_per_s": args.batch / statistics.median(batch_times[name]),
            }
        )
    table = pd.DataFrame(rows)
    base = table.set_index("model").loc[BASELINE]
    throughput = f"batch{args.batch}_images_per_s"
    table["latency_x_of_m5"] = table["batch1_ms_median"] / base["batch1_ms_median"]
    table["m5_throughput_x"] = base[throughput] / table[throughput]

    write_csv(args.out / "bench_inference.csv", table)
    shown = table.assign(params=table["params"].map(format_count), flops=table["flops"].map(format_count))
    markdown = frame_markdown(shown, ".3g")
    note = (
        f", torch threads {args.threads}. {load_line(load_before, load_after)}: the machine is shared, so absolute "
        "times carry that noise; the ratios, measured in turns, much less."
    )
    write_page(
        args.out,
        "bench_inference",
        "# CPU inference: EfficientViT-M5 vs TurboViT vs Hiera-T\n\n"
        f"Models as gas builds them, eval mode, `torch.inference_mode()`, 224px, {args.threads} torch threads. "
        f"Batch 1: median of {args.repeats} runs after {args.warmup} warm-up runs. Batch {args.batch}: images/s "
        f"from the median of {args.batch_repeats} batches. The models take turns within each repeat. FLOPs are "
        "fvcore multiply-adds; the fused EfficientViT's are counted after folding its BatchNorms.\n"
        "`latency_x_of_m5`: this model's batch-1 latency over the fused EfficientViT-M5's; `m5_throughput_x`: the "
        "fused EfficientViT-M5's batch throughput over this model's.\n\n"
        f"{markdown}\n\n{stamp(command_line(SCRIPT, runner='nice python'), note)}",
    )
    print(markdown)


if __name__ == "__main__":
    main()
