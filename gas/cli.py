"""The `gas` command line: each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gas.errors import GasError
from gas.units import format_count, parse_count

Command = Callable[[argparse.Namespace], int]


def _cost(args: argparse.Namespace) -> int:
    from gas.space import get_space, load_genome

    genome = load_genome(args.genome)
    if args.resolution:
        genome = genome.at_resolution(args.resolution)
    space = get_space(genome.space)
    space.check(genome)
    cost = space.cost(genome)
    if args.json:
        print(json.dumps({"genome": args.genome, "space": genome.space, **cost.to_dict()}))
        return 0
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
    return 0


def _sample(args: argparse.Namespace) -> int:
    from gas.sampling import sample_genomes

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gas", description="Generate fast vision transformers by constrained architecture search."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cost = commands.add_parser("cost", help="params and FLOPs of a genome, per block and in total")
    cost.add_argument("genome", help="a reference name (e.g. hiera_tiny, turbovit) or a genome .json file")
    cost.add_argument("--resolution", type=int, help="input resolution in px (default: the genome's)")
    cost.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    cost.set_defaults(run=_cost)

    sample = commands.add_parser("sample", help="write random valid genomes of a space as JSON files")
    sample.add_argument("--space", default="turbovit", help="search space (default: turbovit)")
    sample.add_argument("--n", type=int, default=10, help="how many genomes (default: 10)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--budget", help="keep genomes with at most this many FLOPs, e.g. 2.5G")
    sample.add_argument("--max-params", help="keep genomes with at most this many params, e.g. 15M")
    sample.add_argument("--resolution", type=int, default=224, help="resolution genomes are costed at (224)")
    sample.add_argument("--out", required=True, help="directory to write genome_NNNN.json files into")
    sample.set_defaults(run=_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
