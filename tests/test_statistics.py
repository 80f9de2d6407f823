"""The suite's statistics (rlhf_pipeline.statistics): the t tables, Holm, per-prompt means, the
interval pooling seeds and prompts (against a hand computation), and by simulation: the
interval does not shrink with seeds when prompts are the uncertainty, differences are paired,
a true null is rejected at most at the nominal rate where a seeds-and-prompts bootstrap is not,
and a real gain is found."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from rlhf_pipeline import statistics
from rlhf_pipeline.statistics import (
    difference,
    estimate,
    holm,
    per_prompt,
    t_quantile,
    t_two_sided,
)


def test_t_quantile_matches_the_tables():
    # scipy.stats.t.ppf(0.975, dof) and t.ppf(0.995, 4)
    assert t_quantile(0.95, 1) == pytest.approx(12.706204736174705, rel=1e-9)
    assert t_quantile(0.95, 2) == pytest.approx(4.302652729911275, rel=1e-9)
    assert t_quantile(0.95, 9) == pytest.approx(2.2621571627409915, rel=1e-9)
    assert t_quantile(0.95, 30) == pytest.approx(2.0422724563012373, rel=1e-9)
    assert t_quantile(0.99, 4) == pytest.approx(4.604094871415897, rel=1e-9)
    assert 1 - t_two_sided(2.0, 10) == pytest.approx(0.07338803477074459, rel=1e-9)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def test_docstring_examples_hold():
    results = doctest.testmod(statistics)
    assert results.attempted >= 5 and results.failed == 0


def test_holm_adjusts_in_step_down_order():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_per_prompt_means_follow_the_suites_order():
    # 3 prompts answered twice: [p0, p1, p2, p0, p1, p2]; None leaves its answer out
    means = per_prompt([1.0, 0.0, None, 0.0, 0.0, None], 3)
    assert means[:2].tolist() == [0.5, 0.0] and math.isnan(means[2])
    with pytest.raises(ValueError, match="whole number of answers"):
        per_prompt([1.0, 0.0, 1.0], 2)


def test_estimate_is_the_two_part_t_interval_clipped_to_the_values():
    y = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=float)
    seed_part = y.mean(1).var(ddof=1) / 3
    prompt_part = y.mean(0).var(ddof=1) / 4
    variance = seed_part + prompt_part
    dof = int(variance**2 / (seed_part**2 / 2 + prompt_part**2 / 3))
    assert dof == 4
    half = t_quantile(0.95, dof) * math.sqrt(variance)
    found = estimate(y)
    assert (found.mean, found.seeds, found.prompts) == (0.75, 3, 4)
    assert found.low == pytest.approx(0.75 - half) and 0.75 + half > 1.0
    assert found.high == 1.0  # clipped: a rate's interval stays in [0, 1]
    # no spread, or a single value: no interval (0 of 20 right says little about the rate)
    assert math.isnan(estimate(np.zeros((1, 20))).low)
    assert math.isnan(estimate([[0.3]]).high) and estimate([[0.3]]).mean == 0.3
    with pytest.raises(ValueError, match="seeds, prompts"):
        estimate(np.zeros(5))


def test_prompts_shared_by_every_seed_do_not_average_away():
    """Crossed, not nested: when the prompts are all the uncertainty (every seed scores each
    prompt the same), more seeds must not narrow the interval."""
    prompt_effect = np.random.default_rng(0).normal(size=64)
    one = estimate(prompt_effect[None, :])
    eight = estimate(np.tile(prompt_effect, (8, 1)))
    assert eight.high - eight.low == pytest.approx(one.high - one.low, rel=0.05)


def test_differences_are_paired_on_the_prompts():
    rng = np.random.default_rng(1)
    hardness = rng.normal(0, 1, 64)  # per prompt, shared by both agents
    a = hardness + rng.normal(0, 0.05, (3, 64))
    b = hardness + 0.1 + rng.normal(0, 0.05, (3, 64))
    alone = estimate(a)
    found = difference(b, a)
    assert alone.high - alone.low > 0.4  # each agent alone: the prompts' spread
    assert found.low > 0.05 and found.high < 0.15 and found.p_value < 0.001
    swapped = difference(a, b)
    assert swapped.mean == pytest.approx(-found.mean) and swapped.p_value == found.p_value
    with pytest.raises(ValueError, match="same held-out prompts"):
        difference(a, b[:, :32])


def _bootstrap_p(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int = 400):
    """A seeds-and-prompts bootstrap (seeds per agent, prompts shared) of ``mean(a - b)``: its
    two-sided percentile p-value, as the module docstring's comparison."""
    seeds, prompts = a.shape
    counts = rng.multinomial(prompts, np.full(prompts, 1 / prompts), size=draws)  # shared
    replicates = 0.0
    for sign, values in ((1, a), (-1, b)):
        seed_means = counts @ values.T / prompts  # (draws, seeds) on the drawn prompts
        picked = rng.integers(0, seeds, (draws, seeds))  # each agent's seeds on their own
        replicates = replicates + sign * np.take_along_axis(seed_means, picked, 1).mean(1)
    below = (np.count_nonzero(replicates <= 0) + 1) / (draws + 1)
    above = (np.count_nonzero(replicates >= 0) + 1) / (draws + 1)
    return min(1.0, 2 * min(below, above))


def test_a_true_null_is_rejected_at_most_at_the_nominal_rate():
    """Two agents from the same distribution, 3 seeds whose effect dominates, 64 prompts: the
    t test rejects at most ~5%; a bootstrap over seeds and prompts rejects far more (the
    module docstring's reason for not using one)."""
    rng = np.random.default_rng(2)
    trials, ours, bootstrap = 300, 0, 0
    for _ in range(trials):
        hardness = rng.normal(0, 1, 64)
        a, b = (
            hardness + rng.normal(0, 0.5, (3, 64)) + rng.normal(0, 0.5, (3, 1)) for _ in range(2)
        )
        ours += difference(a, b).p_value < 0.05
        bootstrap += _bootstrap_p(a, b, rng) < 0.05
    assert ours / trials <= 0.06
    assert bootstrap / trials >= 0.12


def test_a_real_gain_is_found_on_rates():
    """Exact match on 64 prompts x 2 answers x 3 seeds, +0.15 on every prompt: the paired
    test finds it at least 80% of the time, and every interval stays within [-1, 1]."""
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(200):
        rate = rng.uniform(0, 0.85, 64)
        before = rng.binomial(2, rate, (3, 64)) / 2
        after = rng.binomial(2, rate + 0.15, (3, 64)) / 2
        gain = difference(after, before)
        assert -1 <= gain.low <= gain.mean <= gain.high <= 1
        found += gain.p_value < 0.05 and gain.mean > 0
    assert found / 200 >= 0.8
