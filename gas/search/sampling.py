"""Random genomes from a space, optionally within a budget (for `gas sample` and benchmark harnesses)."""

from __future__ import annotations

import optuna

from gas.cost import Cost
from gas.errors import GasError
from gas.genome import Genome
from gas.search.budget import Budget
from gas.space import get_space
from gas.units import compact_count, format_count

MAX_DRAWS_PER_GENOME = 2000


def sample_genomes(
    space_name: str,
    n: int,
    seed: int = 0,
    resolution: int = 224,
    budget: int | None = None,
    max_params: int | None = None,
) -> list[tuple[Genome, Cost]]:
    """`n` distinct random genomes of the space at `resolution` meeting the budget, with their costs."""
    if n < 1:
        raise GasError(f"--n must be at least 1, got {n}")
    space = get_space(space_name)
    limits = Budget(budget, max_params) if budget is not None else None
    described = limits.describe() if limits else f"{compact_count(max_params)} params" if max_params else "no limit"
    least = space.least_cost(resolution)
    if least is not None:
        over = [
            f"{format_count(value)} {unit}"
            for value, limit, unit in ((least.flops, budget, "FLOPs"), (least.params, max_params, "params"))
            if limit is not None and value > limit
        ]
        if over:
            raise GasError(
                f"the cheapest {space.name} genomes at {resolution}px have {' and '.join(over)}, over {described}; "
                "raise the budget"
            )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found: dict[str, tuple[Genome, Cost]] = {}
    for _ in range(n * MAX_DRAWS_PER_GENOME):
        trial = study.ask()
        genome = space.sample(trial, resolution=resolution)
        study.tell(trial, 0.0)
        cost = space.cost(genome)
        within = limits.allows(cost) if limits else max_params is None or cost.params <= max_params
        if within:
            found.setdefault(genome.to_json(), (genome, cost))
            if len(found) == n:
                return list(found.values())
    raise GasError(
        f"found only {len(found)} of {n} genomes within {described} in {n * MAX_DRAWS_PER_GENOME} draws "
        f"from the {space.name} space at {resolution}px; raise the budget"
    )
