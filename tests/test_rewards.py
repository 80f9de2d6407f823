"""The reward-function interface, its validation, and the sequence-classifier reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_env.models import build_tiny_tokenizer
from rlhf_env.rewards import RewardError, SequenceClassifierReward, score_responses


def test_score_responses_accepts_lists_arrays_and_tensors():
    prompts, responses = ["a", "b"], ["x", "yy"]
    for kind in (list, np.array, torch.tensor):
        scores = score_responses(lambda p, r, kind=kind: kind([1.0, 2.0]), prompts, responses)
        np.testing.assert_array_equal(scores, [1.0, 2.0])
    column = score_responses(lambda p, r: torch.tensor([[1.0], [2.0]]), prompts, responses)
    np.testing.assert_array_equal(column, [1.0, 2.0])


def test_score_responses_names_the_bad_row():
    with pytest.raises(RewardError, match=r"sub-env 1 \(prompt 'b'"):
        score_responses(
            lambda p, r: [0.0, float("nan")],
            ["a", "b"],
            ["x", "y"],
            labels=["sub-env 0", "sub-env 1"],
        )
    with pytest.raises(RewardError, match="shape"):
        score_responses(lambda p, r: [0.0], ["a", "b"], ["x", "y"])


def _classifier(num_labels: int):
    tokenizer = build_tiny_tokenizer()
    config = GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config).eval(), tokenizer


def test_sequence_classifier_scalar_head_returns_the_logit():
    model, tokenizer = _classifier(num_labels=1)
    reward = SequenceClassifierReward(model, tokenizer, batch_size=2)
    prompts, responses = ["The film", "I think", "A"], [" was great", " not", " dull story"]
    scores = reward(prompts, responses)
    for prompt, response, score in zip(prompts, responses, scores, strict=True):
        ids = torch.tensor([tokenizer(prompt + response)["input_ids"]])
        with torch.no_grad():
            expected = model(ids).logits[0, 0].item()
        assert score == pytest.approx(expected, abs=1e-5)


def test_sequence_classifier_label_probability():
    model, tokenizer = _classifier(num_labels=2)
    model.config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    reward = SequenceClassifierReward(model, tokenizer, label="POSITIVE", include_prompt=False)
    (score,) = reward(["ignored prompt"], [" a great film"])
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(" a great film")["input_ids"]])).logits
    assert score == pytest.approx(logits.softmax(-1)[0, 1].item(), abs=1e-6)
    with pytest.raises(ValueError, match="pass label="):
        SequenceClassifierReward(model, tokenizer)
    with pytest.raises(ValueError, match="not in the model's labels"):
        SequenceClassifierReward(model, tokenizer, label="NEUTRAL")


def test_sequence_classifier_plugs_into_the_env():
    from rlhf_env import TextGenerationEnv
    from rlhf_env.models import build_tiny_gpt2

    model, tokenizer = _classifier(num_labels=1)
    env = TextGenerationEnv(
        policy=build_tiny_gpt2(tokenizer),
        tokenizer=tokenizer,
        reward_fn=SequenceClassifierReward(model, tokenizer),
        prompts=["The film"],
        max_new_tokens=2,
    )
    env.reset(seed=0)
    env.step(40)
    info = env.step(41)[-1]
    assert info["score"] == pytest.approx(
        SequenceClassifierReward(model, tokenizer)(["The film"], [info["response"]])[0]
    )
