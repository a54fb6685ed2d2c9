"""The `gas` command line: each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from gas.defaults import DEFAULT_SPACE, DEFAULT_TRIALS, TRIALS_PER_GPU
from gas.errors import GasError
from gas.units import format_count, parse_count

if TYPE_CHECKING:
    import optuna

    from gas.search import SearchConfig
    from gas.search.early_stop import EarlyStopping
    from gas.search.latency_limit import LatencyTarget

Command = Callable[[argparse.Namespace], int]


def _cost(args: argparse.Namespace) -> int:
    from gas.space import get_space, load_genome

    genome = load_genome(args.genome)
    if args.resolution:
        genome = genome.at_resolution(args.resolution)
    space = get_space(genome.space)
    space.check(genome)
    cost = space.cost(genome)
    checks = []
    if args.check:
        from gas.cost_check import check_cost

        checks = check_cost(space, genome)
    # A count that fvcore contradicts fails the command, so a script or CI step can rely on the exit status.
    status = 0 if all(check.agrees for check in checks) else 1
    if args.json:
        report = {"genome": args.genome, "space": genome.space, **cost.to_dict()}
        if args.check:
            report["check"] = [check.to_dict() for check in checks]
        print(json.dumps(report))
        return status
    name_width = max(len(row.name) for row in cost.rows)
    detail_width = max(len(row.detail) for row in cost.rows)
    print(f"{args.genome} ({genome.space} space) at {cost.resolution}px")
    print(f"{'part':<{name_width}}  {'what':<{detail_width}}  {'params':>9}  {'FLOPs':>9}  {'share':>6}")
    for row in cost.rows:
        share = row.count.flops / cost.flops if cost.flops else 0.0
        print(
            f"{row.name:<{name_width}}  {row.detail:<{detail_width}}  {format_count(row.count.params):>9}  "
            f"{format_count(row.count.flops):>9}  {share:>6.1%}"
        )
    print(
        f"{'total':<{name_width}}  {'':<{detail_width}}  {format_count(cost.params):>9}  {format_count(cost.flops):>9}"
    )
    print(f"params {cost.params:,}  FLOPs {cost.flops:,} (fvcore convention: one multiply-add = one FLOP)")
    if not checks:
        return 0
    from gas.cost_check import FLOPS_TOLERANCE

    print(f"\ncheck at {genome.resolution}px: the analytic count against the built module's params and fvcore's FLOPs")
    header = ("form", "params", "built params", "FLOPs", "fvcore FLOPs", "difference", "")
    lines = [
        (
            check.form,
            f"{check.analytic.params:,}",
            f"{check.built_params:,}",
            f"{check.analytic.flops:,}",
            f"{check.fvcore_flops:,}",
            f"{check.flops_difference:+.3%}",
            "ok" if check.agrees else "DIFFERS",
        )
        for check in checks
    ]
    widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]
    for line in [header, *lines]:
        cells = [f"{cell:<{widths[0]}}" if i == 0 else f"{cell:>{widths[i]}}" for i, cell in enumerate(line)]
        print("  ".join(cells).rstrip())
    if status:
        print(
            f"gas cost: the analytic count differs from the built model's (parameters must be equal, "
            f"FLOPs within {FLOPS_TOLERANCE:.1%} of fvcore's)",
            file=sys.stderr,
        )
    return status


def _sample(args: argparse.Namespace) -> int:
    from gas.search.sampling import sample_genomes

    budget = parse_count(args.budget) if args.budget else None
    max_params = parse_count(args.max_params, "max params") if args.max_params else None
    out = Path(args.out)
    genomes = sample_genomes(args.space, args.n, args.seed, args.resolution, budget, max_params)
    out.mkdir(parents=True, exist_ok=True)
    for index, (genome, cost) in enumerate(genomes):
        path = out / f"genome_{index:04d}.json"
        path.write_text(genome.to_json())
        print(f"{path}  params {format_count(cost.params)}  FLOPs {format_count(cost.flops)}")
    return 0


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The search `gas search ARGS` runs (bad values raise GasError before anything starts)."""
    from gas.evaluate.proxy import ProxyConfig, default_proxy
    from gas.search import SearchConfig

    proxy_overrides = {
        name: value
        for name, value in {
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "resolution": args.resolution,
            "epochs": args.epochs,
            "evaluator": args.evaluator,
            "seed": args.seed,
            "compile": args.compile or None,
            "device": args.device,
        }.items()
        if value is not None
    }
    return SearchConfig(
        budget=parse_count(args.budget) if args.budget is not None else None,
        space=args.space,
        study=args.study,
        storage=args.storage,
        trials=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        max_params=parse_count(args.max_params, "--max-params") if args.max_params else None,
        proxy=ProxyConfig().with_overrides(**proxy_overrides),
        # Which one trains is known once the cluster is: the GPU proxy where trials get GPUs.
        gpu_proxy=default_proxy(True, proxy_overrides),
        ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        progress=not args.no_progress,
        early_stop=_early_stop(args),
        latency=_latency_target(args),
        # The cost a user bounds is the cost they care about: a latency limit makes latency the front's axis.
        objective=args.objective or ("latency" if args.max_latency is not None else "flops"),
    )


