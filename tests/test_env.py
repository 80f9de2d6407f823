"""TextGenerationEnv: spaces, reward, KV cache, determinism, episode end, Gymnasium/SB3 checks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import PROMPTS, check_env_strictly, length_reward

import rlhf_env
from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.kl import kl_full


def _sample_actions(env: TextGenerationEnv, seed: int, n: int) -> list[int]:
    """Token ids that avoid EOS, so episodes run to max_new_tokens."""
    rng = np.random.default_rng(seed)
    actions = []
    while len(actions) < n:
        token = int(rng.integers(env.vocab_size))
        if token not in env.eos_token_ids:
            actions.append(token)
    return actions


def _run_episode(env, seed, actions, options=None):
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], [info]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, rewards, infos


def _full_logprobs(model, context: list[int]) -> torch.Tensor:
    """Next-token log-probs from a forward over the whole context (no cache)."""
    with torch.no_grad():
        logits = model(torch.tensor([context])).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1)


# -- spaces and API ---------------------------------------------------------------------------


def test_spaces_follow_the_spec(make_env, tokenizer):
    env = make_env(max_new_tokens=5, max_prompt_tokens=7)
    vocab = env.policy.get_output_embeddings().weight.shape[0]
    assert env.action_space == gym.spaces.Discrete(vocab)
    length = 12
    assert env.observation_space["input_ids"] == gym.spaces.Box(0, vocab - 1, (length,), np.int64)
    assert env.observation_space["attention_mask"] == gym.spaces.Box(0, 1, (length,), np.int64)
    obs, info = env.reset(seed=0, options={"prompt": "This movie was"})
    prompt_ids = tokenizer("This movie was")["input_ids"]
    assert obs in env.observation_space
    # left padding: the prompt is right-aligned, pads on the left
    np.testing.assert_array_equal(obs["input_ids"][-len(prompt_ids) :], prompt_ids)
    assert (obs["input_ids"][: -len(prompt_ids)] == tokenizer.pad_token_id).all()
    np.testing.assert_array_equal(
        obs["attention_mask"], [0] * (length - len(prompt_ids)) + [1] * len(prompt_ids)
    )
    assert info["prompt"] == "This movie was"
    obs, *_ = env.step(42)
    assert obs["input_ids"][-1] == 42 and obs["attention_mask"][-len(prompt_ids) - 1 :].all()


def test_gymnasium_check_env_passes(tokenizer, gpt2):
    env = gym.make(
        rlhf_env.ENV_ID,
        policy=gpt2,
        tokenizer=tokenizer,
        reward_fn=length_reward,
        prompts=PROMPTS,
        max_new_tokens=4,
        render_mode="ansi",
    )
    check_env_strictly(env.unwrapped, skip_render_check=False)


def test_sb3_check_env_passes(make_env):
    check_env_strictly(make_env(), sb3=True)


def test_gymnasium_make_after_import(tokenizer, gpt2):
    env = gym.make(
        rlhf_env.ENV_ID,
        policy=gpt2,
        tokenizer=tokenizer,
        reward_fn=length_reward,
        prompts=PROMPTS,
        max_new_tokens=3,
    )
    assert isinstance(env.unwrapped, TextGenerationEnv)
    env.reset(seed=0)
    *_, truncated, info = [env.step(7) for _ in range(3)][-1]
    assert truncated and "score" in info


def test_render_ansi_shows_prompt_and_response(make_env, tokenizer):
    env = make_env(render_mode="ansi")
    env.reset(options={"prompt": "I think"})
    token = tokenizer(" great")["input_ids"][0]
    env.step(token)
    text = env.render()
    assert "I think" in text and tokenizer.decode([token]) in text and "1/6" in text


# -- reward and KL ----------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_episode_return_is_score_minus_beta_times_kl(make_env, gpt2, gpt2_other, estimator):
    """Checked against an independent computation from full forwards of both models."""
    env = make_env(reference=gpt2_other, kl_coef=0.3, kl_estimator=estimator)
    actions = _sample_actions(env, seed=1, n=env.max_new_tokens)
    _, rewards, infos = _run_episode(env, seed=5, actions=actions)
    prompt_ids = env.tokenizer(infos[0]["prompt"])["input_ids"]

    expected_kl = []
    for t, action in enumerate(actions):
        context = prompt_ids + actions[:t]
        logp, ref_logp = _full_logprobs(gpt2, context), _full_logprobs(gpt2_other, context)
        log_ratio = (logp[action] - ref_logp[action]).item()
        expected_kl.append(
            {
                "k1": log_ratio,
                "k3": np.expm1(-log_ratio) + log_ratio,
                "full": kl_full(logp[None], ref_logp[None]).item(),
            }[estimator]
        )
    response = env.tokenizer.decode(actions, skip_special_tokens=True)
    expected_score = length_reward([infos[0]["prompt"]], [response])[0]

    assert infos[-1]["response"] == response
    assert infos[-1]["score"] == expected_score
    np.testing.assert_allclose([i["kl"] for i in infos[1:]], expected_kl, rtol=1e-4, atol=1e-5)
    assert sum(rewards) == pytest.approx(expected_score - 0.3 * sum(expected_kl), abs=1e-4)
    np.testing.assert_allclose(rewards[:-1], [-0.3 * k for k in expected_kl[:-1]], atol=1e-5)


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_reference_equal_to_policy_gives_zero_kl(make_env, gpt2, estimator):
    env = make_env(reference=gpt2, kl_estimator=estimator)
    _, rewards, infos = _run_episode(env, seed=0, actions=_sample_actions(env, 0, 6))
    assert all(info["kl"] == 0.0 for info in infos[1:])
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == infos[-1]["score"]


def test_default_reference_is_a_frozen_copy(make_env, gpt2):
    env = make_env()
    assert env.reference is not env.policy
    assert not any(p.requires_grad for p in env.reference.parameters())
    _, _, infos = _run_episode(env, seed=0, actions=_sample_actions(env, 0, 6))
    assert all(abs(info["kl"]) < 1e-6 for info in infos[1:])  # a copy of the same weights


def test_kl_reads_the_policy_being_trained(make_env, tokenizer):
    """The env holds the policy by reference: changing its weights changes the KL."""
    from rlhf_env.models import build_tiny_gpt2

    policy = build_tiny_gpt2(tokenizer, seed=3)
    env = make_env(policy=policy)
    env.reset(seed=0)
    with torch.no_grad():
        policy.lm_head.weight.mul_(3.0)  # what an optimiser step does, in place
    env.reset(seed=0)
    _, _, _, _, info = env.step(5)
    assert abs(info["kl"]) > 1e-3


# -- KV cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_kv_cached_logprobs_match_full_reencoding(request, tokenizer, gpt2_other, model_name):
    """Tolerance: 1e-5 absolute on log-probs in float32."""
    policy = request.getfixturevalue(model_name)
    reference = gpt2_other if model_name == "gpt2" else policy
    env = TextGenerationEnv(
        policy=policy,
        tokenizer=tokenizer,
        reward_fn=length_reward,
        prompts=PROMPTS,
        reference=reference,
        max_new_tokens=10,
        max_prompt_tokens=12,
    )
    actions = _sample_actions(env, seed=2, n=10)
    _, _, infos = _run_episode(env, seed=3, actions=actions)
    prompt_ids = tokenizer(infos[0]["prompt"])["input_ids"]
    for t, action in enumerate(actions):
        context = prompt_ids + actions[:t]
        assert infos[t + 1]["policy_logprob"] == pytest.approx(
            _full_logprobs(policy, context)[action].item(), abs=1e-5
        )
        assert infos[t + 1]["ref_logprob"] == pytest.approx(
            _full_logprobs(reference, context)[action].item(), abs=1e-5
        )


def test_policy_logits_fast_path_matches_a_policy_forward(make_env, gpt2):
    env = make_env()
    obs, _ = env.reset(seed=0)
    for action in _sample_actions(env, 4, 3):
        context = obs["input_ids"][obs["attention_mask"] == 1].tolist()
        expected = torch.log_softmax(gpt2(torch.tensor([context])).logits[0, -1], -1)
        got = torch.log_softmax(env.policy_logits, -1)
        assert env.policy_logits.shape == (env.vocab_size,)
        torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=0)
        obs, *_ = env.step(action)


def test_training_mode_of_the_policy_is_restored_and_dropout_is_off(tokenizer):
    from rlhf_env.models import build_tiny_gpt2

    policy = build_tiny_gpt2(tokenizer, seed=0)
    policy.config.resid_pdrop = 0.5
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    policy.train()
    env = TextGenerationEnv(
        policy=policy, tokenizer=tokenizer, reward_fn=length_reward, prompts=PROMPTS
    )
    first = _run_episode(env, seed=0, actions=[9, 10, 11])[2]
    second = _run_episode(env, seed=0, actions=[9, 10, 11])[2]
    assert policy.training
    assert [i["policy_logprob"] for i in first[1:]] == [i["policy_logprob"] for i in second[1:]]


# -- determinism and episode end --------------------------------------------------------------


def test_same_seed_and_actions_give_same_trajectory(make_env, gpt2_other):
    actions = list(range(20, 26))
    runs = [
        _run_episode(make_env(reference=gpt2_other), seed=11, actions=actions) for _ in range(2)
    ]
    (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) = runs
    for a, b in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])
    assert rew_a == rew_b
    assert info_a == info_b


def test_seeded_reset_draws_reproducible_prompts(make_env):
    env = make_env()
    first = [env.reset(seed=s)[1]["prompt"] for s in range(8)]
    second = [env.reset(seed=s)[1]["prompt"] for s in range(8)]
    assert first == second
    assert len(set(first)) > 1


def test_eos_terminates_and_is_not_in_the_response(make_env, tokenizer):
    env = make_env()
    env.reset(seed=0)
    env.step(30)
    _, _, terminated, truncated, info = env.step(tokenizer.eos_token_id)
    assert terminated and not truncated
    assert info["response"] == tokenizer.decode([30])


def test_max_new_tokens_truncates(make_env):
    env = make_env(max_new_tokens=4)
    env.reset(seed=0)
    flags = [env.step(30)[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(False, True)]


def test_overlong_prompt_is_cut_from_the_left_with_one_warning(make_env, tokenizer):
    env = make_env(max_prompt_tokens=4)
    long_prompt = "The director tries hard, but the script lets everyone down."
    ids = tokenizer(long_prompt)["input_ids"]
    with pytest.warns(UserWarning, match="cut from the left"):
        obs, info = env.reset(options={"prompt": long_prompt})
    np.testing.assert_array_equal(obs["input_ids"][-4:], ids[-4:])
    assert info["prompt"] == tokenizer.decode(ids[-4:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(options={"prompt": long_prompt})  # warned once per env


# -- prompt sources ---------------------------------------------------------------------------


def test_prompts_from_a_callable_with_and_without_rng(make_env):
    env = make_env(prompts=lambda rng: PROMPTS[int(rng.integers(len(PROMPTS)))])
    assert env.reset(seed=4)[1]["prompt"] == env.reset(seed=4)[1]["prompt"]
    env = make_env(prompts=lambda: "Always this")
    assert env.reset()[1]["prompt"] == "Always this"


def test_prompts_from_a_datasets_column(make_env):
    import datasets

    column = datasets.Dataset.from_dict({"text": ["First prompt", "Second prompt"]})["text"]
    env = make_env(prompts=column)
    drawn = {env.reset(seed=s)[1]["prompt"] for s in range(10)}
    assert drawn == {"First prompt", "Second prompt"}


def test_policy_and_tokenizer_from_a_local_folder(tmp_path, gpt2, tokenizer):
    gpt2.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    env = TextGenerationEnv(
        policy=str(tmp_path), reward_fn=length_reward, prompts=PROMPTS, max_new_tokens=3
    )
    obs, _ = env.reset(seed=0)
    info = env.step(12)[-1]
    prompt_ids = obs["input_ids"][obs["attention_mask"] == 1]
    with torch.no_grad():
        expected = torch.log_softmax(gpt2(torch.from_numpy(prompt_ids[None])).logits[0, -1], -1)
    assert info["policy_logprob"] == pytest.approx(expected[12].item(), abs=1e-5)


def test_tokenizer_without_pad_token_pads_with_eos(tokenizer, gpt2):
    from rlhf_env.models import build_tiny_tokenizer

    no_pad = build_tiny_tokenizer(with_pad_token=False)
    env = TextGenerationEnv(policy=gpt2, tokenizer=no_pad, reward_fn=length_reward, prompts=PROMPTS)
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"][0] == no_pad.eos_token_id


# -- bad input: a clear error, and the env stays usable ---------------------------------------


def _finishes_cleanly(env) -> bool:
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(30)
        done = terminated or truncated
    return True


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (10_000, ValueError, r"outside Discrete\(384\)"),
        (-1, ValueError, "outside Discrete"),
        (1.5, TypeError, "one integer token id"),
        ("7", TypeError, "one integer token id"),
        (np.array([1, 2]), TypeError, "one integer token id"),
        (True, TypeError, "one integer token id"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(make_env, action, error, message):
    env = make_env()
    obs, _ = env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(action)
    obs_after, *_ = env.step(np.int64(30))  # numpy scalars are fine
    np.testing.assert_array_equal(obs_after["input_ids"][:-1], obs["input_ids"][1:])
    assert _finishes_cleanly(env)


def test_step_before_reset_and_after_the_end(make_env):
    env = make_env(max_new_tokens=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(3)
    env.reset(seed=0)
    env.step(3)
    env.step(3)
    with pytest.raises(RuntimeError, match=r"call env\.reset"):
        env.step(3)
    assert _finishes_cleanly(env)


def test_empty_prompt_source_and_empty_prompt(make_env):
    with pytest.raises(ValueError, match="prompts is empty"):
        make_env(prompts=[])
    with pytest.raises(TypeError, match="single string"):
        make_env(prompts="just one")
    env = make_env()
    with pytest.raises(ValueError, match="encodes to no tokens"):
        env.reset(options={"prompt": ""})
    assert _finishes_cleanly(env)


def test_tokenizer_without_pad_and_eos_is_rejected(gpt2):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bare)
    with pytest.raises(ValueError, match="neither a pad nor an EOS token"):
        TextGenerationEnv(policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward, prompts=["a"])


@pytest.mark.parametrize(
    ("bad_reward", "message"),
    [
        (lambda p, r: [float("nan")], "finite"),
        (lambda p, r: [float("inf")], "finite"),
        (lambda p, r: [1.0, 2.0], "one number per response"),
        (lambda p, r: "high", "numbers"),
    ],
)
def test_bad_rewards_raise_and_leave_the_env_usable(make_env, bad_reward, message):
    from rlhf_env.rewards import RewardError

    calls = {"n": 0}

    def flaky(prompts, responses):
        calls["n"] += 1
        return bad_reward(prompts, responses) if calls["n"] == 1 else [1.0]

    env = make_env(reward_fn=flaky, max_new_tokens=2)
    obs, _ = env.reset(options={"prompt": "This movie was"})
    env.step(30)
    with pytest.raises(RewardError, match=message) as caught:
        env.step(31)
    if message == "finite":
        assert "This movie was" in str(caught.value)
    # the failed last step changed nothing: retrying it finishes the episode
    obs, _, _, truncated, info = env.step(31)
    assert truncated and info["score"] == 1.0
    assert obs["input_ids"][-2:].tolist() == [30, 31]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_new_tokens": 0}, ValueError, ">= 1"),
        ({"kl_coef": -0.1}, ValueError, "kl_coef"),
        ({"kl_coef": float("nan")}, ValueError, "kl_coef"),
        ({"kl_estimator": "k2"}, ValueError, "kl_estimator must be one of"),
        ({"max_prompt_tokens": 300}, ValueError, "positions"),
        ({"reward_fn": None}, TypeError, "reward_fn"),
        ({"render_mode": "rgb_array"}, ValueError, "render_mode"),
        ({"tokenizer": None}, TypeError, "tokenizer is required"),
    ],
)
def test_bad_constructor_arguments(make_env, kwargs, error, message):
    with pytest.raises(error, match=message):
        make_env(**kwargs)


def test_missing_eos_penalty_applies_to_truncated_episodes_only(make_env, tokenizer):
    env = make_env(max_new_tokens=2, missing_eos_penalty=0.7, reference=None, kl_coef=0.0)
    env.reset(seed=0)
    env.step(30)
    _, reward, _, truncated, info = env.step(30)
    assert truncated and reward == pytest.approx(info["score"] - 0.7)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(tokenizer.eos_token_id)
    assert terminated and reward == pytest.approx(info["score"])
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        make_env(missing_eos_penalty=-1.0)


def test_settings_come_from_one_config(make_env, tokenizer, gpt2):
    """Both envs take EnvConfig's fields as keywords or a whole config; unknown names and bad
    values are refused, and gym.make passes its keywords through."""
    from rlhf_env.config import EnvConfig

    env = make_env(max_new_tokens=3, missing_eos_penalty=0.5)
    assert env.config == EnvConfig(max_new_tokens=3, max_prompt_tokens=12, kl_coef=0.1,
                                   missing_eos_penalty=0.5)  # fmt: skip
    config = EnvConfig(max_new_tokens=4, kl_estimator="full")
    env = TextGenerationEnv(gpt2, tokenizer, length_reward, PROMPTS, config=config, kl_coef=0.3)
    assert (env.config.max_new_tokens, env.config.kl_estimator, env.kl_coef) == (4, "full", 0.3)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) max_tokens .*max_new_tokens"):
        make_env(max_tokens=4)
    with pytest.raises(TypeError, match="must be a VectorEnvConfig, got EnvConfig"):
        TextGenerationVectorEnv(gpt2, tokenizer, length_reward, PROMPTS, config=EnvConfig())
    with pytest.raises(ValueError, match="engine must be one of"):
        make_env(engine="fastest")
    made = gym.make(
        rlhf_env.ENV_ID, policy=gpt2, tokenizer=tokenizer, reward_fn=length_reward,
        prompts=PROMPTS, max_new_tokens=2, engine="dynamic",
    )  # fmt: skip
    assert made.unwrapped.config.max_new_tokens == 2
    assert type(made.unwrapped.engine).__name__ == "DynamicEngine"
