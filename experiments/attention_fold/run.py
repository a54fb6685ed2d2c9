"""CPU latency of mask-unit attention with its windows folded into the batch, against the 5-D form it replaced.

    flock /tmp/gas-bench.lock nice python experiments/attention_fold/run.py [--threads 1 2] [--repeats 40]

`turbovit` and `hiera_tiny` are each timed twice with the same weights: as gas builds them (windows folded into
the batch, 4-D tensors into `scaled_dot_product_attention`, whose fused CPU kernel takes them) and with every
attention layer running the earlier 5-D form ([batch, heads, windows, tokens, head_dim]), which only the math
fallback accepts. Both forms must give the same outputs before anything is timed. Timing is `gas bench`'s
(`gas.bench.run_benchmark`: CPU float32, the four models in turns, median per batch). Writes
attention_fold.{csv,md} into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import copy
import os
import types

import torch
import torch.nn.functional as F
from torch import nn

from experiments.common.cli import harness_parser
from experiments.common.results import command_line, stamp, write_page
from gas.bench import CPU_FP32, run_benchmark, write_csv
from gas.models.hiera import MaskUnitAttention, q_pool
from gas.named_model import load_model

MODELS = ("turbovit", "hiera_tiny")
FIVE_D = " (5-D attention)"


def five_d_forward(self: MaskUnitAttention, x: torch.Tensor) -> torch.Tensor:
    """The attention as it was: windows kept as their own axis, so the inputs are 5-D."""
    batch, tokens, _ = x.shape
    qkv = self.qkv(x).reshape(batch, tokens // self.windows, self.windows, 3, self.heads, -1)
    q, k, v = qkv.permute(3, 0, 4, 2, 1, 5).unbind(0)  # each [B, heads, windows, T, head_dim]
    if self.pool:
        q = q_pool(q)
    x = F.scaled_dot_product_attention(q, k, v)
    x = x.permute(0, 3, 2, 1, 4).reshape(batch, -1, self.heads * x.shape[-1])
    return self.proj(x)


def with_five_d_attention(model: nn.Module) -> nn.Module:
    """A copy of `model`, same weights, whose attention layers run the 5-D form."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, MaskUnitAttention):
            module.forward = types.MethodType(five_d_forward, module)
    return copied


def main() -> None:
    parser = harness_parser(__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads, one run each")
    parser.add_argument("--repeats", type=int, default=40, help="timed batch-1 calls per model (default: 40)")
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size (default: 64)")
    parser.add_argument("--batch-repeats", type=int, default=5, help="timed batches per model (default: 5)")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = []
    for name in MODELS:
        folded = load_model(name)
        five_d = copy.copy(folded)
        five_d.name, five_d.model = name + FIVE_D, with_five_d_attention(folded.model)
        images = torch.randn(2, 3, folded.resolution, folded.resolution)
        with torch.inference_mode():
            torch.testing.assert_close(folded.model(images), five_d.model(images), rtol=1e-4, atol=1e-5)
        models += [five_d, folded]

    rows = []
    load_before = os.getloadavg()[0]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for row in run_benchmark(models, [CPU_FP32], (1, args.batch), args.repeats, args.batch_repeats):
            rows.append({"threads": threads, **row})
    load_after = os.getloadavg()[0]
    before = {(row["threads"], row["batch"], row["model"]): row for row in rows}
    for row in rows:
        base = before[(row["threads"], row["batch"], row["model"].removesuffix(FIVE_D) + FIVE_D)]
        row["latency_x_of_5d"] = row["median_ms"] / base["median_ms"]

    write_csv(rows, args.out / "attention_fold.csv")
    lines = [
        "| threads | batch | model | params | FLOPs | median ms | min ms | images/s | time / 5-D form's |",
        "|---:|---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['threads']} | {row['batch']} | {row['model']} | {row['params'] / 1e6:.2f}M | "
            f"{row['flops'] / 1e9:.2f}G | {row['median_ms']:.1f} | {row['min_ms']:.1f} | {row['images_per_s']:.1f} | "
            f"{row['latency_x_of_5d']:.2f} |"
        )
    page = write_page(
        args.out,
        "attention_fold",
        "# Mask-unit attention: windows folded into the batch vs the 5-D form\n\n"
        "Each model as gas builds it (4-D inputs to `scaled_dot_product_attention`) and the same weights through "
        "the earlier 5-D form, CPU float32, 224px, `torch.inference_mode()`; outputs checked equal first. Timing "
        f"as `gas bench` does it: the four models in turns; batch 1 the median of {args.repeats} calls, batch "
        f"{args.batch} of {args.batch_repeats}. Last column: this row's median over the 5-D form's (below 1: "
        "faster).\n\n" + "\n".join(lines) + "\n\n"
        f"Load average (1 min): {load_before:.1f} before, {load_after:.1f} after; the machine is shared, so the "
        "ratios, measured in turns, say more than the absolute times.\n\n"
        + stamp(command_line("experiments/attention_fold/run.py")),
    )
    print(page.read_text())


if __name__ == "__main__":
    main()
