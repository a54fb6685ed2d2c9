"""Latency per runtime: eager torch, torch.compile and ONNX Runtime, timed in the same turns, on the CPU.

    python experiments/bench_runtime/run.py                       # references and generated/turbovit_search_2_5g*.py
    python experiments/bench_runtime/run.py --threads 1 --batch-sizes 1
    python experiments/bench_runtime/run.py --report-only         # redraw table and summary from the CSV

For each CPU thread count, `gas bench`'s machinery (`gas.bench.run_benchmark`) times every model in the
three runtimes, all in the same turns (one call each per round), at batch 1 and 64, float32: eager torch,
torch.compile (static shapes, inductor's C++ backend) and ONNX Runtime (all graph optimisations, intra-op
threads = the thread count). The ratios are each runtime's median over eager torch's for the same model,
threads and batch. Where torch.compile fails on this machine the table says so, and the other two runtimes
are timed without it.

Writes bench_runtime.csv, bench_runtime.md and its section of SUMMARY.md into --out (default:
experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import dataclasses
import os
from collections.abc import Sequence
from importlib import metadata

import pandas as pd
import torch

from experiments.common.results import RESULTS, command_line, stamp, update_summary
from gas.bench import CPU_FP32, add_runtime_ratios, run_benchmark
from gas.errors import GasError
from gas.named_model import load_model

SCRIPT = "experiments/bench_runtime/run.py"
REPO = Path(__file__).resolve().parents[2]
REFERENCES = ["turbovit", "hiera_tiny", "efficientvit_m5:fused"]
SEARCHED = "generated/turbovit_search_2_5g*.py"

EAGER = CPU_FP32
COMPILED = dataclasses.replace(CPU_FP32, compile=True)
ONNX_RUNTIME = dataclasses.replace(CPU_FP32, runtime="onnxruntime")
RUNTIMES = {"eager": EAGER, "compile": COMPILED, "onnxruntime": ONNX_RUNTIME}


def searched_models() -> list[str]:
    """The committed exports of searched picks, as paths from the repository root."""
    return sorted(str(path.relative_to(REPO)) for path in REPO.glob(SEARCHED))


def run_one(models: list, threads: int, args: argparse.Namespace) -> tuple[list[dict], str | None]:
    """Rows of one thread count, and why torch.compile failed (None if it ran or was not asked for)."""
    torch.set_num_threads(threads)
    settings = [EAGER, ONNX_RUNTIME] if args.no_compile else [EAGER, COMPILED, ONNX_RUNTIME]
    timing = (args.batch_sizes, args.repeats, args.batch_repeats, args.warmup)
    try:
        return run_benchmark(models, settings, *timing), None
    except GasError:
        raise
    except Exception as error:  # torch.compile fails in the first call: the C++ compiler, an operator, memory
        if args.no_compile:
            raise
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        return run_benchmark(models, [EAGER, ONNX_RUNTIME], *timing), reason


def runtime_of(row: pd.Series) -> str:
    return "compile" if row["compiled"] else "onnxruntime" if row["runtime"] == "onnxruntime" else "eager"


def report(table: pd.DataFrame, out: Path, command: str, notes: Sequence[str]) -> str:
    """Write bench_runtime.md and the SUMMARY.md section from the rows; return the markdown table."""
    table = table.assign(runtime=table.apply(runtime_of, axis=1))
    failures = table.drop_duplicates("threads").set_index("threads")["compile_failure"].dropna().to_dict()
    sections, headline = [], []
    for (threads, batch), group in table.groupby(["threads", "batch"], sort=True):
        medians = group.pivot(index="model", columns="runtime", values="median_ms")
        ratios = group.pivot(index="model", columns="runtime", values="vs_eager")
        models = list(dict.fromkeys(group["model"]))
        rows = []
        for model in models:
            row = {"model": model, "eager ms": f"{medians.loc[model, 'eager']:.3g}"}
            for runtime in ("compile", "onnxruntime"):
                if runtime in medians.columns:
                    row[f"{runtime} ms"] = f"{medians.loc[model, runtime]:.3g}"
                    row[f"{runtime} / eager"] = f"{ratios.loc[model, runtime]:.2f}"
                else:
                    row[f"{runtime} ms"] = "failed" if runtime == "compile" and threads in failures else "-"
                    row[f"{runtime} / eager"] = "-"
            rows.append(row)
        threads_text = f"{threads} thread{'s' if threads != 1 else ''}"
        sections.append(
            f"### {threads_text}, batch {batch}\n\n"
            + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True, colalign=("left",) + ("right",) * 5)
        )
        for model in models:
            parts = [
                f"{runtime} {ratios.loc[model, runtime]:.2f}x"
                for runtime in ("compile", "onnxruntime")
                if runtime in ratios.columns and pd.notna(ratios.loc[model, runtime])
            ]
            headline.append(f"- {threads_text}, batch {batch}, {model}: " + ", ".join(parts) + " of eager's time.")
    failed = [
        f"torch.compile failed with {threads} thread{'s' if threads != 1 else ''}: {reason}"
        for threads, reason in failures.items()
    ]
    setup = (
        "Eval mode, float32, fresh weights, each model at its genome's resolution (224px), on the CPU. Runtimes: "
        "eager torch (`torch.inference_mode()`), torch.compile (static shapes, inductor) and ONNX Runtime on the "
        "model's ONNX export (`gas.onnx_model`: opset 18, ORT_ENABLE_ALL, intra-op threads = the thread count, "
        "inter-op 1), every model in every runtime taking turns in one run per thread count. The figure is the "
        "median of the timed runs; `/ eager` is that median over eager torch's for the same model, threads and "
        "batch (below 1 is faster)."
    )
    body = "\n\n".join(sections)
    text = "\n\n".join([setup, *failed, *notes])
    (out / "bench_runtime.md").write_text(
        f"# Latency per runtime\n\n{text}\n\n" + "\n".join(headline) + f"\n\n{body}\n\n{stamp(command)}\n"
    )
    update_summary(
        out,
        "bench_runtime",
        "## Latency per runtime\n\n"
        + "\n".join(headline)
        + "\n\n"
        + "\n\n".join([*failed, *notes])
        + "\n\nTable: [bench_runtime.md](bench_runtime.md); rows: [bench_runtime.csv](bench_runtime.csv).\n\n"
        + stamp(command),
    )
    return body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", nargs="*", default=REFERENCES, help=f"(default: {' '.join(REFERENCES)})")
    parser.add_argument(
        "--models", nargs="*", default=None, help=f"more models, as `gas bench` names them (default: {SEARCHED})"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts (default: 1 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="(default: 1 64)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default: 20)")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed runs per model at larger batches (3)")
    # One untimed call is enough for each runtime's one-time work (torch.compile compiles in it).
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model and batch size first (1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")
    parser.add_argument("--report-only", action="store_true", help="redraw from bench_runtime.csv in --out")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    command = command_line(SCRIPT, argv)
    if args.report_only:
        try:
            table = pd.read_csv(out / "bench_runtime.csv")
        except OSError as error:
            print(f"bench_runtime: error: cannot read {out / 'bench_runtime.csv'}: {error.strerror}", file=sys.stderr)
            return 2
        notes = [line for line in table["note"].dropna().drop_duplicates()] if "note" in table else []
        print(report(table, out, command, notes))
        return 0
    specs = [*args.references, *(searched_models() if args.models is None else args.models)]
    before = torch.get_num_threads()
    try:
        models = [load_model(spec) for spec in dict.fromkeys(specs)]
        rows = []
        load_before = os.getloadavg()
        for threads in args.threads:
            timed, failure = run_one(models, threads, args)
            add_runtime_ratios(timed)
            rows += [{**row, "threads": threads, "compile_failure": failure} for row in timed]
        load_after = os.getloadavg()
    except GasError as error:
        print(f"bench_runtime: error: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(before)
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("onnx", "onnxruntime"))
    note = f"{versions}. Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after."
    table = pd.DataFrame(rows).assign(note=note)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_runtime.csv", index=False)
    print(report(table, out, command, [note]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
