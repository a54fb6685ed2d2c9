"""`gas compare`: a study's picks against baselines, retrained with several seeds and scored on the test split."""

from __future__ import annotations

import argparse

from gas.cli.common import add_study_options
from gas.defaults import COMPARE_AGAINST, COMPARE_PICKS


def register(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="retrain a study's picks and baselines with several seeds; test accuracy, latency, p-values",
        description="Retrain a study's picks and baseline networks from scratch on the target schedule (4x the "
        "proxy's epochs at 64px unless --epochs/--resolution say otherwise), once per seed; score each on the test "
        "split no search reads, measure its latency on the study's target device, and test each pick against "
        "each baseline (Welch's and the paired t-test).",
    )
    add_study_options(compare, "study name")
    compare.add_argument(
        "--picks",
        default=",".join(COMPARE_PICKS),
        help="comma list of study picks (best, knee, max-acc-under=FLOPS, fastest-over=ACCURACY) and genome .json "
        f"files (default: {','.join(COMPARE_PICKS)})",
    )
    compare.add_argument(
        "--against",
        default=",".join(COMPARE_AGAINST),
        help="comma list of baselines: references, genome .json files, or either scaled to the study's limits as "
        f"NAME@width or NAME@depth (default: {','.join(COMPARE_AGAINST)})",
    )
    compare.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 per candidate (default: 3)")
    compare.add_argument("--epochs", type=int, help="training epochs (default: 4x the study's proxy's)")
    compare.add_argument("--resolution", type=int, help="training resolution px (default: 64 where the space allows)")
    compare.add_argument("--data-dir", help="where the study's dataset lives, when it needs a folder (cifar10)")
    compare.add_argument("--runs", type=int, help="timed runs per latency measurement (default: 20)")
    compare.add_argument("--json", action="store_true", help="print the comparison as one JSON object instead")
    compare.add_argument("--plot", help="also draw test accuracy against latency: .png, .svg or .pdf")
    compare.add_argument("--ray-address", help="join a running Ray cluster (host:port); default starts a local one")
    compare.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per training run on Ray (default: 1)")
    compare.add_argument("--in-process", action="store_true", help="train here, one run after another, without Ray")
    compare.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import functools
    import json
    import sys

    from gas.compare import CompareConfig, run_compare, split_list
    from gas.compare_report import check_plot_path, format_comparison, write_plot
    from gas.latency import DEFAULT_RUNS
    from gas.search.local import run_in_process
    from gas.search.ray_tune import run_on_ray
    from gas.storage import open_study

    config = CompareConfig(
        picks=split_list(args.picks),
        against=split_list(args.against),
        seeds=args.seeds,
        epochs=args.epochs,
        resolution=args.resolution,
        data_dir=args.data_dir,
        latency_runs=DEFAULT_RUNS if args.runs is None else args.runs,
    )
    if args.plot:
        check_plot_path(args.plot)
    study = open_study(args.study, args.storage)
    train = (
        run_in_process
        if args.in_process
        else functools.partial(
            run_on_ray, address=args.ray_address, cpus_per_trial=args.cpus_per_trial, name="compare"
        )
    )
    # Progress goes to stderr, so that --json leaves stdout one JSON object.
    result = run_compare(study, config, train, progress=lambda line: print(line, file=sys.stderr, flush=True))
    written = write_plot(result, args.plot) if args.plot else None
    if args.json:
        print(json.dumps(result))
        return 0
    print("\n".join(format_comparison(result)))
    if written is not None:
        print(f"wrote {written}")
    return 0
