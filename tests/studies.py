"""Studies written the way the search driver writes them (through gas.record's writers), on real SQLite storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from gas import record
from gas.cost import Cost
from gas.evaluate.proxy import ProxyResult
from gas.search.budget import Budget
from gas.search.sampling import sample_genomes
from gas.space import get_space, load_genome

BUDGET = 2_500_000_000


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def new_study(url: str, name: str, budget: int = BUDGET) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, directions=list(record.DIRECTIONS))
    for key, value in {
        record.StudyKey.SPACE: "turbovit",
        record.StudyKey.BUDGET: budget,
        record.StudyKey.MAX_PARAMS: None,
        record.StudyKey.SEED: 0,
        record.StudyKey.SAMPLER: "tpe",
    }.items():
        study.set_user_attr(key, value)
    return study


def _propose(study: optuna.Study, genome_data: dict, budget: int) -> tuple[optuna.Trial, list[str]]:
    """Ask a trial and write the genome's proposal as the engine does; returns it with its over-budget reasons."""
    genome = load_genome(genome_data)
    cost = get_space(genome.space).cost(genome)
    trial = study.ask()
    constraints, reasons = Budget(budget).check(cost)
    record.write_proposal(trial, genome, cost, budget, constraints)
    return trial, reasons


def _dispatch(trial: optuna.Trial) -> None:
    from gas.evaluate.proxy import ProxyConfig

    record.write_dispatch(trial, ProxyConfig(dataset="digits").with_overrides(epochs=2, seed=trial.number))


def add_complete(study: optuna.Study, genome_data: dict, accuracy: float, budget: int = BUDGET) -> int:
    """A feasible proposal trained to the end: COMPLETE with values (accuracy, FLOPs)."""
    trial, reasons = _propose(study, genome_data, budget)
    assert not reasons, "a complete trial must be within budget"
    _dispatch(trial)
    record.write_result(study, trial, trained_result(accuracy, (accuracy / 2, accuracy)))
    return trial.number


def trained_result(accuracy: float, history: tuple[float, ...] | None = None) -> ProxyResult:
    """What a worker reports for a training that ended at `accuracy` (after each epoch: `history`)."""
    history = history or (accuracy,)
    return ProxyResult(
        accuracy=accuracy,
        accuracy_history=history,
        wall_time=1.5,
        images_per_second=100.0,
        device="cpu",
        epochs=len(history),
        zero_cost={},
        mfu=None,
        loss=1.0,
        batch_size=32,
        forward_flops=1,
    )


def add_infeasible(study: optuna.Study, genome_data: dict, budget: int) -> int:
    """An over-budget proposal: PRUNED with a positive constraint, never trained."""
    trial, reasons = _propose(study, genome_data, budget)
    assert reasons, "an infeasible trial must be over budget"
    record.write_infeasible(study, trial, reasons)
    return trial.number


def add_failed(study: optuna.Study, genome_data: dict, budget: int = BUDGET) -> int:
    """A feasible proposal whose training raised: FAIL with the error recorded."""
    trial, _ = _propose(study, genome_data, budget)
    _dispatch(trial)
    record.write_failure(study, trial, "RuntimeError: loss diverged")
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


def objective_study(path: Path, objective: str) -> tuple[str, optuna.Study]:
    """A study whose front's cost axis is `objective` (flops, params or latency), written as the engine writes one.

    Measured latency falls as FLOPs rise, so a front drawn on FLOPs is not the front on latency. Trials, by
    FLOPs: five trained (one dominated on latency), one trained and measured over the latency limit, one
    predicted over it and never trained, and one that failed while training.
    """
    from gas.latency import LatencySettings
    from gas.search.latency_limit import LatencyTarget

    genomes = sampled_genomes(8, seed=5, budget=BUDGET)
    space = get_space("turbovit")

    def by_flops(pair: tuple[Cost, int]) -> int:
        return pair[0].flops

    costs = sorted(((space.cost(load_genome(data)), index) for index, data in enumerate(genomes)), key=by_flops)
    limit = 0.030
    max_params = max(cost.params for cost, _ in costs) + 1
    url = sqlite_url(path)
    study = new_study(url, f"by-{objective}")
    study.set_user_attr(record.StudyKey.OBJECTIVE, objective)
    study.set_user_attr(record.StudyKey.MAX_PARAMS, max_params)
    target = LatencyTarget(LatencySettings(device="cpu", threads=1), limit)
    record.write_latency(study, target.to_dict(), None)
    budget = Budget(BUDGET, max_params, limit)
    accuracies = [0.62, 0.50, 0.41, 0.45, 0.48, 0.70]
    measured = [0.026, 0.020, 0.014, 0.018, 0.024, 0.034]
    predicted = [0.028, 0.021, 0.015, 0.019, 0.025, 0.028, 0.045, 0.021]  # the sixth predicted under, measured over
    for rank, (cost, index) in enumerate(costs):
        trial = study.ask()
        flops_only, _ = budget.check(cost)
        with_latency, reasons = budget.check(cost, predicted[rank])
        if reasons:
            record.write_proposal(trial, load_genome(genomes[index]), cost, BUDGET, with_latency, predicted[rank])
            record.write_infeasible(study, trial, reasons)
            continue
        record.write_proposal(trial, load_genome(genomes[index]), cost, BUDGET, flops_only, predicted[rank])
        _dispatch(trial)
        if rank >= len(measured):
            record.write_failure(study, trial, "RuntimeError: loss diverged")
            continue
        result = ProxyResult(
            accuracy=accuracies[rank],
            accuracy_history=(accuracies[rank],),
            wall_time=1.0,
            images_per_second=100.0,
            device="cpu",
            epochs=1,
            zero_cost={},
            mfu=None,
            loss=1.0,
            batch_size=32,
            forward_flops=1,
        )
        record.write_measured_latency(trial, measured[rank], took=2.0)
        latency, reasons = budget.check(cost, measured[rank])
        latency = {name: value for name, value in latency.items() if name == "latency"}
        if reasons:
            record.write_over_limit(study, trial, result, latency, reasons)
            continue
        record.write_constraints(trial, latency)
        axis = {"flops": cost.flops, "params": cost.params, "latency": measured[rank]}[objective]
        record.write_result(study, trial, result, axis)
    return url, study
