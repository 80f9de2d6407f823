"""rlhf_env.sb3_vec_env.SB3VecEnv: SB3's VecEnv conventions over the batched environment."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from helpers import length_reward, vector_env

from rlhf_env.sb3_vec_env import SB3VecEnv


def _venv(tokenizer, policy, mode=AutoresetMode.SAME_STEP, num_envs=3):
    return vector_env(
        tokenizer, length_reward, policy=policy, max_new_tokens=4, max_prompt_tokens=12,
        num_envs=num_envs, autoreset_mode=mode,
    )  # fmt: skip


def test_sb3_format_terminal_observation_and_time_limit(tokenizer, gpt2):
    env = SB3VecEnv(_venv(tokenizer, gpt2))
    env.seed(3)
    obs = env.reset()
    assert obs["input_ids"].shape == (3, 16)
    eos = tokenizer.eos_token_id
    before = obs["input_ids"].copy()
    env.step_async(np.array([eos, 30, 30]))
    obs, rewards, dones, infos = env.step_wait()
    assert rewards.dtype == np.float32 and dones.tolist() == [True, False, False]
    terminal = infos[0]["terminal_observation"]["input_ids"]
    np.testing.assert_array_equal(terminal[:-1], before[0][1:])
    assert terminal[-1] == eos and infos[0]["TimeLimit.truncated"] is False
    assert "prompt" in infos[0] and "score" in infos[0] and "kl" in infos[1]
    for _ in range(3):
        obs, rewards, dones, infos = env.step(np.array([30, 30, 30]))
    assert dones.tolist() == [False, True, True]
    assert infos[1]["TimeLimit.truncated"] is False  # the score is paid: no bootstrap
    assert infos[1]["terminal_observation"]["input_ids"][-4:].tolist() == [30] * 4
    assert obs["attention_mask"][1].sum() < 16  # already the next episode's prompt


def test_rewards_match_the_vector_env(tokenizer, gpt2):
    adapter = SB3VecEnv(_venv(tokenizer, gpt2))
    plain = _venv(tokenizer, gpt2)
    adapter.seed(5)
    adapter.reset()
    plain.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(10):
        actions = rng.integers(2, 384, size=3)
        _, rewards, dones, _ = adapter.step(actions)
        _, expected, terms, truncs, _ = plain.step(actions)
        np.testing.assert_allclose(rewards, expected, rtol=1e-6)
        np.testing.assert_array_equal(dones, terms | truncs)


def test_attributes_reach_the_vector_env(tokenizer, gpt2):
    env = SB3VecEnv(_venv(tokenizer, gpt2))
    env.set_attr("kl_coef", 0.5)
    assert env.get_attr("kl_coef") == [0.5] * 3
    assert env.env_is_wrapped(object) == [False] * 3


def test_next_step_vector_env_is_rejected_with_a_fix(tokenizer, gpt2):
    with pytest.raises(ValueError, match="autoreset_mode='SameStep'"):
        SB3VecEnv(_venv(tokenizer, gpt2, mode=AutoresetMode.NEXT_STEP))


def test_sb3_ppo_runs_on_the_adapter(tokenizer, gpt2):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    env = VecMonitor(SB3VecEnv(_venv(tokenizer, gpt2, num_envs=2)))
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0)
    model.learn(total_timesteps=32)
    assert len(model.ep_info_buffer) >= 4  # episodes of 4 tokens completed and were logged
