"""`gas cost`: params and FLOPs of a genome, per block and in total, optionally checked against fvcore."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from gas.units import format_count

if TYPE_CHECKING:
    from gas.cost import Cost
    from gas.cost_check import Agreement


def register(commands: argparse._SubParsersAction) -> None:
    cost = commands.add_parser("cost", help="params and FLOPs of a genome, per block and in total")
    cost.add_argument("genome", help="a reference name (e.g. hiera_tiny, turbovit) or a genome .json file")
    cost.add_argument("--resolution", type=int, help="input resolution in px (default: the genome's)")
    cost.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    cost.add_argument(
        "--check",
        action="store_true",
        help="also build the model and count it with fvcore; exit 1 if params differ or FLOPs by more than 0.5%%",
    )
    cost.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    print(f"{args.genome} ({genome.space} space) at {cost.resolution}px")
    print("\n".join(format_cost(cost)))
    if checks:
        what = "the analytic count against the built module's params and fvcore's FLOPs"
        print(f"\ncheck at {genome.resolution}px: {what}")
        print("\n".join(format_checks(checks)))
    if status:
        from gas.cost_check import FLOPS_TOLERANCE

        print(
            f"gas cost: the analytic count differs from the built model's (parameters must be equal, "
            f"FLOPs within {FLOPS_TOLERANCE:.1%} of fvcore's)",
            file=sys.stderr,
        )
    return status


def format_cost(cost: Cost) -> list[str]:
    """The per-part table: params, FLOPs and each part's share of the FLOPs, then the totals."""
    name_width = max(len(row.name) for row in cost.rows)
    detail_width = max(len(row.detail) for row in cost.rows)
    lines = [f"{'part':<{name_width}}  {'what':<{detail_width}}  {'params':>9}  {'FLOPs':>9}  {'share':>6}"]
    for row in cost.rows:
        share = row.count.flops / cost.flops if cost.flops else 0.0
        lines.append(
            f"{row.name:<{name_width}}  {row.detail:<{detail_width}}  {format_count(row.count.params):>9}  "
            f"{format_count(row.count.flops):>9}  {share:>6.1%}"
        )
    lines.append(
        f"{'total':<{name_width}}  {'':<{detail_width}}  {format_count(cost.params):>9}  {format_count(cost.flops):>9}"
    )
    lines.append(f"params {cost.params:,}  FLOPs {cost.flops:,} (fvcore convention: one multiply-add = one FLOP)")
    return lines


def format_checks(checks: list[Agreement]) -> list[str]:
    """The analytic count beside the built module's params and fvcore's FLOPs, one row per form."""
    header = ("form", "params", "built params", "FLOPs", "fvcore FLOPs", "difference", "")
    rows = [
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
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return [
        "  ".join(f"{cell:<{widths[0]}}" if i == 0 else f"{cell:>{widths[i]}}" for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]
