"""`gas audit`: retrain a sample of a study longer and record how well the proxy ranked it."""

from __future__ import annotations

import argparse

from gas.cli.common import add_study_options


def register(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit",
        help="retrain a sample of a study longer and record how well the proxy ranked it (Kendall tau)",
        description="Retrain the front and trials spread over the accuracy range with a longer schedule; record "
        "Kendall's tau between the search's and the long runs' accuracies, and whether the front's order held.",
    )
    add_study_options(audit, "study name")
    audit.add_argument(
        "--trials",
        type=int,
        help="trials to retrain, at least 3 (default: enough for a 95%% interval on Kendall τ at most 0.4 wide, "
        "at the test-retest τ the study measured for its proxy)",
    )
    audit.add_argument("--epoch-factor", type=int, default=3, help="times the search's epochs (default: 3)")
    audit.add_argument("--resolution", type=int, help="long-run resolution in px (default: 2x the proxy's if it fits)")
    audit.add_argument("--data-dir", help="where the study's dataset lives, when it needs a folder (cifar10)")
    audit.add_argument("--ray-address", help="join a running Ray cluster (host:port); default starts a local one")
    audit.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per long run on Ray (default: 1)")
    audit.add_argument("--in-process", action="store_true", help="train here, one run after another, without Ray")
    audit.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import functools

    from gas.search import audit as fidelity
    from gas.search.local import run_in_process
    from gas.search.ray_tune import run_on_ray
    from gas.storage import open_study

    study = open_study(args.study, args.storage)
    trials = args.trials
    if trials is None:
        trials, too_few = fidelity.sized_trials(study)
        print(too_few or f"auditing {trials} trials: a 95% interval on Kendall τ at most 0.4 wide", flush=True)
    config = fidelity.AuditConfig(
        trials=trials, epoch_factor=args.epoch_factor, resolution=args.resolution, data_dir=args.data_dir
    )
    evaluate: fidelity.Evaluate
    if args.in_process:
        evaluate = functools.partial(run_in_process, report=fidelity.print_outcome)
    else:
        evaluate = functools.partial(
            run_on_ray, address=args.ray_address, cpus_per_trial=args.cpus_per_trial, name="audit"
        )
    audit = fidelity.run_audit(study, config, evaluate, progress=lambda line: print(line, flush=True))
    print(f"study {study.study_name}: fidelity audit recorded")
    print("\n".join(fidelity.format_audit(audit)))
    return 0
