"""Fixed jobs through the drivers: the one path an audit, replicates and `gas compare` train by."""

from __future__ import annotations

import pytest

from gas.evaluate.proxy import ProxyConfig, ProxyResult
from gas.search.jobs import FixedJobs, Proposal
from gas.search.local import run_in_process
from gas.search.ray_tune import run_on_ray
from gas.space import get_space

TINY = ProxyConfig(dataset="digits", resolution=32, train_size=32, val_size=32, zero_cost_batch=0).with_overrides(
    epochs=1, device="cpu"
)


def jobs() -> list[Proposal]:
    """Two seeds of a reference, and a genome the faulty space breaks in its forward pass."""
    turbovit = get_space("turbovit").references["turbovit"].to_dict()
    # The faulty space's models raise in forward when their stem kernel is 3.
    stem = {**turbovit["stem"], "kernel": 3, "padding": 1}
    faulty = {**turbovit, "space": "tests.faulty_space:fault=raise", "stem": stem}
    seeds = [Proposal(10 + seed, turbovit, TINY.with_overrides(seed=seed).to_dict()) for seed in (0, 1)]
    return [*seeds, Proposal(3, faulty, TINY.to_dict())]


def check(outcomes: list, heard: list) -> None:
    first, second, broken = outcomes
    assert isinstance(first, ProxyResult) and isinstance(second, ProxyResult)
    assert first.accuracy_history != second.accuracy_history or first.loss != second.loss  # seeds differ
    assert broken == "RuntimeError: injected fault in forward"
    assert sorted(number for number, _ in heard) == [3, 10, 11]


def test_fixed_jobs_in_process_come_back_in_order_with_their_errors():
    heard = []
    outcomes = run_in_process(jobs(), report=lambda proposal, outcome: heard.append((proposal.number, outcome)))
    check(outcomes, heard)
    # The same job again gives the same result: a proxy result depends only on the genome and settings.
    again = run_in_process(jobs()[:1])[0]
    assert again.accuracy_history == outcomes[0].accuracy_history


def test_fixed_jobs_on_ray_train_as_search_trials_do(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import the faulty space from the tests
    heard = []
    outcomes = run_on_ray(jobs(), cpus_per_trial=1, report=lambda proposal, outcome: heard.append((proposal.number, 0)))
    check(outcomes, heard)
    assert outcomes[0].accuracy_history == run_in_process(jobs()[:1])[0].accuracy_history


def test_jobs_need_distinct_numbers():
    job = jobs()[0]
    with pytest.raises(ValueError, match="distinct"):
        FixedJobs([job, job])
