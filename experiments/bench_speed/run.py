"""Inference speed: searched architectures against Hiera-T, TurboViT and EfficientViT-M5, on CPU and CUDA.

    python experiments/bench_speed/run.py --study turbovit-2.5G --storage sqlite:///runs/gas.db
    python experiments/bench_speed/run.py --models generated/turbovit_2_5g.py my_genome.json

Times, with `gas bench`'s machinery (`gas.bench`), every model in one run: batch-1 latency and batch
64/256 throughput, CPU in float32 and, when CUDA is present, bfloat16 eagerly and under torch.compile;
warm-up runs first, then the models take turns and the median counts. Ratios are against hiera_tiny at
the same setting and batch size. The models: hiera_tiny, turbovit, efficientvit_m5 with its BatchNorms
folded, the front picks of --study (if given) and any --models (references, genome files, exported files).

Writes bench_speed.csv, bench_speed.md, the searched genomes under bench_speed_genomes/ and its section
of SUMMARY.md into --out (default: experiments/results).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import os
from collections.abc import Sequence

import pandas as pd
import torch

from experiments.common.cli import fail, harness_parser
from experiments.common.machine import load_line
from experiments.common.results import command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas import record
from gas.bench import add_ratios, run_benchmark, settings_for
from gas.errors import GasError
from gas.front import pick_trial
from gas.named_model import load_model
from gas.storage import open_study
from gas.units import format_count

SCRIPT = "experiments/bench_speed/run.py"
REFERENCES = ["hiera_tiny", "turbovit", "efficientvit_m5:fused"]
BASELINE = "hiera_tiny"
# REFERENCE.md §2: TurboViT's claims, measured against FasterViT-0 (31.4M, 3.3G) on an RTX A6000.
PAPER_CONTEXT = (
    "For context, the TurboViT paper (arXiv 2308.11421) reports >3.21x lower latency and >3.18x higher "
    "throughput than FasterViT-0 (31.4M params, 3.3G FLOPs) in its low-latency setting on an NVIDIA RTX "
    "A6000, at 82.1% ImageNet top-1 for both. gas does not build FasterViT, so the ratios here are against "
    "Hiera-T (27.91M, 4.91G, the family TurboViT is generated around), on other hardware: they are not the "
    "paper's comparison, only the same kind of figure."
)


def searched_specs(study_name: str, storage: str | None, picks: Sequence[str], folder: Path) -> dict[str, str]:
    """Display name → genome file for each front pick of the study (written so the run can be repeated)."""
    study = open_study(study_name, storage)
    specs: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for pick in picks:
        trial = pick_trial(study, pick)
        path = folder / f"{study.study_name}-trial{trial.number}.json"
        if str(path) in specs.values():
            continue
        genome = record.trial_record(trial).genome
        if genome is None:
            raise GasError(f"trial {trial.number} of {study_name!r} carries no genome")
        path.write_text(json.dumps(genome, indent=2) + "\n")
        specs[f"searched {pick} (trial {trial.number})"] = str(path)
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__)
    parser.add_argument("--study", help="add this gas search's front picks")
    parser.add_argument("--storage", help="the study's Optuna storage URL (default: sqlite:///runs/gas.db)")
    parser.add_argument("--picks", nargs="+", default=["best", "knee"], choices=["best", "knee"], help="front picks")
    parser.add_argument("--models", nargs="*", default=[], help="more models, as `gas bench` names them")
    parser.add_argument("--references", nargs="*", default=REFERENCES, help=f"(default: {' '.join(REFERENCES)})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256], help="(default: 1 64 256)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU, and CUDA if any")
    parser.add_argument("--no-compile", action="store_true", help="on CUDA, skip the torch.compile runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default: 20)")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed runs per model at larger batches (3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model and batch size first (2)")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        named = {spec: spec for spec in [*args.references, *args.models]}
        if args.study:
            named.update(searched_specs(args.study, args.storage, args.picks, out / "bench_speed_genomes"))
        models = []
        for name, spec in named.items():
            entry = load_model(spec)
            entry.name = name
            models.append(entry)
        settings = settings_for(args.device, compile=not args.no_compile)
        load_before = os.getloadavg()
        rows = run_benchmark(models, settings, args.batch_sizes, args.repeats, args.batch_repeats, args.warmup)
        load_after = os.getloadavg()
    except GasError as error:
        return fail("bench_speed", str(error))
    baseline = add_ratios(rows, BASELINE)

    table = pd.DataFrame(rows)
    write_csv(out / "bench_speed.csv", table)
    shown = table.assign(
        params=table["params"].map(format_count),
        flops=table["flops"].map(lambda flops: "?" if pd.isna(flops) else format_count(int(flops))),
    )[["setting", "batch", "model", "params", "flops", "median_ms", "images_per_s", "latency_x", "throughput_x"]]
    sections = [
        f"### {setting}\n\n" + frame_markdown(group.drop(columns="setting"), ".3g")
        for setting, group in shown.groupby("setting", sort=False)
    ]
    threads = torch.get_num_threads()
    setup = (
        f"Eval mode, `torch.inference_mode()`, fresh weights, each model at its genome's resolution (224px). "
        f"Settings: {', '.join(setting.kind for setting in settings)}; {threads} CPU threads. Batch 1: median of "
        f"{args.repeats} runs; larger batches: median of {args.batch_repeats}; {args.warmup} warm-up runs per model "
        f"and batch size; models in turns. `latency_x`: median time over {baseline}'s (below 1 is faster); "
        f"`throughput_x`: images/s over {baseline}'s (above 1 is more). FLOPs: fvcore multiply-adds at 224px "
        "(after folding BatchNorms for fused models)."
    )
    headline = []
    for setting in settings:
        for model in named:
            if model == baseline:
                continue
            latency = [r for r in rows if r["setting"] == setting.kind and r["model"] == model and r["batch"] == 1]
            widest = max(
                (r for r in rows if r["setting"] == setting.kind and r["model"] == model), key=lambda r: r["batch"]
            )
            if latency:
                headline.append(
                    f"- {setting.kind}, {model}: batch-1 latency {latency[0]['latency_x']:.2f}x of {baseline}'s; "
                    f"batch-{widest['batch']} throughput {widest['throughput_x']:.2f}x."
                )
    command = command_line(SCRIPT, argv)
    load = f"{load_line(load_before, load_after)}."
    body = "\n\n".join(sections)
    write_page(
        out,
        "bench_speed",
        f"# Inference speed\n\n{setup}\n\n" + "\n".join(headline) + f"\n\n{PAPER_CONTEXT}\n\n{body}\n\n{load}\n\n"
        f"{stamp(command)}",
        "## Inference speed\n\n"
        + "\n".join(headline)
        + f"\n\n{PAPER_CONTEXT}\n\nTable: [bench_speed.md](bench_speed.md); rows: [bench_speed.csv](bench_speed.csv). "
        f"{load}\n\n{stamp(command)}",
    )
    print(body)
    print("\n".join(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
