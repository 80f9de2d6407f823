"""Synthetic preferences: sampling responses and labelling pairs with an oracle."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_env.data.synthetic import label_pairs, sample_responses


def score_by_length(prompts, responses):
    return [float(len(r)) for r in responses]


def test_deterministic_labels_prefer_the_higher_score():
    pairs = label_pairs(["p", "q"], [["a", "abc", "ab"], ["xy", "x"]], score_by_length)
    assert len(pairs) == 3 + 1
    assert all(len(p.chosen) > len(p.rejected) for p in pairs)
    assert {p.prompt for p in pairs} == {"p", "q"}


def test_min_gap_and_identical_responses_are_skipped():
    assert label_pairs(["p"], [["a", "b"]], score_by_length) == []  # an exact tie
    pairs = label_pairs(["p"], [["a", "a", "ab", "abcd"]], score_by_length, min_gap=1.5)
    assert {(p.chosen, p.rejected) for p in pairs} == {("abcd", "a"), ("abcd", "ab")}


def test_bradley_terry_noise_follows_the_sigmoid():
    """With gap 1 and k = 1, the better response wins with probability sigmoid(1) = 0.731."""
    prompts = [f"p{i}" for i in range(4000)]
    responses = [["a", "ab"]] * 4000
    pairs = label_pairs(prompts, responses, score_by_length, noise_k=1.0, seed=0)
    wins = np.mean([p.chosen == "ab" for p in pairs])
    assert wins == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.025)  # ~3.5 standard errors
    sharp = label_pairs(prompts[:200], responses[:200], score_by_length, noise_k=50.0, seed=0)
    assert all(p.chosen == "ab" for p in sharp)


def test_sample_responses_shapes_and_seed(tokenizer, gpt2):
    prompts = ["This movie was", "I think", "One of the best"]
    first = sample_responses(gpt2, tokenizer, prompts, 3, max_new_tokens=5, batch_size=2,
                             seed=1, progress=False)  # fmt: skip
    again = sample_responses(gpt2, tokenizer, prompts, 3, max_new_tokens=5, batch_size=2,
                             seed=1, progress=False)  # fmt: skip
    assert [len(group) for group in first] == [3, 3, 3]
    assert first == again
    assert tokenizer.padding_side == "right"  # restored
