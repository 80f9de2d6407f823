"""The agents on dialogue episodes: rollouts hold the ids the policy saw (inserted turns
marked), the one teacher-forced forward reproduces the env's log-probs, PPO/RLOO/GRPO and
stable-baselines3's PPO train as they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dialogue_env import SCRIPTS, reply_length

from rlhf_agents import PPOAgent, RLOOAgent, evaluate
from rlhf_agents.forward import gather_logprobs, response_forward
from rlhf_agents.rollout import collect_episodes
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer


@pytest.fixture(scope="module")
def chat():
    tokenizer = build_tiny_tokenizer(chat_template=True)
    return tokenizer, build_tiny_llama(tokenizer, seed=0)


def dialogue_env(chat, **overrides) -> TextGenerationVectorEnv:
    tokenizer, policy = chat
    kwargs = dict(
        max_turns=3, max_new_tokens=6, max_prompt_tokens=64, max_total_tokens=120,
        kl_coef=0.1, num_envs=4,
    )  # fmt: skip
    kwargs.update(overrides)
    return TextGenerationVectorEnv(policy, tokenizer, reply_length, SCRIPTS, **kwargs)


class EndsTurns:
    """Samples from the env's policy but ends row ``i``'s turns after ``2 + i % 3`` tokens, so
    that conversations insert user turns at different steps."""

    def __init__(self, agent, end_of_turn: int) -> None:
        self.agent, self.end_of_turn, self.count = agent, end_of_turn, None

    def __call__(self, env, observation) -> np.ndarray:
        if self.count is None or self.count.size != env.num_envs:
            self.count = np.zeros(env.num_envs, dtype=np.int64)
        actions = self.agent.act(env, observation)
        ends = self.count >= 2 + np.arange(env.num_envs) % 3
        actions = np.where(ends, self.end_of_turn, actions)
        self.count = np.where(ends, 0, self.count + 1)
        return actions


def test_a_dialogue_rollout_holds_the_ids_the_policy_saw_and_its_log_probs(chat):
    env = dialogue_env(chat)
    agent = PPOAgent(env, minibatch_size=2, progress_bar=False)
    end = IncrementalChatTemplate(chat[0]).end_of_turn_id
    rollout = collect_episodes(env, EndsTurns(agent, end), seed=0)
    assert rollout.inserted_mask.sum() > 0
    assert not (rollout.inserted_mask * rollout.action_mask).any()
    # Inserted tokens carry no reward, KL or log-prob; every action has a log-prob.
    inserted = rollout.inserted_mask.bool()
    assert not rollout.rewards[inserted].any() and not rollout.kl[inserted].any()
    # One teacher-forced forward over prompt + continuation gives the env's log-probs at
    # every action: the ids trained on are the ids the policy saw.
    logits, _ = response_forward(
        env.policy, rollout.prompt_ids, rollout.prompt_mask, rollout.continuation_ids,
        rollout.context_mask,
    )  # fmt: skip
    logprobs = gather_logprobs(logits, rollout.continuation_ids)
    mask = rollout.action_mask
    torch.testing.assert_close(logprobs * mask, rollout.logprobs * mask, atol=1e-5, rtol=0)
    # Per-turn scores sum to the score; the return is the score minus beta x the summed KL.
    for scores, total in zip(rollout.turn_scores, rollout.scores.tolist(), strict=True):
        assert len(scores) >= 1 and sum(scores) == pytest.approx(total, abs=1e-5)
    torch.testing.assert_close(
        rollout.returns, rollout.scores - 0.1 * rollout.sequence_kl, atol=1e-5, rtol=0
    )
    for i, messages in enumerate(rollout.conversations):
        assistant_turns = sum(m["role"] == "assistant" for m in messages)
        assert assistant_turns == len(rollout.turn_scores[i])
        # An episode's inserted blocks are its user turns after the first.
        assert rollout.inserted_mask[i].sum() > 0 or assistant_turns == 1


@pytest.mark.parametrize("kind", ["ppo", "rloo", "grpo"])
def test_the_agents_train_on_dialogue_episodes(chat, kind):
    torch.manual_seed(0)
    tokenizer = chat[0]
    policy = build_tiny_llama(tokenizer, seed=0)
    env = dialogue_env((tokenizer, policy))
    if kind == "ppo":
        agent = PPOAgent(env, minibatch_size=2, epochs=1, progress_bar=False)
    else:
        agent = RLOOAgent(env, minibatch_size=2, group_size=2, baseline=kind, progress_bar=False)
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    agent.act = EndsTurns(PPOAgent(env, minibatch_size=2, progress_bar=False), end)
    before = [p.detach().clone() for p in policy.parameters()]
    agent.learn(total_timesteps=40)
    record = agent.history[-1]
    assert np.isfinite(record["train/grad_norm"]) and record["timesteps"] >= 40
    assert any(not torch.equal(a, p) for a, p in zip(before, policy.parameters(), strict=True))
    # Timesteps count actions only: tokens per episode <= the assistant's budget.
    assert record["rollout/response_length"] <= 3 * 6


def test_evaluation_reports_each_turns_score(chat):
    env = dialogue_env(chat)
    agent = PPOAgent(env, minibatch_size=2, progress_bar=False)
    end = IncrementalChatTemplate(chat[0]).end_of_turn_id

    class Acting:
        act = EndsTurns(agent, end)

    result = evaluate(Acting(), env, prompts=SCRIPTS, gold={"length": reply_length})
    metrics = result.as_dict()
    assert {"turn_score/1", "turn_score/2"} <= set(metrics)
    turns = [sum(m["role"] == "assistant" for m in c) for c in result.rollout.conversations]
    assert metrics["turns"] == pytest.approx(np.mean(turns)) and max(turns) >= 2
    first_turns = [scores[0] for scores in result.rollout.turn_scores]
    assert metrics["turn_score/1"] == pytest.approx(np.mean(first_turns))
    # Gold metrics read the transcript before the last turn and the last turn.
    last = [len(r) / 10 for r in result.rollout.responses]
    transcripts = [c[:-1] for c in result.rollout.conversations]
    expected = [
        x + sum(m["role"] == "user" for m in t) / 100
        for x, t in zip(last, transcripts, strict=True)
    ]
    np.testing.assert_allclose(result.per_response["gold"], expected)
    # The gold of every turn: turn k read after the k - 1 before it (k user turns).
    for turn in (1, 2):
        expected = [
            len(turns[turn - 1]["content"]) / 10 + turn / 100 if len(turns) >= turn else np.nan
            for turns in (
                [m for m in c if m["role"] == "assistant"] for c in result.rollout.conversations
            )
        ]
        np.testing.assert_allclose(result.per_response[f"gold_turn/{turn}"], expected)
        assert metrics[f"gold_turn/{turn}"] == pytest.approx(np.nanmean(expected))


def test_sb3_ppo_trains_the_lm_on_the_dialogue_env_as_it_is():
    """SB3's PPO as released, with the LM as its policy (:class:`LanguageModelPolicy`), on a
    dialogue env: conversations end, and the update moves the very module the env reads."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv

    tokenizer = build_tiny_tokenizer(chat_template=True)
    vector_env = dialogue_env(
        (tokenizer, build_tiny_llama(tokenizer, seed=0)), num_envs=2, autoreset_mode="SameStep"
    )
    before = {name: p.detach().clone() for name, p in vector_env.policy.named_parameters()}
    model = PPO(LanguageModelPolicy, VecMonitor(SB3VecEnv(vector_env)),
                policy_kwargs={"model": vector_env.policy}, n_steps=16, batch_size=16,
                n_epochs=1, seed=0, device="cpu")  # fmt: skip
    assert model.policy.model is vector_env.policy
    model.learn(total_timesteps=32)
    assert len(model.ep_info_buffer) >= 1
    moved = [n for n, p in vector_env.policy.named_parameters() if not torch.equal(p, before[n])]
    assert moved


