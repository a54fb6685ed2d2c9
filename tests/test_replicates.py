"""Seed replicates and racing: the rules on hand-made fronts, a planted lucky seed, and real tiny searches."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest
from optuna.trial import TrialState

from gas import record
from gas.cli import main
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig
from gas.front import pick_trial
from gas.search import Engine, SearchConfig, search_in_process
from gas.search.audit import MAX_INTERVAL_WIDTH, PRIOR_TAU, sized_trials
from gas.search.replicates import (
    MIN_REPLICATED,
    NOISE_EVERY,
    Replicates,
    Standing,
    front_of,
    in_doubt,
    is_candidate,
    neighbours,
)
from gas.space import get_space, load_genome
from gas.stats import seed_noise, tau_interval_width
from gas.study import trained_trials
from tests.conftest import run_gas
from tests.studies import add_complete, new_study, sampled_genomes, sqlite_url, trained_result

TINY = ProxyConfig(dataset="digits", train_size=64, val_size=32, zero_cost_batch=0).with_overrides(
    device="cpu", epochs=1, resolution=32
)
BUDGET = 1_000_000_000


# ---- the rules ------------------------------------------------------------------------------------------


def _front() -> list[Standing]:
    return front_of(
        [Standing(1, 1.0, 0.50, 2), Standing(2, 2.0, 0.60, 2), Standing(3, 3.0, 0.55, 2), Standing(4, 4.0, 0.80, 3)]
    )


def test_the_front_is_the_non_dominated_means_cheapest_first():
    assert [point.number for point in _front()] == [1, 2, 4]  # 3 costs more than 2 and is less accurate


def test_a_trial_is_a_candidate_unless_a_cheaper_front_trial_leads_it_beyond_the_noise():
    front, sd = _front(), 0.02
    # 0.60 at cost 2 leads by 0.10 > 2 * 0.02 * sqrt(1.5) = 0.049: not a candidate.
    assert not is_candidate(5, 0.50, 2.5, front, sd, MIN_REPLICATED)
    assert is_candidate(5, 0.57, 2.5, front, sd, MIN_REPLICATED)  # within the noise of 0.60
    assert is_candidate(5, 0.40, 0.5, front, sd, MIN_REPLICATED)  # nothing is as cheap
    assert is_candidate(NOISE_EVERY * 3, 0.10, 9.0, front, sd, MIN_REPLICATED)  # the noise share
    assert is_candidate(5, 0.10, 9.0, front, sd, MIN_REPLICATED - 1)  # no noise measured yet: every trial
    assert is_candidate(5, 0.10, 9.0, front, None, MIN_REPLICATED)


def test_racing_goes_on_while_a_neighbour_is_within_the_noise():
    front, sd = _front(), 0.02
    assert [point.number for point in neighbours(2.5, front, 9)] == [2, 4]
    # Against 0.60 (2 seeds) at 2 seeds: 2 * 0.02 * sqrt(1/2 + 1/2) = 0.04.
    assert in_doubt(9, [0.61, 0.65], 2.5, front, sd)  # mean 0.63, lead 0.03: not settled
    assert not in_doubt(9, [0.66, 0.68], 2.5, front, sd)  # lead 0.07 over 0.60, 0.13 short of 0.80: settled
    assert not in_doubt(9, [0.61, 0.65], 2.5, front, None)  # nothing measured: nothing to race against
    assert in_doubt(9, [0.61, 0.65, 0.64, 0.62], 2.5, front, sd)  # the cap is the engine's, not this rule's


def test_replicates_refuse_fewer_seeds_than_two_and_a_cap_below_them():
    with pytest.raises(Exception, match="at least 2 seeds"):
        Replicates(seeds=1)
    with pytest.raises(Exception, match="at least --replicates"):
        Replicates(seeds=3, max_seeds=2)


# ---- a planted lucky seed -------------------------------------------------------------------------------


def _drive(engine: Engine) -> int:
    """Play the workers: a genome's accuracy grows with its parameters (45% to 55%) and moves a point with the
    seed. The fourth genome trained is 10 points worse than its size says, but its first seed scores 65%:
    a lucky seed, once there is a front to race it against. Returns that trial's number."""
    genomes: list[int] = []
    while (proposal := engine.propose()) is not None:
        if proposal.run == 0:
            genomes.append(proposal.number)
        lucky = genomes[3] if len(genomes) > 3 else None
        genome = load_genome(proposal.genome)
        seed = proposal.proxy["train"]["seed"]
        true = 0.45 + 0.1 * min(get_space(genome.space).cost(genome).params / 20_000_000, 1.0)
        accuracy = true + 0.01 * ((seed * 7 + proposal.number) % 3 - 1)
        if proposal.number == lucky:
            accuracy = 0.65 if proposal.run == 0 else accuracy - 0.1
        engine.record(proposal.number, trained_result(accuracy))
    engine.finish()
    return lucky


def _planted(tmp_path, replicates: Replicates | None) -> tuple[Engine, int]:
    config = SearchConfig(
        budget=2_500_000_000,  # most proposals fit: little time goes on rejections
        trials=16,
        study="planted",
        storage=f"sqlite:///{tmp_path}/planted.db",
        proxy=TINY,
        seed=4,
        progress=False,
        replicates=replicates,
    )
    engine = Engine(config)
    return engine, _drive(engine)


