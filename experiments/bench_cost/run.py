"""Time the analytic cost model against fvcore on the same genomes: genomes/second for each, and the ratio.

    python experiments/bench_cost/run.py [--n 50] [--seed 0]

fvcore needs a built model, so its time is build + trace-and-count (what a budget check would cost
without the analytic model); the count alone is reported too. Writes experiments/results/bench_cost.{csv,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import time

import pandas as pd
import torch

from experiments.common.cli import harness_parser
from experiments.common.results import RESULTS, command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from gas.fvcore_count import fvcore_flops
from gas.search.sampling import sample_genomes
from gas.space import get_space

SCRIPT = "experiments/bench_cost/run.py"


def main() -> None:
    parser = harness_parser(__doc__, out=None)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="turbovit")
    parser.add_argument("--budget", type=float, default=2.5e9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = get_space(args.space)
    genomes = [genome for genome, _ in sample_genomes(args.space, args.n, args.seed, 224, int(args.budget))]

    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        analytic = [space.cost(genome).flops for genome in genomes]
    analytic_s = (time.perf_counter() - start) / repeats

    build_s = count_s = 0.0
    reference = []
    for genome in genomes:
        start = time.perf_counter()
        model = space.build(genome)
        build_s += time.perf_counter() - start
        start = time.perf_counter()
        reference.append(fvcore_flops(model, genome.resolution))
        count_s += time.perf_counter() - start
    worst = max(abs(a - r) / r for a, r in zip(analytic, reference, strict=True))

    rows = pd.DataFrame(
        [
            {"method": "analytic (gas.cost)", "seconds": analytic_s, "genomes_per_s": args.n / analytic_s},
            {
                "method": "fvcore: build + count",
                "seconds": build_s + count_s,
                "genomes_per_s": args.n / (build_s + count_s),
            },
            {"method": "fvcore: count only", "seconds": count_s, "genomes_per_s": args.n / count_s},
        ]
    )
    rows["speedup_of_analytic"] = rows["seconds"] / analytic_s
    write_csv(RESULTS / "bench_cost.csv", rows)
    table = frame_markdown(rows, ".4g")
    write_page(
        RESULTS,
        "bench_cost",
        f"# Analytic cost model vs fvcore\n\n{args.n} random `{args.space}` genomes at 224px within "
        f"{args.budget:.3g} FLOPs, one CPU thread. Worst relative FLOPs difference: {worst:.2e}.\n\n"
        f"{table}\n\n{stamp(command_line(SCRIPT))}",
    )
    print(table)
    print(f"worst relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
