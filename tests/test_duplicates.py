"""A genome is trained once: a repeat of any trained genome takes that training's outcome, in the run and on resume.

The engine runs on a real SQLite study as a driver runs it (propose, report each epoch, record); the
workers' results are given, except the latency, which is measured.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from gas import record
from gas.evaluate.proxy import ProxyConfig, ProxyResult
from gas.latency import BuildPlan, LatencySettings
from gas.search import Engine, Proposal, SearchConfig, prepare
from gas.search.budget import Budget
from gas.search.early_stop import EarlyStopping
from gas.search.latency_limit import LatencyJudge, LatencyTarget
from gas.space import get_space
from gas.study import trained_trials

BUDGET = 1_000_000_000  # small genomes: each is timed in tens of milliseconds on one thread
TINY = ProxyConfig(dataset="digits", train_size=64, val_size=32, zero_cost_batch=0).with_overrides(device="cpu")
LATENCY = LatencySettings(device="cpu", threads=1)
PLAN = BuildPlan(genomes=4, calibrate=3, part_runs=2, runs=3, warmup=1)  # a coarse model, built in seconds
OUTCOMES = ("complete", "stopped", "failed", "over the latency limit")


def _drawn(count: int) -> list[dict]:
    """The sampler parameters of `count` distinct random genomes within the budget, largest FLOPs first."""
    space, drawn = get_space("turbovit"), {}
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    while len(drawn) < count:
        trial = draws.ask()
        genome = space.sample(trial)
        draws.tell(trial, 0.0)
        cost = space.cost(genome)
        if Budget(BUDGET).allows(cost):
            drawn.setdefault(genome.to_json(), (cost.flops, trial.params))
    return [params for _, params in sorted(drawn.values(), key=lambda entry: -entry[0])]


def _propose(engine: Engine, *params: dict) -> Proposal:
    """The engine's next proposal, with the sampler made to draw each of `params` in turn (as a re-queued
    trial is drawn) until one is proposed; so no time goes on the sampler's own proposals over the budget."""
    for each in params:
        engine.study.enqueue_trial(each)
    return engine.propose()


def _result(history: list[float]) -> ProxyResult:
    return ProxyResult(history[-1], tuple(history), 2.0, 100.0, "cpu", len(history), {}, None, None, 32, 1)


def _latency_limit_of(params: dict) -> float:
    """Half as much again as the genome's predicted latency, as the search's limit: it is proposed within it.

    The margin is the machine's: each judge times the reference network anew, and predictions are in its
    units, so the search's judge predicts this genome a little above or below this one. Measured at batch 8
    it is still far over the limit.
    """
    genome = get_space("turbovit").sample(optuna.trial.FixedTrial(params))
    judge = LatencyJudge(LatencyTarget(LATENCY, None, PLAN), BUDGET)
    limit = 1.5 * judge.predict(genome)
    judge.save()
    return limit


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_repeated_genome_keeps_its_outcome_and_is_never_trained_again(tmp_path, monkeypatch, outcome):
    monkeypatch.setenv("GAS_CACHE_DIR", str(tmp_path / "cache"))  # a latency model of its own
    genome, rival, spare, other_spare = _drawn(4)
    latency = None
    if outcome == "over the latency limit":
        latency = LatencyTarget(LATENCY, _latency_limit_of(genome), PLAN, runs=3)
    config = SearchConfig(
        budget=BUDGET,
        trials=10,
        study="once",
        storage=f"sqlite:///{tmp_path}/once.db",
        proxy=TINY,
        progress=False,
        early_stop=EarlyStopping(max_epochs=2, eta=2) if outcome == "stopped" else None,
        latency=latency,
        objective="latency" if latency else "flops",
        replicates=None,  # the repeat meets its first training's outcome, told at once
    )
    config = prepare(config)[0]
    engine = Engine(config)
    if outcome == "stopped":  # a rival at the rung first, more accurate: of the two, only one goes on
        first = _propose(engine, rival)
        assert engine.report(first.number, 1, 0.9)
        engine.record(first.number, _result([0.9, 0.95]))
    trained = _propose(engine, genome)
    if outcome == "stopped":
        assert not engine.report(trained.number, 1, 0.1)
        engine.record(trained.number, engine.partial_result(trained.number))
    elif outcome == "failed":
        engine.record(trained.number, "RuntimeError: loss became nan")
    else:
        if latency:  # measured on a device 8 times as slow as its model: over the limit its prediction met
            engine.judge.target = dataclasses.replace(latency, settings=dataclasses.replace(LATENCY, batch=8))
        engine.record(trained.number, _result([0.4, 0.5]))

    original = engine.study.trials[trained.number]
    expected = {
        "complete": lambda t: t.state == TrialState.COMPLETE and t.values == [0.5, t.user_attrs["flops"]],
        "stopped": lambda t: record.trial_record(t).is_stopped and t.user_attrs["stopped_at"] == 1,
        "failed": lambda t: t.state == TrialState.FAIL and t.user_attrs["error"] == "RuntimeError: loss became nan",
        "over the latency limit": lambda t: record.trial_record(t).is_infeasible and t.constraints["latency"] > 0,
    }[outcome]
    assert expected(original)

    in_run = _propose(engine, genome, spare)  # repeated in the run that trained it: the spare is proposed
    resumed = Engine(config)
    on_resume = _propose(resumed, genome, other_spare)  # and in a later run of the study
    key = record.genome_key(original.user_attrs["genome"])
    assert [record.genome_key(proposal.genome) for proposal in (in_run, on_resume)].count(key) == 0
    repeats = [t for t in resumed.study.get_trials() if record.trial_record(t).duplicate_of is not None]
    assert [t.user_attrs["duplicate_of"] for t in repeats] == [trained.number] * 2
    for repeat in repeats:
        assert expected(repeat) and repeat.state == original.state and repeat.values == original.values
        assert repeat.constraints == original.constraints
        assert record.trial_record(repeat).is_infeasible == record.trial_record(original).is_infeasible
    trained_keys = [record.genome_key(t.user_attrs["genome"]) for t in trained_trials(resumed.study)]
    assert trained_keys.count(key) == 1, "the genome was trained once"
