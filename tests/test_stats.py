"""gas.stats: the proxy's seed noise, and the tests between arms, against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_ind, ttest_rel

from gas.stats import paired_p, seed_noise, welch_p


def test_seed_noise_by_hand():
    # Within-genome squares 0.005 + 0.005 + 0 over 3 degrees of freedom; the means .55 .75 .90.
    noise = seed_noise([[0.5, 0.6], [0.7, 0.8], [0.9, 0.9]])
    assert noise["seed_sd"] == pytest.approx(math.sqrt(0.01 / 3))
    assert noise["between_sd"] == pytest.approx(np.std([0.55, 0.75, 0.9], ddof=1))
    mean_square_between = 2 * np.var([0.55, 0.75, 0.9], ddof=1)
    assert noise["icc"] == pytest.approx((mean_square_between - 0.01 / 3) / (mean_square_between + 0.01 / 3))
    assert noise["retest_tau"] == pytest.approx(1.0)
    assert noise["retest_low"] is None  # three genomes are too few for an interval


def test_seed_noise_recovers_a_planted_intraclass_correlation():
    """Genome effects of sd 0.08 and seed noise of sd 0.04: ICC = 0.0064 / (0.0064 + 0.0016) = 0.8."""
    rng = np.random.default_rng(0)
    genomes = rng.normal(0.7, 0.08, size=400)
    seeds = rng.integers(2, 5, size=400)  # 2 to 4 seeds a genome: the unbalanced case
    noise = seed_noise([mean + rng.normal(0, 0.04, size=count) for mean, count in zip(genomes, seeds, strict=True)])
    assert noise["seed_sd"] == pytest.approx(0.04, rel=0.05)
    assert noise["icc"] == pytest.approx(0.8, abs=0.03)
    assert noise["retest_low"] < noise["retest_tau"] < noise["retest_high"]
    # Seed noise alone: no genome effect, ICC near 0, and the seeds' rankings unrelated.
    pure = seed_noise([0.7 + rng.normal(0, 0.04, size=3) for _ in range(400)])
    assert abs(pure["icc"]) < 0.06 and pure["retest_low"] < 0 < pure["retest_high"]


def test_seed_noise_without_replicates_measures_only_the_spread_between_genomes():
    noise = seed_noise([[0.5], [0.7], [0.6, 0.62]])
    assert noise["replicated"] == 1 and noise["seed_sd"] == pytest.approx(math.sqrt(0.0002))
    assert noise["icc"] is None and noise["retest_tau"] is None
    assert seed_noise([[0.5], [0.7]])["seed_sd"] is None


def test_welch_and_paired_p_match_scipy_and_refuse_what_they_cannot_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.02, 5), rng.normal(0.78, 0.05, 4)
    assert welch_p(a, b) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    c = a[:4] + rng.normal(0.01, 0.01, 4)
    assert paired_p(a[:4], c) == pytest.approx(ttest_rel(a[:4], c).pvalue)
    assert welch_p([0.8], b) is None and welch_p([0.8, 0.8], [0.7, 0.7]) is None
    assert paired_p([0.8, 0.9], [0.7, 0.8]) is None  # constant gaps: no spread to test against
    with pytest.raises(ValueError):
        paired_p([0.1, 0.2], [0.1])
