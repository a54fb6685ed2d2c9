"""The fidelity audit: Kendall's tau and its interval, which trials are retrained, and real audits of a tiny study.

The studies here are real: a tiny in-process search (zero-cost scores, so it takes seconds), audited by
training its trials for real, in this process and on a local Ray cluster.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from gas import record
from gas.cli import main
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig, evaluate
from gas.search import SearchConfig, search_in_process
from gas.search.audit import (
    AuditConfig,
    long_schedule,
    run_audit,
    select_trials,
)
from gas.search.local import run_in_process
from gas.search.ray_tune import run_on_ray
from gas.space import get_space, load_genome
from gas.stats import kendall_tau, tau_interval, tau_interval_width
from gas.storage import load_study
from gas.study import front
from tests.studies import add_complete, mixed_study, new_study, sampled_genomes, sqlite_url

# The audit's own sizes: long runs at the search's 32px (the 64px default is checked on paper), two epochs.
TINY_AUDIT = AuditConfig(trials=4, epoch_factor=2, resolution=32)
# The audit attribute's layout, as every version since the audit has written it.
STORED_AUDIT_KEYS = ("settings", "pairs", "front", "failed", "tau", "interval", "n", "front_order_held", "seconds")
STORED_AUDIT_SETTINGS = ("epochs", "resolution", "evaluator", "epoch_factor", "proxy")


# ---- Kendall's tau and its interval ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3], [1, 3, 2], 1 / 3),  # 2 concordant, 1 discordant of 3 pairs
        ([1, 1, 2], [1, 2, 3], 2 / math.sqrt(2 * 3)),  # a tie in x: 2 concordant over sqrt(2 untied x 3 untied)
        ([1, 1, 2, 3], [1, 1, 3, 2], 3 / 5),  # a pair tied in both: 4 - 1 over sqrt(5 x 5)
        ([1, 1, 2, 2], [1, 2, 1, 2], 0.0),  # ties on both sides, one concordant and one discordant pair
    ],
)
def test_kendall_tau_by_hand(x, y, expected):
    assert kendall_tau(x, y) == pytest.approx(expected)


def test_kendall_tau_is_undefined_without_a_ranking():
    assert math.isnan(kendall_tau([0.5, 0.5, 0.5], [1, 2, 3]))
    with pytest.raises(ValueError):
        kendall_tau([1, 2, 3], [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    for n in (3, 7, 30, 100):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
        # Few distinct values: many ties on both sides, where tau-b's correction matters.
        x, y = rng.integers(0, 4, n), rng.integers(0, 3, n)
        assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12, nan_ok=True)


def test_tau_interval_covers_the_true_tau_about_as_often_as_it_claims():
    """Draws from a bivariate normal of known tau (2/pi asin rho): the 95% interval holds it in ~95% of samples."""
    rng = np.random.default_rng(7)
    for n, rho in ((8, 0.6), (30, 0.8)):
        true_tau = 2 / math.pi * math.asin(rho)
        covered = 0
        for _ in range(400):
            x = rng.normal(size=n)
            y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
            low, high = tau_interval(x, y)
            assert low <= kendall_tau(x, y) <= high
            covered += low <= true_tau <= high
        assert 0.9 <= covered / 400 <= 0.995, (n, covered)


def test_tau_interval_is_honest_at_small_n():
    # Four trials in the same order say little: no interval, where a bootstrap claimed [1, 1].
    assert all(math.isnan(bound) for bound in tau_interval([1, 2, 3, 4], [2, 3, 5, 8]))
    low, high = tau_interval(range(6), [2, 3, 5, 8, 13, 21])
    assert high == 1.0 and low < 0.5
    assert all(math.isnan(bound) for bound in tau_interval([1, 1, 1, 1, 1, 1], range(6)))
    assert tau_interval_width(0.6, 30) < tau_interval_width(0.6, 10) < tau_interval_width(0.6, 6)


# ---- which trials are retrained ----------------------------------------------------------------------


def test_select_trials_takes_the_front_then_spreads_over_accuracy(tmp_path):
    _, study, numbers = mixed_study(tmp_path / "study.db")
    # Eight complete trials, cheapest first, at 0.31 0.45 0.40 0.52 0.47 0.61 0.58 0.66: the front is the
    # ones no cheaper trial beats, the rest ranked by accuracy are 0.40 < 0.47 < 0.58.
    by_rank = numbers["complete"]
    on_front = [by_rank[rank] for rank in (0, 1, 3, 5, 7)]
    rest = [by_rank[rank] for rank in (2, 4, 6)]
    # A repeat of the best genome carries its values, and so sits on Optuna's front too; it is not retrained.
    best = next(t for t in study.get_trials() if t.number == on_front[-1])
    genome = load_genome(best.user_attrs[record.TrialKey.GENOME])
    repeat = study.ask()
    record.write_proposal(repeat, genome, get_space(genome.space).cost(genome), None, {})
    record.write_duplicate(study, repeat, best)
    assert repeat.number in {t.number for t in front(study)}

    def numbers_of(n: int) -> list[int]:
        return [trial.number for trial in select_trials(study, n)]

    assert numbers_of(5) == on_front
    assert numbers_of(6) == [*on_front, rest[0]]  # one place left: the least accurate, to widen the range
    assert numbers_of(7) == [*on_front, rest[0], rest[2]]  # both ends of the rest
    assert numbers_of(8) == [*on_front, *rest]
    assert numbers_of(20) == [*on_front, *rest]  # never the repeat, failed or infeasible trials
    assert numbers_of(3) == [on_front[0], on_front[2], on_front[4]]  # a larger front thinned evenly, ends kept


# ---- real audits -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A 5-trial search on digits, scored at initialisation: the kind of study whose ranking most needs an audit."""
    folder = tmp_path_factory.mktemp("audit")
    storage = sqlite_url(folder / "gas.db")
    proxy = ProxyConfig(dataset="digits", resolution=32, evaluator="zero-cost", train_size=64, val_size=32)
    config = SearchConfig(
        budget=1_000_000_000,
        study="tiny",
        storage=storage,
        trials=5,
        proxy=proxy.with_overrides(epochs=1),
        progress=False,
    )
    outcome = search_in_process(config)
    assert outcome.trained == 5
    return outcome.study, storage