def test_a_lucky_first_seed_wins_without_replicates_and_loses_with_them(tmp_path):
    alone, lucky = _planted(tmp_path / "alone", None)
    assert pick_trial(alone.study, "best").number == lucky  # one seed each: the lucky genome is the best
    assert len(trained_trials(alone.study)) == 16

    raced, lucky = _planted(tmp_path / "raced", Replicates(seeds=2, max_seeds=4))
    study = raced.study
    chosen = record.trial_record(pick_trial(study, "best"))
    planted = record.trial_record(next(t for t in study.get_trials() if t.number == lucky))
    assert chosen.number != lucky, "by seed means the lucky genome is not the best"
    assert planted.seeds >= 2 and planted.first_seed_accuracy - planted.accuracy > 0.1
    assert planted.accuracy == pytest.approx(statistics.fmean(a for _, a in planted.seed_accuracies))
    # Each training is one of --trials: the same 16 trainings buy fewer genomes.
    runs = sum(record.trial_record(t).seeds for t in trained_trials(study))
    assert runs == 16 > len(trained_trials(study))
    noise = record.noise_record(study)
    replicated = [[a for _, a in r.seed_accuracies] for r in map(record.trial_record, trained_trials(study))]
    assert noise.replicated == sum(len(seeds) > 1 for seeds in replicated) >= MIN_REPLICATED
    assert noise.seed_sd == pytest.approx(seed_noise(replicated)["seed_sd"])


# ---- real tiny searches ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated_search(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicated")
    config = SearchConfig(
        budget=BUDGET,
        trials=6,
        study="seeds",
        storage=f"sqlite:///{folder}/seeds.db",
        proxy=TINY,
        seed=2,
        progress=False,
        replicates=Replicates(seeds=2, max_seeds=3),
    )
    return folder, search_in_process(config).study


def test_a_real_search_trains_candidates_with_several_seeds_and_tells_their_mean(replicated_search):
    _, study = replicated_search
    trained = [record.trial_record(t) for t in trained_trials(study)]
    # Six trainings, and the seeds a candidate still needed when they ran out: at most one more here.
    assert 6 <= sum(r.seeds for r in trained) <= 7
    for recorded in trained:
        if recorded.state != TrialState.COMPLETE:
            continue
        seeds = [seed for seed, _ in recorded.seed_accuracies]
        assert seeds == list(range(TINY.train.seed, TINY.train.seed + len(seeds)))  # the proxy seed, then +1 each
        trial = next(t for t in study.get_trials() if t.number == recorded.number)
        assert trial.values[0] == pytest.approx(statistics.fmean(a for _, a in recorded.seed_accuracies))
    assert any(r.seeds >= 2 for r in trained), "the first trials are candidates: no noise is measured yet"


def test_pareto_shows_the_noise_and_each_front_trial_first_seed_beside_its_mean(replicated_search):
    folder, study = replicated_search
    where = ("--study", "seeds", "--storage", f"sqlite:///{folder}/seeds.db")
    shown = run_gas("pareto", *where)
    assert shown.returncode == 0, shown.stderr
    assert "proxy noise over" in shown.stdout and "1st seed" in shown.stdout
    data = json.loads(run_gas("pareto", *where, "--json").stdout)
    assert data["noise"]["replicated"] == record.noise_record(study).replicated
    for row in data["front"]:
        recorded = record.trial_record(next(t for t in study.get_trials() if t.number == row["trial"]))
        assert row["first_seed"] == recorded.seed_accuracies[0][1] and row["seeds"] == recorded.seeds


def test_a_resume_with_other_seed_settings_is_refused_in_one_line(replicated_search):
    folder, study = replicated_search
    config = SearchConfig(
        budget=BUDGET,
        trials=8,
        study="seeds",
        storage=f"sqlite:///{folder}/seeds.db",
        proxy=TINY,
        seed=2,
        progress=False,
        replicates=Replicates(seeds=3, max_seeds=3),
    )
    with pytest.raises(GasError) as refused:
        Engine(config)  # what opens the study for every driver
    message = str(refused.value)
    assert "\n" not in message and "replicates.seeds 2 (now 3)" in message and "max_seeds" not in message
    same = Engine(dataclasses.replace(config, replicates=Replicates(seeds=2, max_seeds=3)))  # as it was: it opens
    assert len(trained_trials(same.study)) == len(trained_trials(study))


def test_the_command_line_turns_replicates_off_and_refuses_a_cap_without_them(capsys):
    assert main(["search", "--budget", "1G", "--replicates", "1", "--max-seeds", "3"]) == 2
    assert "--max-seeds caps the seeds of replicates" in capsys.readouterr().err
    assert main(["search", "--budget", "1G", "--replicates", "3", "--max-seeds", "2"]) == 2
    assert "--max-seeds (2) must be at least --replicates (3)" in capsys.readouterr().err
    assert main(["search", "--budget", "1G", "--replicates", "0"]) == 2
    assert "--replicates is a number of seeds" in capsys.readouterr().err


# ---- the audit's size ------------------------------------------------------------------------------------


def test_an_audit_sizes_itself_from_the_proxy_noise_or_says_the_study_is_too_small(tmp_path):
    study = new_study(sqlite_url(tmp_path / "audit.db"), "sized")
    for index, genome in enumerate(sampled_genomes(12, seed=5, budget=BUDGET)):
        add_complete(study, genome, 0.5 + index / 100, budget=BUDGET)
    # Before any noise is measured, the prior τ 0.5 asks for 28 trials: more than the study has.
    trials, too_few = sized_trials(study)
    assert trials == 12 and f"needs 28 trials at the expected τ {PRIOR_TAU:.2f}" in too_few
    # A proxy that ranks itself again at τ 0.9 needs only 7 for an interval 0.4 wide, and 6 would not do.
    record.write_noise(study, {**seed_noise([[0.5, 0.51], [0.6, 0.6], [0.7, 0.69]]), "retest_tau": 0.9})
    assert sized_trials(study) == (7, None)
    assert tau_interval_width(0.9, 7) <= MAX_INTERVAL_WIDTH < tau_interval_width(0.9, 6)