def test_sb3_policy_cache_follows_inserted_user_turns():
    """The SB3 policy's KV cache across the env's inserted turns gives the logits of a whole
    re-encoding of the context; SB3's per-env infos carry the dialogue keys."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import obs_as_tensor

    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv

    tokenizer = build_tiny_tokenizer(chat_template=True)
    vector_env = dialogue_env(
        (tokenizer, build_tiny_llama(tokenizer, seed=0)), num_envs=4, autoreset_mode="SameStep"
    )
    venv = SB3VecEnv(vector_env)
    policy = PPO(LanguageModelPolicy, venv, policy_kwargs={"model": vector_env.policy},
                 n_steps=8, batch_size=32, device="cpu").policy  # fmt: skip
    policy.set_training_mode(False)
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    venv.seed(0)
    obs, rng, inserted = venv.reset(), np.random.default_rng(0), 0
    for _ in range(40):
        tensors = obs_as_tensor({k: v.astype(np.float32) for k, v in obs.items()}, "cpu")
        with torch.no_grad():
            cached, _ = policy._logits_and_hidden(tensors)  # (N, V)
            full, _ = policy._full_forward(tensors)
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
        actions = rng.integers(3, 300, size=4)
        actions[rng.random(4) < 0.3] = end
        obs, _, _, infos = venv.step(actions)
        inserted += sum("inserted_ids" in info for info in infos)
    assert inserted >= 8