def _search(args: argparse.Namespace) -> int:
    from gas.front import format_table, front_rows
    from gas.search import run_search
    from gas.search.latency_limit import describe_accuracy
    from gas.study import DEFAULT_STORAGE, feasible_share_by_half, latency_of

    config = search_config(args)
    outcome = run_search(config)
    study = outcome.study
    storage = config.storage or DEFAULT_STORAGE.removeprefix("sqlite:///")
    first, second = feasible_share_by_half(study)
    minutes, seconds = divmod(int(outcome.elapsed), 60)
    print(
        f"study {study.study_name}: {outcome.trained} trained trials; this run {minutes}m{seconds:02d}s; "
        f"feasible proposals {first:.0%} in the first half, {second:.0%} in the second"
    )
    print(f"failures: {outcome.failures}" if outcome.failures else "failures: none")
    latency = latency_of(study)
    if latency is not None:
        print(describe_accuracy(latency.get("accuracy") or {}))
    if outcome.stopped_reason:
        print(f"stopped early: {outcome.stopped_reason}")
    rows = front_rows(study)
    if rows:
        print("Pareto front (feasible, fully trained):")
        print("\n".join(format_table(rows)))
        where = _storage_option(config.storage)
        print(f"export the most accurate:  gas export --study {study.study_name}{where} --pick best --out NAME.py")
        print(f"open the dashboard:        gas dashboard --study {study.study_name}{where}")
    if outcome.interrupted:
        print(f"interrupted: finished trials are kept in {storage}; run the same command to resume", file=sys.stderr)
        return 130
    if outcome.failed_run:
        raise GasError(outcome.failed_run)
    _audit_after_search(args, config, study)
    return 0


def _audit_after_search(args: argparse.Namespace, config: SearchConfig, study: optuna.Study) -> None:
    """The small fidelity audit every search ends with (`--audit N`, 0 for none), on the same kind of workers."""
    import functools

    from gas.search import audit as fidelity
    from gas.study import trained_trials

    if args.audit <= 0:
        return
    if len(trained_trials(study)) < max(3, args.audit):
        print(f"audit: skipped, the study has fewer than {max(3, args.audit)} trained trials")
        return
    audit_config = fidelity.after_search(args.audit, config.proxy)
    evaluate = functools.partial(
        fidelity.evaluate_on_ray, address=config.ray_address, cpus_per_trial=config.cpus_per_trial
    )
    audit = fidelity.run_audit(study, audit_config, evaluate, progress=lambda line: print(line, flush=True))
    print(fidelity.audit_line(audit))


def _early_stop(args: argparse.Namespace) -> EarlyStopping | None:
    from gas.search.early_stop import DEFAULT_MAX_EPOCHS, EarlyStopping

    if not args.early_stop:
        if args.max_epochs is not None:
            raise GasError("--max-epochs is the longest schedule of --early-stop; without it, use --epochs")
        return None
    if args.epochs is not None:
        raise GasError("with --early-stop, say the longest schedule with --max-epochs, not --epochs")
    return EarlyStopping(max_epochs=args.max_epochs or DEFAULT_MAX_EPOCHS)


def _latency_target(args: argparse.Namespace) -> LatencyTarget | None:
    """The device and limit of a hardware-aware search, or None when latency plays no part."""
    from gas.latency import LatencySettings
    from gas.search.latency_limit import LatencyTarget
    from gas.units import parse_duration

    limit = parse_duration(args.max_latency, "--max-latency") if args.max_latency is not None else None
    if limit is None and args.objective != "latency" and args.latency_device is None:
        return None
    device = args.latency_device or "cpu"
    settings = LatencySettings(
        device=device,
        threads=args.latency_threads or (1 if device == "cpu" else None),
        batch=args.latency_batch,
        dtype="bf16" if device == "cuda" else "fp32",
    )
    return LatencyTarget(settings, limit)


