"""`gas export`: a genome, a reference or a study's trial as a standalone PyTorch module, or as ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from gas.cli.common import add_storage_option, storage_option
from gas.errors import GasError
from gas.units import format_count


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write a genome's model as a standalone PyTorch file (needs only torch), or as ONNX",
        description="Write GENOME (a .json file or a reference name), or a study's trial, as generated/NAME.py, "
        "as an ONNX file, or both.",
    )
    export.add_argument("genome", nargs="?", help="a genome .json file or a reference name (e.g. turbovit)")
    export.add_argument("--study", help="take the genome from this study's trial")
    add_storage_option(export)
    export.add_argument("--trial", type=int, help="the trial number (a completed trial)")
    export.add_argument(
        "--pick",
        nargs="+",
        metavar="WHICH",
        help="a front trial: best (most accurate), knee, max-acc-under BUDGET (e.g. max-acc-under 2G), or "
        "fastest-over ACCURACY (the lowest measured latency at least that accurate, e.g. fastest-over 90%%)",
    )
    export.add_argument("--out", help="the .py file to write, e.g. generated/NAME.py")
    export.add_argument(
        "--onnx",
        metavar="FILE",
        help="also, or only, write the model as ONNX (dynamic batch; initializers named by its state_dict) to this "
        ".onnx file; needs gas[onnx]",
    )
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from gas.export import export_genome, export_onnx, readme_row
    from gas.front import parse_pick, pick_trial
    from gas.provenance import Provenance, provenance_for_trial
    from gas.record import trial_genome
    from gas.space import load_genome
    from gas.storage import open_study
    from gas.study import find_trial

    if args.out is None and args.onnx is None:
        raise GasError("give --out FILE.py, --onnx FILE.onnx, or both")
    if args.onnx is not None:
        from gas.export import onnx_path_for
        from gas.onnx_model import require

        # Before any study is opened or file written: the answers do not depend on them.
        onnx_path_for(args.onnx)
        require("--onnx")
    out = shlex.quote(args.out or "")
    if args.genome is not None:
        if args.study or args.trial is not None or args.pick:
            raise GasError("give either a genome (a .json file or a reference name) or --study, not both")
        genome = load_genome(args.genome)
        is_file = Path(args.genome).suffix == ".json" or Path(args.genome).exists()
        source = f"genome file {args.genome}" if is_file else f"reference genome {args.genome!r} ({genome.space} space)"
        provenance = Provenance(source, command=f"gas export {shlex.quote(args.genome)} --out {out}")
    else:
        if not args.study:
            raise GasError("give a genome (a .json file or a reference name) or --study NAME with --trial or --pick")
        if (args.trial is None) == (args.pick is None):
            raise GasError(
                "with --study, give exactly one of --trial N or --pick best, knee, max-acc-under BUDGET or "
                "fastest-over ACCURACY"
            )
        study = open_study(args.study, args.storage)
        if args.trial is not None:
            trial = find_trial(study, args.trial)
        else:
            kind, budget = parse_pick(args.pick)
            trial = pick_trial(study, kind, budget)
            print(f"picked trial {trial.number} ({' '.join(args.pick)}) from study {study.study_name!r}")
        genome = trial_genome(trial)
        # The command names the trial, not the pick: a pick moves as the study grows.
        command = (
            f"gas export --study {shlex.quote(study.study_name)}{storage_option(args.storage)} "
            f"--trial {trial.number} --out {out}"
        )
        provenance = provenance_for_trial(study, trial, command)
    if args.out is not None:
        exported = export_genome(genome, args.out, provenance)
        at_224 = "" if exported.flops_224 is None else f", {format_count(exported.flops_224)} FLOPs at 224px"
        accuracy = "" if provenance.accuracy is None else f", proxy accuracy {provenance.accuracy:.2%}"
        print(
            f"wrote {exported.path} ({genome.space} space, {genome.resolution}px): {format_count(exported.params)} "
            f"params{at_224}{accuracy}"
        )
        print(f"  from {provenance.source}")
        print(f"  use it with torch alone: from {exported.module_name} import build_model; model = build_model()")
        print(f"  generated/README.md row: {readme_row(exported)}")
    if args.onnx is not None:
        written = export_onnx(genome, args.onnx, provenance.source)
        print(
            f"wrote {written.path} ({genome.space} space, {genome.resolution}px, dynamic batch, initializers named "
            f"as the model's state_dict): ONNX opset {written.opset}, {format_count(written.size)}B"
        )
    return 0
