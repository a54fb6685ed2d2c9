"""`gas bench`: inference latency and throughput of models, timed in turns."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from gas.defaults import LATENCY_DEVICES
from gas.errors import GasError
from gas.units import format_count


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="inference latency and throughput of models, timed in turns",
        description="Time MODELs at batch 1 (latency) and larger batches (throughput): CPU float32, and CUDA "
        "bfloat16 with and without torch.compile where CUDA is available.",
    )
    bench.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="a reference name (e.g. hiera_tiny), a genome .json file or an exported .py file; add :fused to fold "
        "BatchNorms first (e.g. efficientvit_m5:fused)",
    )
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256], help="(default: 1 64 256)")
    bench.add_argument(
        "--device", default="auto", choices=["auto", *LATENCY_DEVICES], help="auto: CPU, and CUDA if any"
    )
    bench.add_argument("--no-compile", action="store_true", help="on CUDA, skip the torch.compile runs")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    bench.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default: 20)")
    bench.add_argument("--batch-repeats", type=int, default=5, help="timed runs per model at larger batches (5)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs per model and batch size first (3)")
    bench.add_argument("--baseline", default="hiera_tiny", help="ratios against this model (default: hiera_tiny)")
    bench.add_argument("--csv", help="also write the rows to this CSV file")
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from gas.bench import add_ratios, run_benchmark, settings_for, write_csv
    from gas.named_model import load_models

    if args.threads is not None:
        if args.threads < 1:
            raise GasError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    settings = settings_for(args.device, compile=not args.no_compile)
    models = load_models(args.models)
    rows = run_benchmark(models, settings, args.batch_sizes, args.repeats, args.batch_repeats, args.warmup)
    baseline = add_ratios(rows, args.baseline)
    print(f"inference, median of timed runs taken in turns; latency x and throughput x against {baseline}")
    print("\n".join(format_rows(rows)))
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    return 0


def format_rows(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as an aligned text table."""
    header = ("model", "setting", "batch", "params", "FLOPs", "median ms", "images/s", "latency x", "throughput x")
    body = [
        (
            str(row["model"]),
            str(row["setting"]),
            str(row["batch"]),
            format_count(row["params"]),
            "?" if row["flops"] is None else format_count(row["flops"]),
            f"{row['median_ms']:.2f}",
            f"{row['images_per_s']:.1f}",
            f"{row['latency_x']:.2f}" if "latency_x" in row else "",
            f"{row['throughput_x']:.2f}" if "throughput_x" in row else "",
        )
        for row in rows
    ]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    lines = []
    for cells in [header, *body]:
        text = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(text).rstrip())
    return lines
