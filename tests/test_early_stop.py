"""Early stopping on Pareto rank: the rung rule, a real early-stopping search, resume and what TPE learns."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sqlite3

import pytest
from optuna.samplers._tpe.sampler import _split_trials, default_gamma_multiobjective
from optuna.trial import TrialState

from gas import record
from gas.cli import main
from gas.evaluate.proxy import ProxyConfig
from gas.latency import BuildPlan, LatencySettings
from gas.search import Engine, SearchConfig, prepare, search_in_process
from gas.search.early_stop import EarlyStopping, Rungs, front_index, goes_on, ranking
from gas.search.latency_limit import LatencyJudge, LatencyTarget
from gas.search.sampling import sample_genomes
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
    points[8] = (0.3, 1.0)  # far less accurate, far cheaper: an end of the front
    assert goes_on(points, 8, eta=3)
    assert not goes_on({**points, 9: (0.7, 150.0)}, 9, eta=3)  # dominated by all: stopped


def test_within_a_front_its_ends_rank_first_then_the_least_crowded():
    #            cheap end     crowded      isolated     isolated     accurate end
    front = {0: (0.2, 1.0), 1: (0.3, 2.0), 2: (0.35, 2.5), 3: (0.8, 9.0), 4: (0.9, 10.0)}
    # Crowding (each axis over the front's span, 0.7 and 9): 1: 0.15/0.7 + 1.5/9 = 0.38; 2: 0.5/0.7 + 7/9 = 1.49;
    # 3: 0.55/0.7 + 7.5/9 = 1.62. The ends are infinitely far; between them the more accurate ranks first.
    assert ranking(front) == [4, 0, 3, 2, 1]
    assert [goes_on(front, number, eta=2) for number in range(5)] == [True, False, False, True, True]
    # A dominated trial ranks after the whole front, however isolated it is.
    assert ranking({**front, 5: (0.1, 50.0)})[-1] == 5


def _shapes(n: int) -> dict[str, tuple[dict[int, tuple[float, float]], list[int]]]:
    """Rungs of n trials, each with the order the rule must rank them in."""
    # Sixteenths and halves are exact in binary, so evenly spaced points are crowded exactly alike.
    chain = {number: (number / 16, float(number)) for number in range(n)}  # dearer and better: one front
    ladder = {number: (1.0 - number / 16, 10.0) for number in range(n)}  # one cost: one trial per front
    same = dict.fromkeys(range(n), (0.5, 3.0))  # all tied: one front of one point
    # Two fronts of evenly spaced points (all interior points crowded alike): the first of the even trials,
    # the second of the odd ones, each dominated by the even trial before it.
    two = {number: (number / 16, float(number)) for number in range(0, n, 2)}
    two |= {number: ((number - 1.5) / 16, number - 0.5) for number in range(1, n, 2)}
    evens, odds = list(range(0, n, 2)), list(range(1, n, 2))

    def along_front(members: list[int]) -> list[int]:  # the most accurate end, the cheap end, then inwards
        return [members[-1], *members[:1], *reversed(members[1:-1])] if len(members) > 1 else members

    return {
        "one front": (chain, along_front(list(range(n)))),
        "a front each": (ladder, list(range(n))),
        "identical": (same, list(range(n))),
        "two fronts": (two, along_front(evens) + along_front(odds)),
    }


@pytest.mark.parametrize("eta", [2, 3, 4])
@pytest.mark.parametrize("n", range(1, 11))
def test_exactly_the_best_ceil_n_over_eta_go_on(n, eta):
    """Of n trials at a rung exactly ⌈n/η⌉ would go on, whole fronts, split fronts and ties alike."""
    keep = math.ceil(n / eta)
    for shape, (points, order) in _shapes(n).items():
        assert ranking(points) == order, shape
        assert {number for number in points if goes_on(points, number, eta)} == set(order[:keep]), shape


def test_random_rungs_keep_exactly_the_fraction_and_never_a_worse_front_first():
    generator = random.Random(5)
    for _ in range(300):
        n, eta = generator.randint(1, 10), generator.randint(2, 4)
        # Coarse values: ties on either axis, and identical points, are common.
        points = {number: (generator.randint(0, 4) / 4, float(generator.randint(1, 4))) for number in range(n)}
        passed = {number for number in points if goes_on(points, number, eta)}
        assert len(passed) == math.ceil(n / eta)
        levels = front_index(points)
        assert max(levels[number] for number in passed) <= min(
            (levels[number] for number in points if number not in passed), default=math.inf
        )


def test_the_first_trials_at_a_rung_go_on():
    rungs = Rungs(EarlyStopping(max_epochs=4, eta=2))
    assert rungs.report(0, 1, 0.2, 5.0)  # alone at the rung
    assert rungs.report(0, 3, 0.2, 5.0)  # not a rung: always goes on
    assert not rungs.report(1, 1, 0.1, 6.0)  # dominated by trial 0, and only one of two goes on
    rungs.forget(1)
    assert 1 not in rungs.reached[1]


TINY = ProxyConfig(dataset="digits", train_size=64, val_size=32, zero_cost_batch=0).with_overrides(device="cpu")


def _search(tmp_path, trials: int, study: str = "es") -> SearchConfig:
    """On the params axis, where costing an earlier run's trials in FLOPs would show on resume."""
    return SearchConfig(
        budget=1_000_000_000,
        trials=trials,
        study=study,
        storage=f"sqlite:///{tmp_path}/es.db",
        proxy=TINY,
        seed=2,
        progress=False,
        replicates=None,  # early stopping alone: one seed per trial
        early_stop=EarlyStopping(max_epochs=4, eta=2),
        objective="params",
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


def _stopped_after_resume(config: SearchConfig, first: set[int], more: int) -> list:
    """Resume `config`'s study for `more` trained trials; those of them stopped at a rung.

    Also checks that every trial at a rung, of either run, is costed on the study's axis, as the next
    resume rebuilds the rungs.
    """
    study = search_in_process(dataclasses.replace(config, trials=len(first) + more)).study
    trained = trained_trials(study)
    after = [t for t in trained if t.number > max(first)]
    assert len(after) == more
    axis = record.TrialKey.PREDICTED_LATENCY if config.objective == "latency" else record.TrialKey.PARAMS
    histories = {t.number: t.user_attrs.get(record.TrialKey.ACCURACY_HISTORY, ()) for t in trained}
    for rung, reached in Engine(prepare(config)[0]).rungs.reached.items():
        assert reached == {
            t.number: (histories[t.number][rung - 1], t.user_attrs[axis])
            for t in trained
            if len(histories[t.number]) >= rung
        }, f"rung {rung}"
    return [t for t in after if record.trial_record(t).is_stopped]


def test_a_resumed_params_search_stops_new_trials(early_stopped, tmp_path):
    """Costed in FLOPs, every earlier trial was dearer than any new one (costed in params), so each went on."""
    folder, outcome = early_stopped
    with sqlite3.connect(folder / "es.db") as source, sqlite3.connect(tmp_path / "es.db") as copy:
        source.backup(copy)  # a file copy could miss what is still in the write-ahead log
    first = {t.number for t in trained_trials(outcome.study)}
    assert _stopped_after_resume(_search(tmp_path, trials=len(first)), first, more=3)


BUDGET = 1_000_000_000  # small genomes: each is timed in tens of milliseconds on one thread
LATENCY = LatencySettings(device="cpu", threads=1)
PLAN = BuildPlan(genomes=4, calibrate=3, part_runs=2, runs=3, warmup=1)  # a coarse model, built in seconds


def test_a_resumed_latency_limited_search_stops_new_trials(tmp_path, monkeypatch, one_torch_thread):
    """Under a latency limit the rungs' cost is predicted latency, for an earlier run's trials as for new ones."""
    monkeypatch.setenv("GAS_CACHE_DIR", str(tmp_path / "cache"))  # a latency model of its own
    judge = LatencyJudge(LatencyTarget(LATENCY, None, PLAN), BUDGET)
    predictions = [judge.predict(genome) for genome, _ in sample_genomes("turbovit", 8, 5, 224, BUDGET)]
    judge.save()
    config = SearchConfig(
        budget=BUDGET,
        trials=3,
        study="fast",
        storage=f"sqlite:///{tmp_path}/es.db",
        proxy=TINY,
        seed=3,
        progress=False,
        replicates=None,  # early stopping alone: one seed per trial
        early_stop=EarlyStopping(max_epochs=2, eta=3),
        objective="latency",
        latency=LatencyTarget(LATENCY, max(predictions), PLAN, runs=3),
    )
    first = {t.number for t in trained_trials(search_in_process(config).study)}
    assert _stopped_after_resume(config, first, more=3)


def test_tpe_ranks_stopped_trials_below_every_complete_one(early_stopped):
    """What Optuna 5's TPE makes of an early-stopping search's study: its split into good and bad trials.

    TPE models the good ("below") and the bad ("above") trials apart. It reads COMPLETE and PRUNED trials
    and fills its good share (10% of them) with complete trials first, then feasible pruned ones, then
    infeasible ones (`_split_trials` in optuna/samplers/_tpe/sampler.py). A stopped trial is feasible and
    PRUNED: bad once complete trials fill the share, and before that, taken in the order it was recorded
    (a multi-objective study has no intermediate values to rank it by), never before a complete trial nor
    after a proposal over the budget. Told as FAIL it would not reach TPE at all; told COMPLETE with its
    partial accuracy (as Ray Tune's OptunaSearch tells a trial its scheduler stopped) it would compete as a
    result.
    """
    study = early_stopped[1].study
    seen = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))  # what TPE reads
    stopped = sorted(t.number for t in seen if record.trial_record(t).is_stopped)
    complete = {t.number for t in seen if t.state == TrialState.COMPLETE}
    infeasible = {t.number for t in seen if record.trial_record(t).is_infeasible}
    assert stopped and complete and infeasible and len(complete | set(stopped) | infeasible) == len(seen)
    for wanted in range(len(seen) + 1):
        below, above = _split_trials(study, seen, wanted)
        good = {t.number for t in below}
        assert len(good) == wanted and len(above) == len(seen) - wanted
        if wanted <= len(complete):
            assert good <= complete
        elif wanted <= len(complete) + len(stopped):
            assert good == complete | set(stopped[: wanted - len(complete)])
        else:
            assert good >= complete | set(stopped)
    share = default_gamma_multiobjective(len(seen))  # TPE's own good share on this study
    assert {t.number for t in _split_trials(study, seen, share)[0]} & set(stopped) == set(
        stopped[: max(0, share - len(complete))]
    )


