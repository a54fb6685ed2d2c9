"""Proxy-training speed on this CPU: the turbovit reference genome at the default proxy settings.

    nice -n 10 .venv/bin/python experiments/proxy_throughput/run.py [--threads 1] [--steps 30] [--evaluations 1]

Measures, for each thread count: training images/s (AdamW steps at the default batch and resolution,
median over timed steps after warm-up), validation images/s (forward only), and the wall time of whole
default proxy evaluations (`gas.evaluate.proxy.evaluate(turbovit, ProxyConfig().with_overrides(device="cpu"))`:
data loading, zero-cost scores, training and per-epoch validation), the figure the search's time budget rests on.
Writes experiments/results/proxy_throughput.{csv,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import os
import statistics
import time

import pandas as pd
import torch
import torch.nn.functional as F

from experiments.common.cli import harness_parser
from experiments.common.machine import load_line
from experiments.common.results import RESULTS, command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas.evaluate.datasets import load_dataset
from gas.evaluate.proxy import ProxyConfig, build_proxy_model, evaluate
from gas.evaluate.train import param_groups
from gas.space import get_space, load_genome

SCRIPT = "experiments/proxy_throughput/run.py"
GENOME = "turbovit"


def training_rate(config: ProxyConfig, steps: int) -> tuple[float, float]:
    """(train images/s, eval images/s) of the reference genome, from the median step time."""
    splits = load_dataset(config.dataset, config.resolution, None, config.train_size, config.val_size)
    train_config = config.train
    model = build_proxy_model(load_genome(GENOME), config.resolution, splits.num_classes, train_config.seed)
    optimizer = torch.optim.AdamW(
        param_groups(model, train_config.lr, train_config.weight_decay, train_config.pos_embed_lr_scale),
        lr=train_config.lr,
    )
    images = splits.train_images[: train_config.batch_size]
    labels = splits.train_labels[: train_config.batch_size]
    times = []
    for step in range(steps + 3):  # the first steps allocate buffers
        started = time.perf_counter()
        loss = F.cross_entropy(model(images), labels, label_smoothing=train_config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        if step >= 3:
            times.append(time.perf_counter() - started)
    train_rate = train_config.batch_size / statistics.median(times)
    model.eval()
    batch = splits.val_images[: train_config.eval_batch_size]
    eval_times = []
    with torch.no_grad():
        for step in range(5):
            started = time.perf_counter()
            model(batch)
            if step >= 1:
                eval_times.append(time.perf_counter() - started)
    return train_rate, len(batch) / statistics.median(eval_times)


def main() -> None:
    parser = harness_parser(__doc__, out=None)
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts (default: 1)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps (default: 30)")
    parser.add_argument("--evaluations", type=int, default=1, help="whole default evaluations to time (default: 1)")
    args = parser.parse_args()
    config = ProxyConfig().with_overrides(device="cpu")
    genome = load_genome(GENOME)
    space = get_space(genome.space)
    flops_224 = space.cost(genome).flops
    flops_proxy = space.cost(genome.at_resolution(config.resolution)).flops
    load_before = os.getloadavg()
    rows = []
    for threads in [int(value) for value in args.threads.split(",")]:
        torch.set_num_threads(threads)
        train_rate, eval_rate = training_rate(config, args.steps)
        walls = [evaluate(genome, config).wall_time for _ in range(args.evaluations)]
        rows.append(
            {
                "genome": GENOME,
                "threads": threads,
                "resolution": config.resolution,
                "batch": config.train.batch_size,
                "train_images_per_s": train_rate,
                "eval_images_per_s": eval_rate,
                "train_gflop_per_s": train_rate * 3 * flops_proxy * 2 / 1e9,
                "evaluation_s": statistics.median(walls),
            }
        )
        print(rows[-1], flush=True)
    load_after = os.getloadavg()
    table = pd.DataFrame(rows)
    write_csv(RESULTS / "proxy_throughput.csv", table)
    note = (
        f". {load_line(load_before, load_after)}: the machine is shared with other jobs, so these are what a trial "
        "sees under that load."
    )
    write_page(
        RESULTS,
        "proxy_throughput",
        "# Proxy training throughput on CPU\n\n"
        f"The `{GENOME}` reference genome ({flops_224 / 1e9:.2f} GFLOPs at 224px, {flops_proxy / 1e6:.1f} MFLOPs "
        f"at {config.resolution}px) trained as the default proxy trains it: {config.resolution}px, batch "
        f"{config.train.batch_size}, AdamW with gradient clipping, fp32. `train_images_per_s` is the median over "
        f"{args.steps} steps after 3 warm-up steps; `eval_images_per_s` forward only in batches of 256; "
        "`train_gflop_per_s` counts 3 x forward multiply-adds x 2 FLOP each (the MFU convention of "
        "`gas.evaluate.train`); "
        f"`evaluation_s` is the wall time of a whole default proxy evaluation ({config.train.epochs} epochs of "
        f"{config.train_size} {config.dataset} images, validation on {config.val_size} after every epoch, "
        f"zero-cost scores, data from the cache), median of {args.evaluations}.\n\n"
        + frame_markdown(table, ".3g")
        + f"\n\n{stamp(command_line(SCRIPT, runner='nice -n 10 .venv/bin/python'), note)}",
    )


if __name__ == "__main__":
    main()