def test_long_schedule_trains_longer_at_twice_the_resolution_if_the_space_allows(tiny_study):
    study, _ = tiny_study
    long = long_schedule(study, AuditConfig())
    assert (long.evaluator, long.train.epochs, long.resolution) == ("train", 3, 64)
    assert (long.dataset, long.train_size, long.val_size, long.train.seed) == ("digits", 64, 32, 0)
    assert long_schedule(study, AuditConfig(epoch_factor=5, resolution=32)).train.epochs == 5
    # 48px breaks the turbovit space's rules (the grid must halve evenly at every Q-pool).
    with pytest.raises(GasError, match="48px does not fit"):
        long_schedule(study, AuditConfig(resolution=48))


def test_audit_of_a_tiny_search_is_recorded_and_shown_by_pareto(tiny_study, capsys):
    study, storage = tiny_study
    audit = run_audit(study, TINY_AUDIT, run_in_process)

    assert audit.n == 4 and not audit.failed and len(audit.pairs) == 4
    assert (audit.epochs, audit.resolution, audit.evaluator) == (2, 32, "train")
    assert audit.search_setting("evaluator") == "zero-cost"
    trials = {t.number: t for t in study.get_trials()}
    for number, pair in audit.pairs.items():
        assert pair.search == trials[number].values[0]  # the search's result stays as it was
    first, pair = next(iter(audit.pairs.items()))  # a long run is the trial trained on the long schedule
    assert pair.long == evaluate(record.trial_genome(trials[first]), long_schedule(study, TINY_AUDIT)).accuracy
    search = [pair.search for pair in audit.pairs.values()]
    retrained = [pair.long for pair in audit.pairs.values()]
    assert audit.tau == pytest.approx(kendall_tau(search, retrained))
    assert audit.tau == pytest.approx(kendalltau(search, retrained).statistic)
    assert audit.interval is None  # four trials are too few for an honest interval
    assert audit.front == tuple(t.number for t in front(study) if t.number in audit.pairs)
    assert audit.front_order_held in ((None,) if len(audit.front) < 2 else (True, False))
    assert audit.seconds > 0
    reloaded = load_study("tiny", storage)
    assert record.audit_record(reloaded) == audit
    # As stored: JSON, so trial numbers are strings, in the layout every earlier version wrote.
    stored = reloaded.user_attrs[record.StudyKey.AUDIT]
    assert list(stored) == [*STORED_AUDIT_KEYS] and list(stored["settings"]) == [*STORED_AUDIT_SETTINGS]
    assert stored["pairs"] == {str(n): {"search": p.search, "long": p.long} for n, p in audit.pairs.items()}
    assert stored["front"] == [str(number) for number in audit.front] and stored["tau"] == audit.tau
    print(f"tiny audit: tau {audit.tau:.3f} {audit.interval} front {audit.front} pairs {audit.pairs}")

    capsys.readouterr()
    assert main(["pareto", "--study", "tiny", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert f"audit: Kendall τ {audit.tau:.2f} (no interval under 6 trials), n 4" in shown
    assert main(["pareto", "--study", "tiny", "--storage", storage, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["audit"] == stored


def test_gas_audit_command_in_process(tiny_study, capsys):
    _, storage = tiny_study
    args = ["audit", "--study", "tiny", "--storage", storage, "--in-process", "--trials", "3"]
    assert main([*args, "--epoch-factor", "1", "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    audit = record.audit_record(load_study("tiny", storage))
    assert audit.n == 3 and audit.epochs == 1
    assert "retraining trials" in out and "fidelity audit recorded" in out
    tau = "undefined" if audit.tau is None else f"{audit.tau:.2f}"
    assert f"Kendall τ {tau}" in out and "n 3" in out
    for number in audit.pairs:
        assert any(line.split()[:1] == [str(number)] for line in out.splitlines()), f"trial {number} not in the table"


def test_gas_audit_refuses_bad_input_in_one_line(tiny_study, tmp_path, capsys):
    _, storage = tiny_study
    few = sqlite_url(tmp_path / "few.db")
    study = new_study(few, "few")
    for genome, accuracy in zip(sampled_genomes(2, seed=5, budget=2_000_000_000), (0.3, 0.4), strict=True):
        add_complete(study, genome, accuracy)
    cases = [
        (["--study", "tiny", "--storage", storage, "--trials", "2"], "at least 3 trials"),
        (["--study", "nope", "--storage", storage], "no study 'nope'"),
        (["--study", "few", "--storage", few], "has 2 fully trained trials; an audit needs at least 3"),
        (["--study", "tiny", "--storage", storage, "--resolution", "48"], "48px does not fit"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["audit", *args, "--in-process"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_audit_on_ray(tiny_study, tmp_path, monkeypatch):
    study, storage = tiny_study
    monkeypatch.chdir(tmp_path)  # Ray Tune writes runs/ray here
    config = AuditConfig(trials=3, epoch_factor=1, resolution=32)
    heard: dict[int, float] = {}  # what the driver heard as each trial ended

    def report(proposal, outcome):
        heard[proposal.number] = outcome.accuracy

    audit = run_audit(study, config, functools.partial(run_on_ray, cpus_per_trial=1, report=report, name="audit"))
    assert audit.n == 3 and not audit.failed
    assert heard == {number: pair.long for number, pair in audit.pairs.items()}
    assert list(audit.pairs) == [t.number for t in select_trials(study, 3)]
    # A Ray worker trains as this process does with its one thread: the same figure.
    first, pair = next(iter(audit.pairs.items()))
    trial = next(t for t in study.get_trials() if t.number == first)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert pair.long == evaluate(record.trial_genome(trial), long_schedule(study, config)).accuracy
    finally:
        torch.set_num_threads(threads)
    assert record.audit_record(load_study("tiny", storage)) == audit
    # The long runs went through the search's own Ray path: one run folder, a trial folder per study trial.
    assert sorted(path.name for path in (tmp_path / "runs" / "ray").glob("audit-*/trial_*")) == sorted(
        f"trial_{number}" for number in audit.pairs
    )
