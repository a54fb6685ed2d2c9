"""Studies written the way the search driver writes them (gas/study.py's contract), on real SQLite storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from gas import study as contract
from gas.search.sampling import sample_genomes
from gas.space import get_space, load_genome

BUDGET = 2_500_000_000


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def new_study(url: str, name: str, budget: int = BUDGET) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, directions=list(contract.DIRECTIONS))
    for key, value in {"space": "turbovit", "budget": budget, "max_params": None, "seed": 0, "sampler": "tpe"}.items():
        study.set_user_attr(key, value)
    return study


def _common_attrs(genome_data: dict, budget: int, seed: int) -> dict:
    genome = load_genome(genome_data)
    cost = get_space(genome.space).cost(genome)
    return {
        contract.GENOME: json.loads(genome.to_json()),
        contract.PARAMS: cost.params,
        contract.FLOPS: cost.flops,
        contract.BUDGET_UTILISATION: cost.flops / budget,
        contract.SEED: seed,
        contract.DATASET: "synthetic",
        contract.PROXY_RESOLUTION: 32,
        contract.PROXY_EPOCHS: 2,
        contract.EVALUATOR: "train",
    }


def add_complete(study: optuna.Study, genome_data: dict, accuracy: float, budget: int = BUDGET) -> int:
    """A feasible proposal trained to the end: COMPLETE with values (accuracy, FLOPs)."""
    trial = study.ask()
    attrs = _common_attrs(genome_data, budget, seed=trial.number)
    for key, value in {
        **attrs,
        contract.FEASIBLE: True,
        contract.INFEASIBLE_REASON: None,
        contract.ACCURACY: accuracy,
        contract.WALL_TIME: 1.5,
        contract.IMAGES_PER_SECOND: 100.0,
        contract.DEVICE: "cpu",
        contract.ERROR: None,
    }.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("flops", attrs[contract.FLOPS] - budget)
    study.tell(trial, [accuracy, attrs[contract.FLOPS]])
    return trial.number


def add_infeasible(study: optuna.Study, genome_data: dict, budget: int) -> int:
    """An over-budget proposal: PRUNED with a positive constraint, never trained."""
    trial = study.ask()
    attrs = _common_attrs(genome_data, budget, seed=trial.number)
    assert attrs[contract.FLOPS] > budget, "an infeasible trial must be over budget"
    for key, value in {
        **attrs,
        contract.FEASIBLE: False,
        contract.INFEASIBLE_REASON: f"{attrs[contract.FLOPS]} FLOPs over the {budget} budget",
        contract.ACCURACY: None,
    }.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("flops", attrs[contract.FLOPS] - budget)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return trial.number


def add_failed(study: optuna.Study, genome_data: dict, budget: int = BUDGET) -> int:
    """A feasible proposal whose training raised: FAIL with the error recorded."""
    trial = study.ask()
    for key, value in {**_common_attrs(genome_data, budget, seed=trial.number), contract.FEASIBLE: True}.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr(contract.ERROR, "RuntimeError: loss diverged")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return trial.number


def sampled_genomes(n: int, seed: int, resolution: int = 224, budget: int | None = None) -> list[dict]:
    """`n` distinct random turbovit genomes as JSON objects (what `gas sample` writes)."""
    return [json.loads(genome.to_json()) for genome, _ in sample_genomes("turbovit", n, seed, resolution, budget)]


def mixed_study(path: Path, name: str = "mixed") -> tuple[str, optuna.Study, dict[str, list[int]]]:
    """A study with trained, infeasible and failed trials; returns its URL, the study and trial numbers by kind.

    The budget sits between the sampled genomes' costs so some are feasible and some are not; accuracies
    are chosen so that some feasible trials dominate others.
    """
    genomes = sampled_genomes(14, seed=3)
    costs = sorted((get_space("turbovit").cost(load_genome(data)).flops, index) for index, data in enumerate(genomes))
    budget = costs[9][0]  # ten genomes within budget, four over it
    url = sqlite_url(path)
    study = new_study(url, name, budget)
    numbers: dict[str, list[int]] = {"complete": [], "infeasible": [], "failed": []}
    accuracies = [0.31, 0.45, 0.40, 0.52, 0.47, 0.61, 0.58, 0.66, 0.55, 0.70]
    for rank, (_flops, index) in enumerate(costs):
        if rank < 8:
            numbers["complete"].append(add_complete(study, genomes[index], accuracies[rank], budget))
        elif rank < 10:
            numbers["failed"].append(add_failed(study, genomes[index], budget))
        else:
            numbers["infeasible"].append(add_infeasible(study, genomes[index], budget))
    return url, study, numbers
