"""`gas sample`: random valid genomes of a space, written as JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path

from gas.defaults import DEFAULT_SPACE
from gas.units import format_count, parse_count


def register(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser("sample", help="write random valid genomes of a space as JSON files")
    sample.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default: {DEFAULT_SPACE})")
    sample.add_argument("--n", type=int, default=10, help="how many genomes (default: 10)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--budget", help="keep genomes with at most this many FLOPs, e.g. 2.5G")
    sample.add_argument("--max-params", help="keep genomes with at most this many params, e.g. 15M")
    sample.add_argument("--resolution", type=int, default=224, help="resolution genomes are costed at (224)")
    sample.add_argument("--out", required=True, help="directory to write genome_NNNN.json files into")
    sample.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
