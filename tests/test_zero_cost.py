"""Zero-cost scores: finite for real genomes, different across genomes, and the proxy's zero-cost mode."""

from __future__ import annotations

import math

import pytest
import torch

from gas.evaluate.datasets import SHAPES_CLASSES, load_dataset
from gas.evaluate.proxy import ProxyConfig, build_proxy_model, evaluate
from gas.evaluate.zero_cost import SCORES, naswot, normalised_primary, zero_cost_scores
from gas.search.sampling import sample_genomes
from gas.space import load_genome

RESOLUTION = 32


@pytest.fixture(scope="module")
def batch():
    splits = load_dataset("shapes", RESOLUTION, train_size=16, val_size=8)
    return splits.train_images, splits.train_labels


def genomes():
    sampled = [genome for genome, _ in sample_genomes("turbovit", 3, seed=3, budget=2_500_000_000)]
    return [load_genome("turbovit"), *sampled]


def build(genome):
    return build_proxy_model(genome, RESOLUTION, num_classes=SHAPES_CLASSES, seed=0)


def test_scores_are_finite_and_differ_across_genomes(batch):
    images, labels = batch
    table = [zero_cost_scores(build(genome), images, labels) for genome in genomes()]
    for scores in table:
        assert set(scores) == set(SCORES)
        assert all(math.isfinite(value) for value in scores.values()), scores
    for name in SCORES:
        values = [scores[name] for scores in table]
        assert len(set(values)) == len(values), f"{name} does not tell genomes apart: {values}"


def test_scores_leave_the_model_untouched(batch):
    images, labels = batch
    model = build(load_genome("turbovit"))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    zero_cost_scores(model, images, labels)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_naswot_sees_identical_images_as_indistinguishable(batch):
    images, _ = batch
    model = build(load_genome("turbovit"))
    distinct = naswot(model, images[:4])
    repeated = naswot(model, images[:1].repeat(4, 1, 1, 1))
    assert math.isfinite(distinct)
    assert repeated == -math.inf or repeated < distinct - 10


def test_normalised_primary_is_monotone_and_bounded():
    """The per-image log-determinant over its ceiling, ln(2**32): proportional to the score, clipped to [0, 1]."""
    low = normalised_primary({"naswot": 100.0}, 16)
    assert low == pytest.approx(100.0 / 16 / (32 * math.log(2)))
    assert normalised_primary({"naswot": 200.0}, 16) == pytest.approx(2 * low)
    assert normalised_primary({"naswot": 200.0}, 32) == pytest.approx(low)  # the same score per image
    assert normalised_primary({"naswot": 16 * 32 * math.log(2) * 1.5}, 16) == 1.0
    assert normalised_primary({"naswot": -5.0}, 16) == 0.0
    assert normalised_primary({"naswot": -math.inf}, 16) == 0.0


def test_zero_cost_evaluator_reports_once(batch):
    reports = []
    config = ProxyConfig(evaluator="zero-cost", resolution=RESOLUTION, train_size=32, val_size=8, zero_cost_batch=16)
    small = sample_genomes("turbovit", 1, seed=0, budget=600_000_000)[0][0]
    result = evaluate(small, config, report=reports.append)
    assert reports == [{"epoch": 0.0, "accuracy": result.accuracy}] and result.accuracy_history == (result.accuracy,)
    assert result.epochs == 0 and set(result.zero_cost) == set(SCORES)
    assert result.accuracy == normalised_primary(result.zero_cost, 16)
