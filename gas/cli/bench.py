"""`gas bench`: inference latency and throughput of models, timed in turns."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from gas.defaults import LATENCY_DEVICES, LATENCY_RUNTIMES
from gas.errors import GasError
from gas.units import format_count


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="inference latency and throughput of models, timed in turns",
        description="Time MODELs at batch 1 (latency) and larger batches (throughput): CPU float32 in each of "
        "--runtimes, and CUDA bfloat16 with and without torch.compile where CUDA is available. The runtimes of a "
        "device are timed in the same turns; 'vs eager' is a model's time over its time in eager torch.",
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
    bench.add_argument(
        "--runtimes",
        nargs="+",
        default=["torch"],
        choices=LATENCY_RUNTIMES,
        help="on the CPU, run the models in these: torch, and onnxruntime on their ONNX export (needs gas[onnx]; "
        "default: torch)",
    )
    bench.add_argument(
        "--threads", type=int, help="CPU threads, torch's and ONNX Runtime's intra-op (default: torch's own choice)"
    )
    bench.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default: 20)")
    bench.add_argument("--batch-repeats", type=int, default=5, help="timed runs per model at larger batches (5)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs per model and batch size first (3)")
    bench.add_argument("--baseline", default="hiera_tiny", help="ratios against this model (default: hiera_tiny)")
    bench.add_argument("--csv", help="also write the rows to this CSV file")
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from gas.bench import add_ratios, add_runtime_ratios, run_benchmark, settings_for, write_csv
    from gas.named_model import load_models

    if args.threads is not None:
        if args.threads < 1:
            raise GasError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    settings = settings_for(args.device, compile=not args.no_compile, runtimes=args.runtimes)
    models = load_models(args.models)
    rows = run_benchmark(models, settings, args.batch_sizes, args.repeats, args.batch_repeats, args.warmup)
    baseline = add_ratios(rows, args.baseline)
    runtimes = add_runtime_ratios(rows)
    print(f"inference, median of timed runs taken in turns; latency x and throughput x against {baseline}")
    print("\n".join(format_rows(rows, vs_eager=runtimes)))
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    return 0


def format_rows(rows: Sequence[dict[str, Any]], vs_eager: bool = False) -> list[str]:
    """The rows as an aligned text table; with `vs_eager`, a last column of each row's time over eager torch's."""
    header = ("model", "setting", "batch", "params", "FLOPs", "median ms", "images/s", "latency x", "throughput x")
    header += ("vs eager",) if vs_eager else ()
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
        + ((f"{row['vs_eager']:.2f}" if row.get("vs_eager") is not None else "-",) if vs_eager else ())
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
