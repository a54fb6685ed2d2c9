"""Early stopping on Pareto rank: the rung rule, a real early-stopping search, resume and what TPE learns."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from gas import record
from gas.cli import main
from gas.evaluate.proxy import ProxyConfig, ProxyResult
from gas.search import Engine, SearchConfig, make_sampler, search_in_process
from gas.search.budget import Budget
from gas.search.early_stop import EarlyStopping, Rungs, front_index, goes_on
from gas.space import get_space
from gas.study import rung_histories, state_counts, trained_trials


def test_rungs_grow_by_eta_below_the_longest_schedule():
    assert EarlyStopping(max_epochs=12, eta=3).rungs == (1, 3, 9)
    assert EarlyStopping(max_epochs=8, eta=2).rungs == (1, 2, 4)
    assert EarlyStopping(max_epochs=9, eta=3).rungs == (1, 3)


def test_non_dominated_sorting_by_hand():
    points = {0: (0.9, 10.0), 1: (0.5, 1.0), 2: (0.4, 5.0), 3: (0.3, 20.0), 4: (0.95, 30.0)}
    # 0, 1 and 4 are on the front; 2 is dominated by 1; 3 is dominated by 2 (and by 0 and 1).
    assert front_index(points) == {0: 0, 1: 0, 4: 0, 2: 1, 3: 2}


def test_a_cheap_network_competes_with_cheap_ones():
    """Successive halving on accuracy alone would stop the cheapest trial; on Pareto rank it goes on."""
    points = {number: (0.8 + 0.01 * number, 100.0 + number) for number in range(8)}
    points[8] = (0.3, 1.0)  # far less accurate, far cheaper: on the front
    assert goes_on(points, 8, eta=3)
    assert not goes_on({**points, 9: (0.7, 150.0)}, 9, eta=3)  # dominated by all: stopped
    # Best third: 3 of 9 may go on; trials in later fronts only while fewer than that lie ahead of them.
    chain = {number: (0.1 * number, float(number)) for number in range(9)}  # dearer and better: one front
    assert all(goes_on(chain, number, eta=3) for number in chain)
    ladder = {number: (1.0 - 0.1 * number, 10.0) for number in range(9)}  # one cost: one trial per front
    assert [goes_on(ladder, number, eta=3) for number in range(9)] == [True] * 3 + [False] * 6


def test_the_first_trials_at_a_rung_go_on():
    rungs = Rungs(EarlyStopping(max_epochs=4, eta=2))
    assert rungs.report(0, 1, 0.2, 5.0)  # alone at the rung
    assert rungs.report(0, 3, 0.2, 5.0)  # not a rung: always goes on
    assert not rungs.report(1, 1, 0.1, 6.0)  # dominated by trial 0, and only one of two goes on
    rungs.forget(1)
    assert 1 not in rungs.reached[1]


TINY = ProxyConfig(dataset="digits", train_size=64, val_size=32, zero_cost_batch=0).with_overrides(device="cpu")


def _search(tmp_path, trials: int, study: str = "es") -> SearchConfig:
    return SearchConfig(
        budget=1_000_000_000,
        trials=trials,
        study=study,
        storage=f"sqlite:///{tmp_path}/es.db",
        proxy=TINY,
        seed=2,
        progress=False,
        early_stop=EarlyStopping(max_epochs=4, eta=2),
    )


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("early_stop")
    outcome = search_in_process(_search(folder, trials=8))
    return folder, outcome


def test_an_early_stopping_search_stops_trials_and_keeps_them_off_the_front(early_stopped, capsys):
    folder, outcome = early_stopped
    study = outcome.study
    trials = trained_trials(study)
    stopped = [t for t in trials if record.trial_record(t).is_stopped]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 8 and stopped and complete
    assert state_counts(study)["stopped"] == len(stopped)
    for trial in stopped:
        history = trial.user_attrs[record.TrialKey.ACCURACY_HISTORY]
        assert trial.user_attrs[record.TrialKey.STOPPED_AT] == len(history) in (1, 2)
        assert all(value <= 0 for value in trial.constraints.values()), "a stopped trial was feasible"
    for trial in complete:
        assert len(trial.user_attrs[record.TrialKey.ACCURACY_HISTORY]) == 4 == trial.user_attrs["proxy_epochs"]
    on_front = {t.number for t in study.best_trials}
    assert on_front and not on_front & {t.number for t in stopped}

    storage = f"sqlite:///{folder}/es.db"
    assert main(["pareto", "--study", "es", "--storage", storage, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {row["trial"] for row in shown["front"]} == on_front and shown["trials"]["stopped"] == len(stopped)
    out = folder / "stopped.py"
    assert main(["export", "--study", "es", "--storage", storage, "--trial", str(stopped[0].number), "--out", str(out)])
    assert "is PRUNED" in capsys.readouterr().err and not out.exists()


def test_a_resumed_search_rebuilds_its_rungs_from_finished_trials_only(early_stopped, tmp_path):
    folder, _ = early_stopped
    engine = Engine(_search(folder, trials=10))
    finished = {number for number, _, _ in rung_histories(engine.study)}
    assert set(engine.rungs.reached[1]) == finished
    proposal = engine.propose()
    assert engine.report(proposal.number, 1, 1.0)  # the best accuracy so far goes on
    assert proposal.number in engine.rungs.reached[1]
    assert engine.abandon()  # interrupted mid-schedule: re-queued, its rung entry forgotten
    assert proposal.number not in engine.rungs.reached[1]
    again = Engine(_search(folder, trials=10))
    assert again.requeue() == 0  # abandon() already re-queued it
    retry = again.propose()
    assert retry.genome == proposal.genome, "the re-queued trial restarts with the same genome"
    assert set(again.rungs.reached[1]) == finished


def _next_proposals(name: str, storage: str, count: int) -> list[dict]:
    """TPE's next `count` proposals on a study, from a freshly seeded sampler (so only the history differs)."""
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler("tpe", seed=7))
    proposed = []
    for _ in range(count):
        trial = study.ask()
        get_space("turbovit").sample(trial)
        proposed.append(trial.params)
        study.tell(trial, state=TrialState.FAIL)
    return proposed


