"""TextGenerationVectorEnv: equivalence with single envs, autoreset modes, fast path, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers import PROMPTS, length_reward

import rlhf_env
from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.models.tiny import build_tiny_causal_lm
from rlhf_env.rewards import RewardError

pytestmark = pytest.mark.filterwarnings("ignore:a prompt of .* tokens exceeds:UserWarning")

RAGGED_PROMPTS = [*PROMPTS, "A", "The director tries hard, but the script lets everyone down"]
KWARGS = dict(
    prompts=RAGGED_PROMPTS,
    max_new_tokens=5,
    max_prompt_tokens=16,
    kl_coef=0.2,
    missing_eos_penalty=0.3,
)


def _actions(rng: np.random.Generator, n: int, eos: int) -> np.ndarray:
    actions = rng.integers(2, 384, size=n)
    actions[rng.random(n) < 0.15] = eos  # some episodes end early, at different times
    return actions


def _single_envs_step(envs, ended, actions, mode):
    """What a Gymnasium SyncVectorEnv would do with single envs, one sub-env at a time."""
    out = []
    for i, env in enumerate(envs):
        if mode == AutoresetMode.NEXT_STEP and ended[i]:
            obs, info = env.reset()
            out.append((obs, 0.0, False, False, info, None))
            ended[i] = False
            continue
        obs, reward, terminated, truncated, info = env.step(actions[i])
        final = None
        if terminated or truncated:
            ended[i] = True
            if mode == AutoresetMode.SAME_STEP:
                final = (obs, info)
                obs, reset_info = env.reset()
                info = {**info, **reset_info}
                ended[i] = False
        out.append((obs, reward, terminated, truncated, info, final))
    return out


@pytest.mark.parametrize("engine", ["static", "dynamic"])
@pytest.mark.parametrize("num_envs", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_matches_single_envs(tokenizer, gpt2, gpt2_other, num_envs, mode, engine):
    """Observations, flags and texts exactly; rewards and log-probs within 1e-5 (float32
    batched vs unbatched forwards), with either engine."""
    common = dict(
        policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, reference=gpt2_other,
        engine=engine,
    )  # fmt: skip
    venv = TextGenerationVectorEnv(**common, **KWARGS, num_envs=num_envs, autoreset_mode=mode)
    envs = [TextGenerationEnv(**common, **KWARGS) for _ in range(num_envs)]
    obs, infos = venv.reset(seed=7)
    singles = [env.reset(seed=7 + i) for i, env in enumerate(envs)]
    for i, (single_obs, single_info) in enumerate(singles):
        np.testing.assert_array_equal(obs["input_ids"][i], single_obs["input_ids"])
        assert infos["prompt"][i] == single_info["prompt"]

    rng = np.random.default_rng(0)
    ended = [False] * num_envs
    saw_reset_while_others_run = False
    for _ in range(40):
        actions = _actions(rng, num_envs, tokenizer.eos_token_id)
        obs, rewards, terms, truncs, infos = venv.step(actions)
        expected = _single_envs_step(envs, ended, actions, mode)
        for i, (e_obs, e_reward, e_term, e_trunc, e_info, e_final) in enumerate(expected):
            np.testing.assert_array_equal(obs["input_ids"][i], e_obs["input_ids"])
            np.testing.assert_array_equal(obs["attention_mask"][i], e_obs["attention_mask"])
            assert (terms[i], truncs[i]) == (e_term, e_trunc)
            assert rewards[i] == pytest.approx(e_reward, abs=1e-5)
            for key in ("kl", "policy_logprob", "ref_logprob", "score"):
                assert infos.get(f"_{key}", np.zeros(num_envs, bool))[i] == (key in e_info)
                if key in e_info:
                    assert infos[key][i] == pytest.approx(e_info[key], abs=1e-5)
            for key in ("response", "prompt"):
                assert infos.get(f"_{key}", np.zeros(num_envs, bool))[i] == (key in e_info)
                if key in e_info:
                    assert infos[key][i] == e_info[key]
            if e_final is not None:
                np.testing.assert_array_equal(
                    infos["final_obs"][i]["input_ids"], e_final[0]["input_ids"]
                )
                assert infos["final_info"]["score"][i] == pytest.approx(e_final[1]["score"])
        if "_prompt" in infos and not infos["_prompt"].all():
            saw_reset_while_others_run = True
        # the fast path agrees with the single envs' policy logits where they are current
        for i, env in enumerate(envs):
            if not ended[i]:
                torch.testing.assert_close(
                    venv.policy_logits[i], env.policy_logits, atol=1e-4, rtol=0
                )
    if num_envs > 1:
        assert saw_reset_while_others_run


def test_make_vec_returns_the_vector_env(tokenizer, gpt2):
    venv = gym.make_vec(
        rlhf_env.ENV_ID,
        num_envs=3,
        policy=gpt2,
        tokenizer=tokenizer,
        reward_fn=length_reward,
        prompts=PROMPTS,
    )
    assert isinstance(venv.unwrapped, TextGenerationVectorEnv)
    assert venv.num_envs == 3
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space
    assert venv.unwrapped.policy_logits.shape == (3, venv.unwrapped.vocab_size)


def test_disabled_autoreset_needs_a_masked_reset(tokenizer, gpt2):
    venv = TextGenerationVectorEnv(
        policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, **KWARGS, num_envs=2,
        autoreset_mode=AutoresetMode.DISABLED,
    )  # fmt: skip
    venv.reset(seed=0)
    _, _, terms, _, _ = venv.step(np.array([tokenizer.eos_token_id, 30]))
    assert terms.tolist() == [True, False]
    with pytest.raises(RuntimeError, match="reset_mask"):
        venv.step(np.array([30, 30]))
    obs, infos = venv.reset(options={"reset_mask": np.array([True, False])})
    assert infos["_prompt"].tolist() == [True, False]
    assert obs["input_ids"][1, -1] == 30  # sub-env 1 kept its context
    venv.step(np.array([30, 30]))


@pytest.mark.parametrize("engine", ["static", "dynamic"])
@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_holding_ended_sub_envs_wait_without_a_prefill(tokenizer, gpt2, gpt2_other, engine, mode):
    """Inside holding_ended() a finished sub-env waits (reward 0, no flags, no infos, no new
    prompt encoded) while the others step exactly as single envs; after the block the waiting
    sub-envs are reset as the autoreset mode says."""
    common = dict(
        policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, reference=gpt2_other,
        engine=engine,
    )  # fmt: skip
    venv = TextGenerationVectorEnv(**common, **KWARGS, num_envs=3, autoreset_mode=mode)
    singles = [TextGenerationEnv(**common, **KWARGS) for _ in range(3)]
    started_rows = []
    start = venv.engine.start

    def recording_start(rows, *args):
        started_rows.append(list(rows))
        return start(rows, *args)

    venv.engine.start = recording_start
    eos = tokenizer.eos_token_id
    ended = np.zeros(3, dtype=bool)
    with venv.holding_ended():
        venv.reset(seed=3)
        for i, env in enumerate(singles):
            env.reset(seed=3 + i)
        for t in range(KWARGS["max_new_tokens"] + 1):
            # sub-env 0 ends at its first token, 1 at its third, 2 is truncated
            actions = np.array([eos if t == 0 else 30, eos if t == 2 else 31, 32])
            obs, rewards, terms, truncs, infos = venv.step(actions)
            assert "_prompt" not in infos and "final_obs" not in infos
            for i, env in enumerate(singles):
                if ended[i]:
                    assert (rewards[i], terms[i], truncs[i]) == (0.0, False, False)
                    assert not infos.get("_kl", np.zeros(3, bool))[i]
                    continue
                e_obs, e_reward, e_term, e_trunc, e_info = env.step(actions[i])
                np.testing.assert_array_equal(obs["input_ids"][i], e_obs["input_ids"])
                assert rewards[i] == pytest.approx(e_reward, abs=1e-5)
                assert (terms[i], truncs[i]) == (e_term, e_trunc)
                assert infos["kl"][i] == pytest.approx(e_info["kl"], abs=1e-5)
                ended[i] = e_term or e_trunc
    assert ended.all()
    assert started_rows == [[0, 1, 2]]  # the reset's prompts only

    if mode == AutoresetMode.DISABLED:
        with pytest.raises(RuntimeError, match="reset_mask"):
            venv.step(np.array([30, 30, 30]))
    else:
        _, rewards, terms, truncs, infos = venv.step(np.array([30, 30, 30]))
        assert infos["_prompt"].all() and not (terms | truncs).any()
        assert rewards.tolist() == [0.0, 0.0, 0.0]


def test_bad_actions_and_rewards_name_the_sub_env_and_leave_it_usable(tokenizer, gpt2):
    calls = {"n": 0}

    def flaky(prompts, responses):
        calls["n"] += 1
        return [float("nan")] * len(responses) if calls["n"] == 1 else [1.0] * len(responses)

    venv = TextGenerationVectorEnv(
        policy=gpt2, tokenizer=tokenizer, reward_fn=flaky, **KWARGS, num_envs=3
    )
    obs, _ = venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"sub-env 1\) is outside Discrete\(384\)"):
        venv.step(np.array([3, 999, 4]))
    with pytest.raises(TypeError, match="3 integer token ids"):
        venv.step(np.array([3, 4]))
    eos = tokenizer.eos_token_id
    with pytest.raises(RewardError, match="sub-env 2"):
        venv.step(np.array([30, 30, eos]))
    obs_retry, _, terms, _, infos = venv.step(np.array([30, 30, eos]))  # state unchanged
    assert terms.tolist() == [False, False, True] and infos["score"][2] == 1.0
    np.testing.assert_array_equal(obs_retry["input_ids"][:, :-1], obs["input_ids"][:, 1:])


def test_step_before_reset_and_bad_constructor_values(tokenizer, gpt2):
    common = dict(policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, prompts=PROMPTS)
    venv = TextGenerationVectorEnv(**common, num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="num_envs"):
        TextGenerationVectorEnv(**common, num_envs=0)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) top_p .*known: .*num_envs"):
        TextGenerationVectorEnv(**common, top_p=0.9)


def test_render_ansi_lists_every_sub_env(tokenizer, gpt2):
    venv = TextGenerationVectorEnv(
        policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, prompts=PROMPTS,
        num_envs=2, render_mode="ansi",
    )  # fmt: skip
    venv.reset(seed=0)
    venv.step(np.array([30, 31]))
    text = venv.render()
    assert text.count("\n") == 1 and "(1 tokens)" in text


def test_dynamic_cache_stays_bounded_over_long_runs_with_resets(tokenizer, gpt2):
    """Resets splice rows in and trim dead columns: the dynamic engine's cache never outgrows
    one context (the static engine's is fixed at one context)."""
    venv = TextGenerationVectorEnv(
        policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, **KWARGS, num_envs=4,
        engine="dynamic",
    )  # fmt: skip
    venv.reset(seed=0)
    rng = np.random.default_rng(1)
    longest = 0
    for _ in range(300):
        venv.step(_actions(rng, 4, tokenizer.eos_token_id))
        longest = max(longest, venv.engine.length)
    assert longest <= venv.config.context_length + 1


@pytest.mark.parametrize("engine", ["static", "dynamic"])
@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_fast_path_matches_full_recomputation_in_every_autoreset_mode(tokenizer, engine, mode):
    """``policy_logits``, ``reference_logits`` and the reported log-probs equal a forward of
    each observed context with no cache (1e-5), over staggered autoresets and, for the static
    engine, several wrap-arounds of its 13-slot ring; Gemma 3 layout: sliding windows of 5
    tokens between global layers."""
    policy = build_tiny_causal_lm("gemma3_text", tokenizer, seed=0)
    reference = build_tiny_causal_lm("gemma3_text", tokenizer, seed=1)
    venv = TextGenerationVectorEnv(
        policy=policy, tokenizer=tokenizer, reward_fn=length_reward, reference=reference,
        prompts=RAGGED_PROMPTS, max_new_tokens=5, max_prompt_tokens=8, num_envs=3,
        autoreset_mode=mode, engine=engine,
    )  # fmt: skip
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    awaiting_reset = np.zeros(3, dtype=bool)
    for _ in range(40):
        contexts = [
            obs["input_ids"][row][obs["attention_mask"][row] == 1].tolist() for row in range(3)
        ]
        expected = {
            name: torch.stack([model(torch.tensor([c])).logits[0, -1] for c in contexts]).detach()
            for name, model in (("policy", policy), ("reference", reference))
        }
        live = np.flatnonzero(~awaiting_reset)
        for name, logits in (("policy", venv.policy_logits), ("reference", venv.reference_logits)):
            torch.testing.assert_close(logits[live], expected[name][live], atol=1e-5, rtol=0)
        actions = _actions(rng, 3, tokenizer.eos_token_id)
        obs, _, terminations, truncations, infos = venv.step(actions)
        acting = infos["_policy_logprob"]
        assert np.array_equal(acting, ~awaiting_reset)
        want = torch.log_softmax(expected["policy"], -1)[torch.arange(3), actions]
        np.testing.assert_allclose(
            infos["policy_logprob"][acting], want.numpy()[acting], atol=1e-5, rtol=0
        )
        ended = terminations | truncations
        if mode == AutoresetMode.DISABLED and ended.any():
            obs, _ = venv.reset(options={"reset_mask": ended})
        elif mode == AutoresetMode.NEXT_STEP:
            awaiting_reset = ended
