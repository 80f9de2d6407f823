"""``evaluate`` on an env with a task: gold metrics, learned reward, KL, fluency, diversity."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PROMPTS, length_reward, make_word_start_reward, vector_env

from rlhf_agents import PolicyAgent, ReferenceAgent, evaluate
from rlhf_agents.evaluation import EVALUATION_METRICS
from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer
from rlhf_env.tasks import Task
from rlhf_env.text_metrics import distinct_n, repetition_rate, response_perplexity, standard_error
from rlhf_pipeline.held_out import evaluate_policy

EVAL_PROMPTS = [f"Review {i}: the film" for i in range(5)]

EVERY_METRIC = {
    "score", "score_std", "return", "kl", "response_length", "episodes", "learned", "gold",
    "gold/word_start", "gold/length", "perplexity", "distinct_1", "distinct_2", "repetition",
}  # fmt: skip


def _task(tokenizer) -> Task:
    """A hand-built task: length as the training reward, word starts as the gold score."""
    return Task(
        name="TinyTest",
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        reward_fn=length_reward,
        gold={"word_start": make_word_start_reward(tokenizer), "length": length_reward},
    )


@pytest.fixture
def task_env(tokenizer, gpt2, gpt2_other):
    env = vector_env(tokenizer, length_reward, policy=gpt2, reference=gpt2_other, num_envs=3)
    env.task = _task(tokenizer)
    return env


def test_every_metric_on_the_tasks_held_out_prompts_by_default(task_env):
    result = evaluate(PolicyAgent(task_env, seed=0), task_env, seed=0)
    rollout = result.rollout
    assert rollout.prompts == EVAL_PROMPTS  # each held-out prompt once, in order
    figures = result.as_dict()
    assert set(figures) == EVERY_METRIC
    assert all(np.isfinite(value) for value in figures.values())
    documented = {"gold/<name>" if name.startswith("gold/") else name for name in figures}
    assert documented <= set(EVALUATION_METRICS)
    assert figures["episodes"] == len(EVAL_PROMPTS) and result.gold_name == "word_start"
    assert figures["learned"] == figures["score"]
    assert figures["kl"] != 0.0  # the reference has other weights than the policy
    # Every figure has a standard error, every mean its per-response values.
    assert set(figures) - {"score_std", "episodes"} <= set(result.sem)
    for name in ("learned", "return", "kl", "response_length", "gold", "repetition"):
        values = result.per_response[name]
        assert values.shape == (len(EVAL_PROMPTS),)
        assert result.sem[name] == pytest.approx(standard_error(values))


def test_gold_metrics_are_the_tasks_gold_on_the_rollouts_responses(task_env):
    result = evaluate(ReferenceAgent(task_env, seed=1), task_env, seed=1)
    rollout = result.rollout
    expected = task_env.task.gold_scores(rollout.prompts, rollout.responses)
    for name, values in expected.items():
        np.testing.assert_allclose(result.per_response[f"gold/{name}"], values)
        assert result.as_dict()[f"gold/{name}"] == pytest.approx(np.mean(values))
    assert result.gold == pytest.approx(np.mean(expected["word_start"]))
    assert result.as_dict()["distinct_2"] == distinct_n(rollout.responses, 2)
    assert result.as_dict()["repetition"] == repetition_rate(rollout.responses)
    assert result.response_length == pytest.approx(float(rollout.lengths.float().mean()))


def test_perplexity_is_the_responses_perplexity_under_the_reference(task_env):
    result = evaluate(PolicyAgent(task_env), task_env, batch_size=2)
    rollout = result.rollout
    expected = response_perplexity(
        task_env.reference, task_env.tokenizer, rollout.prompts, rollout.responses
    )
    assert result.as_dict()["perplexity"] == pytest.approx(expected.corpus, rel=1e-5)
    np.testing.assert_allclose(result.per_response["perplexity"], expected.per_response, rtol=1e-5)
    assert result.sem["perplexity"] == pytest.approx(expected.standard_error, rel=1e-4)


def test_fluency_under_another_lm_with_its_own_tokenizer(task_env):
    other_tokenizer = build_tiny_tokenizer(
        corpus=["an unrelated corpus of words"] * 4, vocab_size=300
    )
    other = build_tiny_llama(other_tokenizer, seed=5)
    result = evaluate(PolicyAgent(task_env), task_env, fluency_model=(other, other_tokenizer))
    rollout = result.rollout
    expected = response_perplexity(other, other_tokenizer, rollout.prompts, rollout.responses)
    assert result.as_dict()["perplexity"] == pytest.approx(expected.corpus, rel=1e-5)


def test_options_turn_metrics_off_and_override_the_gold(task_env, tokenizer, gpt2):
    result = evaluate(PolicyAgent(task_env), task_env, fluency=False, gold={"len": length_reward})
    figures = result.as_dict()
    assert "perplexity" not in figures and "gold/word_start" not in figures
    lengths = length_reward(result.rollout.prompts, result.rollout.responses)
    assert figures["gold"] == figures["gold/len"] == pytest.approx(np.mean(lengths))
    explicit = evaluate(PolicyAgent(task_env), task_env, prompts=EVAL_PROMPTS[:2])
    assert explicit.rollout.prompts == EVAL_PROMPTS[:2]

    # An env without a task: the figures it always had, diversity, and no default prompts.
    plain = vector_env(tokenizer, length_reward, policy=gpt2, num_envs=2)
    figures = evaluate(PolicyAgent(plain), plain, num_episodes=2).as_dict()
    assert "gold" not in figures and "perplexity" not in figures
    assert {"score", "return", "kl", "distinct_1", "repetition"} <= set(figures)
    with pytest.raises(ValueError, match="either num_episodes or prompts"):
        evaluate(PolicyAgent(plain), plain)
    assert "perplexity" in evaluate(PolicyAgent(plain), plain, 2, fluency=True).as_dict()


def test_evaluate_policy_keeps_its_keys_and_adds_the_new_figures(task_env):
    result = evaluate_policy(task_env, EVAL_PROMPTS[:4], seed=0)
    summary = result["summary"]
    assert {"learned_score", "gold_score", "gold_score_sem", "kl", "response_length",
            "responses"} <= set(summary)  # fmt: skip
    assert {"perplexity", "distinct_1", "distinct_2", "repetition", "gold/length"} <= set(summary)
    assert summary["responses"] == 4 and summary["gold_score_sem"] == result["sem"]["gold_score"]
    sample = result["samples"][0]
    assert {"prompt", "response", "learned", "kl", "gold", "perplexity"} <= set(sample)
    # An oracle given alone is the gold score, as before.
    with_oracle = evaluate_policy(task_env, EVAL_PROMPTS[:2], length_reward, fluency=False)
    assert with_oracle["summary"]["gold_score"] == pytest.approx(
        np.mean([s["gold"] for s in with_oracle["samples"]])
    )
    assert "perplexity" not in with_oracle["summary"]