def test_tpe_proposes_otherwise_when_stopped_trials_are_recorded(tmp_path):
    """Stopped trials are told as feasible PRUNED trials; TPE counts them among the bad, so its proposals change.

    Two studies hold the same twelve trained trials (same parameters, same results); one also holds six
    trials stopped at their first rung, written as the engine writes them. A sampler seeded alike proposes
    differently on the two: the stopped trials reach TPE.
    """
    space = get_space("turbovit")
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    params = []
    for _ in range(18):
        trial = draws.ask()
        space.sample(trial)
        params.append(trial.params)
        draws.tell(trial, 0.0)

    def build(name: str, with_stopped: bool) -> str:
        storage = f"sqlite:///{tmp_path}/{name}.db"
        study = optuna.create_study(study_name=name, storage=storage, directions=list(record.DIRECTIONS))
        for index, fixed in enumerate(params):
            stopped = index >= 12
            if stopped and not with_stopped:
                continue
            study.enqueue_trial(fixed)
            trial = study.ask()
            genome = space.sample(trial)
            cost = space.cost(genome)
            constraints, _ = Budget(10**12).check(cost)
            record.write_proposal(trial, genome, cost, 10**12, constraints)
            record.write_dispatch(trial, TINY)
            accuracy = 0.3 + 0.04 * (index % 12)
            result = ProxyResult(accuracy, (accuracy,), 1.0, 1.0, "cpu", 1, {}, None, None, 32, cost.flops)
            (record.write_stopped if stopped else record.write_result)(study, trial, result)
        return storage

    told, untold = build("told", with_stopped=True), build("untold", with_stopped=False)
    assert state_counts(optuna.load_study(study_name="told", storage=told))["stopped"] == 6
    assert _next_proposals("told", told, 3) != _next_proposals("untold", untold, 3)
