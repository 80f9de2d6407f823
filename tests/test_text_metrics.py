"""Text metrics: distinct-n and repetition on hand examples, perplexity against a hand forward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhf_env.text_metrics import (
    distinct_n,
    distinct_n_standard_error,
    ngrams,
    repetition,
    repetition_rate,
    response_perplexity,
    standard_error,
)

PROMPTS = ["This movie was", "I think the acting", "The plot"]
RESPONSES = [" a wonderful surprise.", " was terrible and slow", " made no sense at all, sadly."]


def test_distinct_n_counts_pooled_ngrams_by_hand():
    responses = ["the film was good", "the film was long"]
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert distinct_n(responses, 1) == pytest.approx(5 / 8)  # the, film, was, good, long
    assert distinct_n(responses, 2) == pytest.approx(4 / 6)  # "the film", "film was" twice
    assert distinct_n(["great great great great"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["a b", "c d"], 2) == 1.0
    # Custom tokenisation: characters.
    assert distinct_n(["aab"], 1, tokenize=list) == pytest.approx(2 / 3)


def test_distinct_n_without_ngrams_is_zero_and_n_must_be_positive():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "  "], 1) == 0.0
    assert distinct_n(["one", "two"], 2) == 0.0  # no response has two words
    with pytest.raises(ValueError, match="n must be a positive integer"):
        distinct_n(["a b"], 0)


def test_distinct_n_jackknife_matches_recomputing_without_each_response():
    responses = ["the film was good", "the film was long", "a long film", "good good"]
    left_out = np.array(
        [distinct_n(responses[:i] + responses[i + 1 :], 1) for i in range(len(responses))]
    )
    count = len(responses)
    expected = math.sqrt((count - 1) / count * ((left_out - left_out.mean()) ** 2).sum())
    assert distinct_n_standard_error(responses, 1) == pytest.approx(expected)
    assert distinct_n_standard_error(responses[:1], 1) == 0.0


def test_repetition_is_zero_for_varied_text_and_high_for_repeated_words():
    varied = [
        "The acting was sharp and the story kept me guessing until the end.",
        "A dull film that wastes a talented cast on a thin script.",
    ]
    assert repetition_rate(varied) == 0.0
    assert repetition("great great great great great great") == pytest.approx(3 / 4)
    assert repetition_rate(["great " * 20]) == pytest.approx(17 / 18)  # (L - 3) / (L - 2)
    assert repetition_rate(["great great great great"], n=1) == pytest.approx(3 / 4)
    # A response with fewer than n words has no n-gram: it is left out of the mean.
    assert math.isnan(repetition("too short"))
    assert repetition_rate(["too short", "great " * 20]) == pytest.approx(17 / 18)
    assert repetition_rate(["too short"]) == 0.0


def test_standard_error_leaves_out_nans():
    assert standard_error([1.0, 3.0, float("nan")]) == pytest.approx(
        np.std([1, 3], ddof=1) / 2**0.5
    )
    assert standard_error([2.0]) == 0.0


def _hand_nll(model, tokenizer, prompt: str, response: str) -> tuple[float, int]:
    """The summed NLL of the response tokens from one full forward over prompt + response."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0]  # (T, V)
    total = 0.0
    for position in range(len(prompt_ids), ids.shape[1]):
        total -= float(logprobs[position - 1, ids[0, position]])
    return total, len(response_ids)


def test_perplexity_equals_a_hand_computation(gpt2, tokenizer):
    result = response_perplexity(gpt2, tokenizer, PROMPTS, RESPONSES, batch_size=2)
    hand = [_hand_nll(gpt2, tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    nll = np.array([total for total, _ in hand])
    tokens = np.array([count for _, count in hand])
    np.testing.assert_allclose(result.nll, nll, rtol=1e-5)
    np.testing.assert_array_equal(result.num_tokens, tokens)
    np.testing.assert_allclose(result.per_response, np.exp(nll / tokens), rtol=1e-5)
    assert result.corpus == pytest.approx(math.exp(nll.sum() / tokens.sum()), rel=1e-5)
    assert result.num_empty == 0 and result.standard_error > 0


def test_perplexity_does_not_depend_on_batching_or_the_padding_side(llama, tokenizer):
    together = response_perplexity(llama, tokenizer, PROMPTS[:2], RESPONSES[:2], batch_size=2)
    alone = [
        response_perplexity(llama, tokenizer, [p], [r], batch_size=1)
        for p, r in zip(PROMPTS[:2], RESPONSES[:2], strict=True)
    ]
    np.testing.assert_allclose(together.nll, [a.nll[0] for a in alone], rtol=1e-5)
    np.testing.assert_allclose(together.per_response, [a.per_response[0] for a in alone], rtol=1e-5)
    padding_side = tokenizer.padding_side
    try:
        tokenizer.padding_side = "left" if padding_side == "right" else "right"
        flipped = response_perplexity(llama, tokenizer, PROMPTS[:2], RESPONSES[:2], batch_size=2)
    finally:
        tokenizer.padding_side = padding_side
    np.testing.assert_allclose(flipped.nll, together.nll, rtol=1e-6)


def test_empty_responses_are_left_out_and_counted(gpt2, tokenizer):
    result = response_perplexity(gpt2, tokenizer, PROMPTS, [" a fine film", "", " dull"])
    assert result.num_empty == 1 and result.num_tokens[1] == 0
    assert math.isnan(result.per_response[1])
    scored = response_perplexity(
        gpt2, tokenizer, [PROMPTS[0], PROMPTS[2]], [" a fine film", " dull"]
    )
    assert result.corpus == pytest.approx(scored.corpus, rel=1e-6)
    everything_empty = response_perplexity(gpt2, tokenizer, PROMPTS[:1], [""])
    assert math.isnan(everything_empty.corpus) and everything_empty.standard_error == 0.0


def test_an_empty_prompt_is_conditioned_on_the_start_token(gpt2, tokenizer):
    result = response_perplexity(gpt2, tokenizer, [""], [" a fine film"])
    nll, count = _hand_nll(gpt2, tokenizer, tokenizer.eos_token, " a fine film")
    assert result.num_tokens[0] == count
    assert result.nll[0] == pytest.approx(nll, rel=1e-5)


def test_perplexity_restores_training_mode_and_checks_its_arguments(tokenizer):
    from rlhf_env.models import build_tiny_gpt2

    model = build_tiny_gpt2(tokenizer, seed=3).train()
    response_perplexity(model, tokenizer, PROMPTS[:1], RESPONSES[:1])
    assert model.training
    with pytest.raises(ValueError, match="one each"):
        response_perplexity(model, tokenizer, PROMPTS, RESPONSES[:1])
    with pytest.raises(ValueError, match="does not fit in max_length=4"):
        response_perplexity(model, tokenizer, PROMPTS[:1], RESPONSES[:1], max_length=4)
    cut = response_perplexity(model, tokenizer, ["a b c d e f g h"], [" ok"], max_length=4)
    assert cut.num_tokens[0] == len(tokenizer(" ok", add_special_tokens=False)["input_ids"])
