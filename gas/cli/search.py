"""`gas search`: run (or resume) a search, print its front, and audit the proxy's ranking."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gas.cli.common import add_storage_option, storage_option
from gas.defaults import (
    DEFAULT_MAX_SEEDS,
    DEFAULT_REPLICATES,
    DEFAULT_SPACE,
    DEFAULT_TRIALS,
    EVALUATORS,
    LATENCY_DEVICES,
    LATENCY_RUNTIMES,
    OBJECTIVE_AXES,
    SAMPLERS,
    TRIALS_PER_GPU,
)
from gas.errors import GasError
from gas.units import parse_count

if TYPE_CHECKING:
    import optuna

    from gas.search import SearchConfig
    from gas.search.early_stop import EarlyStopping
    from gas.search.latency_limit import LatencyTarget
    from gas.search.replicates import Replicates


def register(commands: argparse._SubParsersAction) -> None:
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
        choices=LATENCY_DEVICES,
        help="the device latency is measured on, kept from trials: cores on cpu, the last GPU on cuda (default: cpu)",
    )
    search.add_argument(
        "--latency-runtime",
        choices=LATENCY_RUNTIMES,
        help="what runs the networks whose latency is measured: torch (eager), or ONNX Runtime on their ONNX "
        "export (needs gas[onnx]); the latency model is built for it (default: torch)",
    )
    search.add_argument("--latency-batch", type=int, default=1, help="images per timed call (default: 1)")
    search.add_argument("--latency-threads", type=int, help="CPU threads while timing (default: 1 on cpu)")
    search.add_argument(
        "--objective",
        choices=OBJECTIVE_AXES,
        help="the front's cost axis against accuracy (default: latency with --max-latency, else flops)",
    )
    search.add_argument("--max-params", help="also cap parameters, e.g. 15M")
    search.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default: {DEFAULT_SPACE})")
    search.add_argument("--study", help="study name (default: SPACE-BUDGET, e.g. turbovit-2.5G)")
    add_storage_option(search)
    search.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"trainings in total, counting runs so far; each seed of a replicated trial is one ({DEFAULT_TRIALS})",
    )
    search.add_argument("--sampler", default=SAMPLERS[0], choices=SAMPLERS, help=f"(default: {SAMPLERS[0]})")
    search.add_argument("--seed", type=int, default=0, help="seed for the sampler and the proxy training (0)")
    search.add_argument("--dataset", help="proxy dataset: the embedded default, digits, cifar10 or imagefolder:PATH")
    search.add_argument("--data-dir", help="where cifar10's archive lives")
    search.add_argument("--resolution", type=int, help="proxy training resolution in px")
    search.add_argument("--epochs", type=int, help="proxy training epochs")
    search.add_argument("--evaluator", choices=EVALUATORS, help="train proxies, or score them at init")
    search.add_argument(
        "--early-stop",
        action="store_true",
        help="stop trials at rungs (1, 3, 9... epochs) unless they rank in the best third by Pareto rank",
    )
    search.add_argument("--max-epochs", type=int, help="with --early-stop: the longest schedule (default: 12)")
    search.add_argument(
        "--replicates",
        type=int,
        help=f"seeds each front candidate trains with before it counts, each one a trial's worth of --trials; "
        f"1 turns replicates off (default: {DEFAULT_REPLICATES})",
    )
    search.add_argument(
        "--max-seeds",
        type=int,
        help=f"seeds a candidate may race up to while its order on the front is within the noise "
        f"(default: {DEFAULT_MAX_SEEDS})",
    )
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
    search.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gas.front_report import format_table, front_rows
    from gas.record import latency_record, noise_record
    from gas.search import run_search
    from gas.search.latency_limit import describe_accuracy
    from gas.search.replicates import describe_noise
    from gas.storage import DEFAULT_STORAGE
    from gas.study import feasible_share_by_half

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
    latency, noise = latency_record(study), noise_record(study)
    if latency is not None:
        print(describe_accuracy(latency.accuracy))
    if noise is not None:
        print(describe_noise(noise))
    if outcome.stopped_reason:
        print(f"stopped early: {outcome.stopped_reason}")
    rows = front_rows(study)
    if rows:
        print("Pareto front (feasible, fully trained):")
        print("\n".join(format_table(rows)))
        where = storage_option(config.storage)
        print(f"export the most accurate:  gas export --study {study.study_name}{where} --pick best --out NAME.py")
        print(f"open the dashboard:        gas dashboard --study {study.study_name}{where}")
    if outcome.interrupted:
        print(f"interrupted: finished trials are kept in {storage}; run the same command to resume", file=sys.stderr)
        return 130
    if outcome.failed_run:
        raise GasError(outcome.failed_run)
    _audit_after_search(args, config, study)
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
        replicates=_replicates(args),
        # The cost a user bounds is the cost they care about: a latency limit makes latency the front's axis.
        objective=args.objective or ("latency" if args.max_latency is not None else "flops"),
    )


def _early_stop(args: argparse.Namespace) -> EarlyStopping | None:
    from gas.search.early_stop import DEFAULT_MAX_EPOCHS, EarlyStopping

    if not args.early_stop:
        if args.max_epochs is not None:
            raise GasError("--max-epochs is the longest schedule of --early-stop; without it, use --epochs")
        return None
    if args.epochs is not None:
        raise GasError("with --early-stop, say the longest schedule with --max-epochs, not --epochs")
    return EarlyStopping(max_epochs=args.max_epochs or DEFAULT_MAX_EPOCHS)


def _replicates(args: argparse.Namespace) -> Replicates | None:
    from gas.search.replicates import Replicates

    seeds = DEFAULT_REPLICATES if args.replicates is None else args.replicates
    if seeds < 1:
        raise GasError(f"--replicates is a number of seeds, 1 or more (1: none), got {seeds}")
    if seeds == 1:
        if args.max_seeds is not None:
            raise GasError("--max-seeds caps the seeds of replicates, which --replicates 1 turns off")
        return None
    return Replicates(seeds, max(seeds, DEFAULT_MAX_SEEDS) if args.max_seeds is None else args.max_seeds)


def _latency_target(args: argparse.Namespace) -> LatencyTarget | None:
    """The device and limit of a hardware-aware search, or None when latency plays no part."""
    from gas.latency import LatencySettings
    from gas.search.latency_limit import LatencyTarget
    from gas.units import parse_duration

    limit = parse_duration(args.max_latency, "--max-latency") if args.max_latency is not None else None
    if limit is None and args.objective != "latency" and args.latency_device is None and args.latency_runtime is None:
        return None
    device, runtime = args.latency_device or "cpu", args.latency_runtime or "torch"
    if runtime == "onnxruntime":
        from gas.onnx_model import require

        require("--latency-runtime onnxruntime")
        if device != "cpu":
            raise GasError(f"--latency-runtime onnxruntime runs on the CPU here, not {device}; drop --latency-device")
    settings = LatencySettings(
        device=device,
        threads=args.latency_threads or (1 if device == "cpu" else None),
        batch=args.latency_batch,
        dtype="bf16" if device == "cuda" else "fp32",
        runtime=runtime,
    )
    return LatencyTarget(settings, limit)


def _audit_after_search(args: argparse.Namespace, config: SearchConfig, study: optuna.Study) -> None:
    """The small fidelity audit every search ends with (`--audit N`, 0 for none), on the same kind of workers."""
    import functools

    from gas.search import audit as fidelity
    from gas.search.ray_tune import run_on_ray
    from gas.study import trained_trials

    if args.audit <= 0:
        return
    if len(trained_trials(study)) < max(3, args.audit):
        print(f"audit: skipped, the study has fewer than {max(3, args.audit)} trained trials")
        return
    audit_config = fidelity.after_search(args.audit, config.proxy)
    evaluate = functools.partial(
        run_on_ray, address=config.ray_address, cpus_per_trial=config.cpus_per_trial, name="audit"
    )
    audit = fidelity.run_audit(study, audit_config, evaluate, progress=lambda line: print(line, flush=True))
    print(fidelity.audit_line(audit))
