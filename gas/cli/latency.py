"""`gas latency`: end-to-end inference latency of models on this machine."""

from __future__ import annotations

import argparse
import json

from gas.defaults import LATENCY_DEVICES, LATENCY_DTYPES, LATENCY_RUNTIMES


def register(commands: argparse._SubParsersAction) -> None:
    latency = commands.add_parser(
        "latency",
        help="end-to-end inference latency of models on this machine: median and spread of timed runs",
        description="Measure each MODEL's inference latency: warm-up runs, then timed runs taken in turns; prints "
        "the median and the interquartile range (IQR) of the runs.",
    )
    latency.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="a reference name (e.g. turbovit), a genome .json file or an exported .py file; :fused folds BatchNorms",
    )
    latency.add_argument("--device", default="cpu", choices=LATENCY_DEVICES, help="(default: cpu)")
    latency.add_argument(
        "--runtime",
        default="torch",
        choices=LATENCY_RUNTIMES,
        help="what runs the models: torch, or ONNX Runtime on their ONNX export (needs gas[onnx]; default: torch)",
    )
    latency.add_argument(
        "--threads", type=int, help="CPU threads, torch's or ONNX Runtime's intra-op (default: torch's own choice)"
    )
    latency.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    latency.add_argument("--dtype", default="fp32", choices=LATENCY_DTYPES, help="weights and inputs (fp32)")
    latency.add_argument("--compile", action="store_true", help="run the models under torch.compile")
    latency.add_argument("--runs", type=int, default=None, help="timed runs per model (default: 20)")
    latency.add_argument("--warmup", type=int, default=None, help="untimed runs per model first (default: 3)")
    latency.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    latency.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gas.latency import DEFAULT_RUNS, DEFAULT_WARMUP, LatencySettings, fingerprint, measure_many

    settings = LatencySettings(args.device, args.threads, args.batch, args.dtype, args.compile, args.runtime)
    settings.check_available()  # before loading anything: the answer does not depend on the models
    runs = DEFAULT_RUNS if args.runs is None else args.runs
    warmup = DEFAULT_WARMUP if args.warmup is None else args.warmup
    measured = measure_many(args.models, settings, runs, warmup)
    if args.json:
        models = [{"model": name, **measurement.to_dict()} for name, measurement in measured.items()]
        print(json.dumps({"settings": fingerprint(settings), "models": models}))
        return 0
    print(f"end-to-end latency, {settings.describe()}: median of timed runs taken in turns, IQR their spread")
    width = max(len(name) for name in measured)
    print(f"{'model':<{width}}  {'median ms':>9}  {'IQR ms':>7}  {'IQR %':>5}  {'runs':>4}")
    for name, measurement in measured.items():
        print(
            f"{name:<{width}}  {1000 * measurement.median:>9.2f}  {1000 * measurement.spread:>7.2f}  "
            f"{measurement.relative_spread:>5.0%}  {measurement.runs:>4}"
        )
    return 0