def _storage_option(storage: str | None) -> str:
    """' --storage URL' for a command to print (password hidden), or '' for the default storage."""
    import shlex

    from gas.study import redacted_url

    return f" --storage {shlex.quote(redacted_url(storage))}" if storage else ""


def _export(args: argparse.Namespace) -> int:
    import shlex

    from gas.export import Provenance, export_genome, provenance_for_trial, readme_row
    from gas.front import parse_pick, pick_trial
    from gas.space import load_genome
    from gas.study import find_trial, open_study, trial_genome

    out = shlex.quote(args.out)
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
            f"gas export --study {shlex.quote(study.study_name)}{_storage_option(args.storage)} "
            f"--trial {trial.number} --out {out}"
        )
        provenance = provenance_for_trial(study, trial, command)
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
    return 0


def _pareto(args: argparse.Namespace) -> int:
    import re
    import shlex

    from gas.front import format_table, front_rows, pick_trial, write_csv, write_plot
    from gas.study import StudyKey, audit_of, latency_of, objective_of, open_study, state_counts, study_budget

    study = open_study(args.study, args.storage)
    rows = front_rows(study)
    audit = audit_of(study)
    latency = latency_of(study)
    name = shlex.quote(study.study_name)
    storage = _storage_option(args.storage)
    module = re.sub(r"\W", "_", study.study_name)
    export_template = f"gas export --study {name}{storage} --trial TRIAL --out generated/{module}_tTRIAL.py"
    written = []
    if args.csv:
        written.append(write_csv(rows, args.csv))
    if args.plot:
        written.append(write_plot(study, args.plot, export_template))
    counts = state_counts(study)
    picks = {kind: pick_trial(study, kind).number for kind in ("best", "knee")} if rows else {}
    budget = study_budget(study)
    if args.json:
        print(
            json.dumps(
                {
                    "study": study.study_name,
                    "space": study.user_attrs.get(StudyKey.SPACE),
                    "budget": budget,
                    "trials": counts,
                    "picks": picks,
                    "objective": objective_of(study),
                    "front": rows,
                    "audit": audit,
                    "latency": latency,
                }
            )
        )
        return 0
    space = study.user_attrs.get(StudyKey.SPACE)
    about = ", ".join(
        part
        for part in (space and f"{space} space", budget and f"budget {format_count(budget)} FLOPs at 224px")
        if part
    )
    print(f"study {study.study_name}" + (f" ({about})" if about else ""))
    print("trials: " + ", ".join(f"{count} {state}" for state, count in counts.items()))
    if latency is not None:
        from gas.search.latency_limit import describe_accuracy, describe_target

        print(f"latency measured on {describe_target(latency)}")
        print(describe_accuracy(latency.get("accuracy") or {}))
    if rows:
        print(f"Pareto front: {len(rows)} feasible, fully trained trials, by {objective_of(study)} ascending")
        for line in format_table(rows):
            print(f"  {line}")
        print(f"most accurate: trial {picks['best']}   knee: trial {picks['knee']}")
    else:
        print("Pareto front: empty (no feasible, fully trained trials yet)")
    if audit:
        from gas.search.audit import audit_line

        print(audit_line(audit))
    for path in written:
        print(f"wrote {path}")
    example = str(rows[-1]["trial"]) if rows else "N"
    print(f"export a row:       {export_template.replace('TRIAL', example)}")
    print(f"open the dashboard: gas dashboard --study {name}{storage}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import functools

    from gas.search import audit as fidelity
    from gas.study import open_study

    config = fidelity.AuditConfig(
        trials=args.trials, epoch_factor=args.epoch_factor, resolution=args.resolution, data_dir=args.data_dir
    )
    study = open_study(args.study, args.storage)
    evaluate: fidelity.Evaluate
    if args.in_process:
        evaluate = functools.partial(fidelity.evaluate_in_process, report=fidelity.print_outcome)
    else:
        evaluate = functools.partial(
            fidelity.evaluate_on_ray, address=args.ray_address, cpus_per_trial=args.cpus_per_trial
        )
    audit = fidelity.run_audit(study, config, evaluate, progress=lambda line: print(line, flush=True))
    print(f"study {study.study_name}: fidelity audit recorded")
    print("\n".join(fidelity.format_audit(audit)))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from gas.dashboard import serve

    serve(args.study, args.storage, args.host, args.port)
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from gas.bench import add_ratios, format_rows, load_models, run_benchmark, settings_for, write_csv

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


def _latency(args: argparse.Namespace) -> int:
    from gas.latency import DEFAULT_RUNS, DEFAULT_WARMUP, LatencySettings, fingerprint, measure_many

    settings = LatencySettings(args.device, args.threads, args.batch, args.dtype, args.compile)
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


def _add_study_options(parser: argparse.ArgumentParser, study_help: str) -> None:
    parser.add_argument("--study", required=True, help=study_help)
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/gas.db)")


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem and where help is, not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="gas", description="Generate fast vision transformers by constrained architecture search."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cost = commands.add_parser("cost", help="params and FLOPs of a genome, per block and in total")
    cost.add_argument("genome", help="a reference name (e.g. hiera_tiny, turbovit) or a genome .json file")
    cost.add_argument("--resolution", type=int, help="input resolution in px (default: the genome's)")
    cost.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    cost.add_argument(
        "--check",
        action="store_true",
        help="also build the model and count it with fvcore; exit 1 if params differ or FLOPs by more than 0.5%%",
    )
    cost.set_defaults(run=_cost)

    sample = commands.add_parser("sample", help="write random valid genomes of a space as JSON files")
    sample.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default: {DEFAULT_SPACE})")
    sample.add_argument("--n", type=int, default=10, help="how many genomes (default: 10)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--budget", help="keep genomes with at most this many FLOPs, e.g. 2.5G")
    sample.add_argument("--max-params", help="keep genomes with at most this many params, e.g. 15M")
    sample.add_argument("--resolution", type=int, default=224, help="resolution genomes are costed at (224)")
    sample.add_argument("--out", required=True, help="directory to write genome_NNNN.json files into")
    sample.set_defaults(run=_sample)

    search = commands.add_parser(
        "search",
        help="search a space for the most accurate genomes under a budget",
        description="Generate genomes under a budget with an Optuna study and train their proxies on Ray workers.",
    )
    search.add_argument(
        "--budget", help="FLOPs at 224px per image, e.g. 2.5G, 500M, 2.5e9 (optional with --max-latency)"
    )
    search.add_argument("--max-latency", help="measured inference latency limit on the target device, e.g. 25ms")
    search.add_argument(
        "--latency-device",
        choices=["cpu", "cuda"],
        help="the device latency is measured on, kept from trials: cores on cpu, the last GPU on cuda (default: cpu)",
    )
    search.add_argument("--latency-batch", type=int, default=1, help="images per timed call (default: 1)")
    search.add_argument("--latency-threads", type=int, help="CPU threads while timing (default: 1 on cpu)")
    search.add_argument(
        "--objective",
        choices=["flops", "latency", "params"],
        help="the front's cost axis against accuracy (default: latency with --max-latency, else flops)",
    )
    search.add_argument("--max-params", help="also cap parameters, e.g. 15M")
    search.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default: {DEFAULT_SPACE})")
    search.add_argument("--study", help="study name (default: SPACE-BUDGET, e.g. turbovit-2.5G)")
    search.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/gas.db)")
    search.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"trained trials in total, counting runs so far ({DEFAULT_TRIALS})",
    )
    search.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "gp", "random"], help="(default: tpe)")
    search.add_argument("--seed", type=int, default=0, help="seed for the sampler and the proxy training (0)")
    search.add_argument("--dataset", help="proxy dataset: the embedded default, digits, cifar10 or imagefolder:PATH")
    search.add_argument("--data-dir", help="where cifar10's archive lives")
    search.add_argument("--resolution", type=int, help="proxy training resolution in px")
    search.add_argument("--epochs", type=int, help="proxy training epochs")
    search.add_argument("--evaluator", choices=["train", "zero-cost"], help="train proxies, or score them at init")
    search.add_argument(
        "--early-stop",
        action="store_true",
        help="stop trials at rungs (1, 3, 9... epochs) unless they rank in the best third by Pareto rank",
    )
    search.add_argument("--max-epochs", type=int, help="with --early-stop: the longest schedule (default: 12)")
    search.add_argument("--compile", action="store_true", help="train proxies under torch.compile (pays off on CUDA)")
    search.add_argument(
        "--device",
        choices=["auto", "cpu"],
        help="cpu: train the CPU proxy on CPUs even where the cluster has GPUs (default: auto, the GPU proxy on GPUs)",
    )
    search.add_argument("--ray-address", help="join a running Ray cluster (host:port); default starts a local one")
    search.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)")
    search.add_argument(
        "--gpus-per-trial",
        type=float,
        help=f"GPUs per trial, fractions pack trials (default: {1 / TRIALS_PER_GPU:g} where there are GPUs)",
    )
    search.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as fits)")
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.add_argument(
        "--audit",
        type=int,
        default=4,
        help="after the search, retrain this many trials with 3x the epochs and record Kendall tau (0: none; 4)",
    )
    search.set_defaults(run=_search)

    export = commands.add_parser(
        "export",
        help="write a genome's model as a standalone PyTorch file (needs only torch)",
        description="Write GENOME (a .json file or a reference name), or a study's trial, as generated/NAME.py.",
    )
    export.add_argument("genome", nargs="?", help="a genome .json file or a reference name (e.g. turbovit)")
    export.add_argument("--study", help="take the genome from this study's trial")
    export.add_argument("--storage", help="Optuna storage URL (default: sqlite:///runs/gas.db)")
    export.add_argument("--trial", type=int, help="the trial number (a completed trial)")
    export.add_argument(
        "--pick",
        nargs="+",
        metavar="WHICH",
        help="a front trial: best (most accurate), knee, max-acc-under BUDGET (e.g. max-acc-under 2G), or "
        "fastest-over ACCURACY (the lowest measured latency at least that accurate, e.g. fastest-over 90%%)",
    )
    export.add_argument("--out", required=True, help="the .py file to write, e.g. generated/NAME.py")
    export.set_defaults(run=_export)

    pareto = commands.add_parser("pareto", help="the feasible accuracy/FLOPs front of a study: table, CSV, plot")
    _add_study_options(pareto, "study name")
    pareto.add_argument("--csv", help="also write the front to this CSV file")
    pareto.add_argument("--plot", help="also draw the front against all trials: .png/.svg/.pdf, or .html (no network)")
    pareto.add_argument("--json", action="store_true", help="print the front as one JSON object instead of a table")
    pareto.set_defaults(run=_pareto)

    audit = commands.add_parser(
        "audit",
        help="retrain a sample of a study longer and record how well the proxy ranked it (Kendall tau)",
        description="Retrain the front and trials spread over the accuracy range with a longer schedule; record "
        "Kendall's tau between the search's and the long runs' accuracies, and whether the front's order held.",
    )
    _add_study_options(audit, "study name")
    audit.add_argument("--trials", type=int, default=4, help="trials to retrain, at least 3 (default: 4)")
    audit.add_argument("--epoch-factor", type=int, default=3, help="times the search's epochs (default: 3)")
    audit.add_argument("--resolution", type=int, help="long-run resolution in px (default: 2x the proxy's if it fits)")
    audit.add_argument("--data-dir", help="where the study's dataset lives, when it needs a folder (cifar10)")
    audit.add_argument("--ray-address", help="join a running Ray cluster (host:port); default starts a local one")
    audit.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per long run on Ray (default: 1)")
    audit.add_argument("--in-process", action="store_true", help="train here, one run after another, without Ray")
    audit.set_defaults(run=_audit)

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on a study's storage")
    _add_study_options(dashboard, "study name (its URL is printed)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0 picks one)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    dashboard.set_defaults(run=_dashboard)

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
    bench.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU, and CUDA if any")
    bench.add_argument("--no-compile", action="store_true", help="on CUDA, skip the torch.compile runs")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    bench.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default: 20)")
    bench.add_argument("--batch-repeats", type=int, default=5, help="timed runs per model at larger batches (5)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs per model and batch size first (3)")
    bench.add_argument("--baseline", default="hiera_tiny", help="ratios against this model (default: hiera_tiny)")
    bench.add_argument("--csv", help="also write the rows to this CSV file")
    bench.set_defaults(run=_bench)

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
    latency.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default: cpu)")
    latency.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    latency.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    latency.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights and inputs (fp32)")
    latency.add_argument("--compile", action="store_true", help="run the models under torch.compile")
    latency.add_argument("--runs", type=int, default=None, help="timed runs per model (default: 20)")
    latency.add_argument("--warmup", type=int, default=None, help="untimed runs per model first (default: 3)")
    latency.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    latency.set_defaults(run=_latency)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A warning meant for the user (e.g. images skipped as unreadable) is one line, like an error.
    warnings.formatwarning = lambda message, category, *_: f"gas {args.command}: warning: {message}\n"
    try:
        return args.run(args)
    except GasError as error:
        print(f"gas {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