def test_ray_tunes_scheduler_stops_trials_at_a_rung_and_they_are_recorded_stopped(tmp_path, monkeypatch):
    """The Ray Tune driver's early stopping: the rung rule decides on the driver, Ray stops the trial there.

    One trial at a time, so each reached its rung after every trial before it had finished: replayed in
    that order, the rule takes the same decisions. η = 4 keeps only the best of up to four at the rung.
    """
    from gas.search.ray_tune import run_search  # Ray takes seconds to import; only this test needs it

    monkeypatch.chdir(tmp_path)  # Ray Tune's trial folders go under runs/ray
    policy = EarlyStopping(max_epochs=2, eta=4)
    config = SearchConfig(
        budget=2_500_000_000,  # most proposals fit: little time goes on rejections
        trials=4,
        study="ray",
        storage=f"sqlite:///{tmp_path}/ray.db",
        proxy=TINY,
        seed=1,
        progress=False,
        replicates=None,  # early stopping alone: one seed per trial
        early_stop=policy,
        max_concurrent=1,
    )
    study = run_search(config).study
    trained = sorted(trained_trials(study), key=lambda t: t.number)
    assert len(trained) == 4 and {t.number for t in trained} == {
        int(path.name.removeprefix("trial_")) for path in (tmp_path / "runs" / "ray").glob("*/trial_*")
    }, "every trained trial ran as a Ray Tune trial"
    stopped = [t for t in trained if record.trial_record(t).is_stopped]
    assert stopped, "the scheduler stopped trials at the rung"
    replay = Rungs(policy)
    for trial in trained:
        history = trial.user_attrs[record.TrialKey.ACCURACY_HISTORY]
        goes_on = replay.report(trial.number, 1, history[0], float(trial.user_attrs[record.TrialKey.FLOPS]))
        assert goes_on == (trial.state == TrialState.COMPLETE) == (not record.trial_record(trial).is_stopped)
        # A stopped trial reported nothing after the rung: Ray ended it there, it did not train on.
        assert len(history) == (2 if goes_on else 1) == trial.user_attrs[record.TrialKey.EPOCHS_COMPLETED]
        assert all(value <= 0 for value in trial.constraints.values())
