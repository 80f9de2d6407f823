"""Property-based tests (hypothesis) of ``TextGenerationEnv`` and ``TextGenerationVectorEnv``.

Hypothesis draws seeds, prompts (any unicode text, often longer than ``max_prompt_tokens``),
episode lengths, action sequences mixing valid tokens, EOS and invalid actions (out of range,
wrong type, wrong shape), and reset patterns (full, seeded or not, partial). For every draw:

- every observation is inside the observation space;
- every reward is a finite float;
- every episode ends (terminated or truncated) by ``max_new_tokens`` steps, and is truncated
  exactly when it reaches them without EOS;
- invalid input raises the documented error (``TypeError`` / ``ValueError`` for actions,
  ``RuntimeError`` for a step after the end) and changes nothing: the episode goes on as if
  the call never happened.

The draws are derandomised (the same cases on every run); ``EXAMPLES`` sets how many.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import PROMPTS, length_reward
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer

# Overlong prompts are cut from the left, with a warning: part of what is drawn here.
pytestmark = pytest.mark.filterwarnings("ignore:a prompt of .* exceeds max_prompt_tokens")

#: Cases per property (``derandomize``: the same cases every run).
EXAMPLES = {"single": 300, "vector": 200}
MAX_PROMPT_TOKENS = 8
PROPERTY_SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow],
}

TOKENIZER = build_tiny_tokenizer()
POLICY = build_tiny_gpt2(TOKENIZER, seed=0)
VOCAB = len(TOKENIZER)
EOS = TOKENIZER.eos_token_id
_ENVS: dict[tuple, object] = {}


def single_env(max_new_tokens: int) -> TextGenerationEnv:
    """One env per length, reused across cases (reset makes each case independent)."""
    key = ("single", max_new_tokens)
    if key not in _ENVS:
        _ENVS[key] = TextGenerationEnv(
            POLICY, TOKENIZER, length_reward, PROMPTS, max_new_tokens=max_new_tokens,
            max_prompt_tokens=MAX_PROMPT_TOKENS, kl_coef=0.1,
        )  # fmt: skip
    return _ENVS[key]


def vector_env(num_envs: int, max_new_tokens: int, mode: str) -> TextGenerationVectorEnv:
    key = ("vector", num_envs, max_new_tokens, mode)
    if key not in _ENVS:
        _ENVS[key] = TextGenerationVectorEnv(
            POLICY, TOKENIZER, length_reward, PROMPTS, num_envs=num_envs,
            max_new_tokens=max_new_tokens, max_prompt_tokens=MAX_PROMPT_TOKENS, kl_coef=0.1,
            autoreset_mode=mode,
        )  # fmt: skip
    return _ENVS[key]


prompts = st.text(min_size=1, max_size=60).filter(lambda text: bool(TOKENIZER.encode(text)))
valid_tokens = st.one_of(st.integers(0, VOCAB - 1), st.just(EOS))
invalid_actions = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=VOCAB),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(0, VOCAB - 1), min_size=2, max_size=3).map(np.array),
)
single_moves = st.lists(
    st.one_of(
        valid_tokens.map(lambda token: ("step", token)),
        invalid_actions.map(lambda action: ("invalid", action)),
        st.tuples(st.just("reset"), st.one_of(st.none(), st.integers(0, 2**32 - 1))),
    ),
    max_size=24,
)


def check_observation(env: TextGenerationEnv | TextGenerationVectorEnv, obs: dict) -> None:
    assert obs in env.observation_space
    assert set(obs) == {"input_ids", "attention_mask"}


@settings(max_examples=EXAMPLES["single"], **PROPERTY_SETTINGS)
@given(
    seed=st.integers(0, 2**32 - 1),
    prompt=st.one_of(st.none(), prompts),
    max_new_tokens=st.sampled_from([1, 2, 5]),
    moves=single_moves,
)
def test_single_env_properties(seed, prompt, max_new_tokens, moves):
    env = single_env(max_new_tokens)
    options = {"prompt": prompt} if prompt is not None else None
    obs, info = env.reset(seed=seed, options=options)
    check_observation(env, obs)
    context = int(obs["attention_mask"].sum())  # prompt tokens, at most MAX_PROMPT_TOKENS
    assert 1 <= context <= MAX_PROMPT_TOKENS
    steps, over = 0, False
    for kind, value in moves:
        if kind == "reset":
            obs, _ = env.reset(seed=value)
            check_observation(env, obs)
            context, steps, over = int(obs["attention_mask"].sum()), 0, False
        elif kind == "invalid":
            with pytest.raises((TypeError, ValueError), match="token id"):
                env.step(value)
        elif over:
            with pytest.raises(RuntimeError, match=r"call env\.reset\(\)"):
                env.step(value)
        else:
            obs, reward, terminated, truncated, info = env.step(value)
            steps += 1
            check_observation(env, obs)
            assert isinstance(reward, float) and math.isfinite(reward)
            # one token more per valid step: an invalid call appended nothing
            assert int(obs["attention_mask"].sum()) == min(
                context + steps, MAX_PROMPT_TOKENS + max_new_tokens
            )
            assert terminated == (value == EOS)
            assert truncated == (not terminated and steps == max_new_tokens)
            assert steps <= max_new_tokens
            over = terminated or truncated
            if over:
                assert math.isfinite(info["score"])


vector_moves = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("invalid"), st.sampled_from(["range", "shape", "dtype"])),
        st.tuples(st.just("reset"), st.one_of(st.none(), st.integers(0, 2**32 - 1))),
        st.tuples(st.just("partial"), st.integers(0, 2**8 - 1)),
    ),
    max_size=24,
)


@settings(max_examples=EXAMPLES["vector"], **PROPERTY_SETTINGS)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_envs=st.integers(1, 3),
    max_new_tokens=st.sampled_from([1, 3]),
    mode=st.sampled_from(["NextStep", "SameStep"]),
    moves=vector_moves,
)
def test_vector_env_properties(seed, num_envs, max_new_tokens, mode, moves):
    env = vector_env(num_envs, max_new_tokens, mode)
    obs, _ = env.reset(seed=seed)
    check_observation(env, obs)
    lengths = np.zeros(num_envs, dtype=int)  # tokens of each sub-env's current episode
    awaiting = np.zeros(num_envs, dtype=bool)  # ended, reset by the next step (NextStep)
    rng = np.random.default_rng(seed)
    for kind, value in moves:
        if kind == "reset":
            obs, _ = env.reset(seed=value)
            lengths[:], awaiting[:] = 0, False
        elif kind == "partial":
            mask = np.array([(value >> i) & 1 for i in range(num_envs)], dtype=bool)
            if not mask.any():
                with pytest.raises(ValueError, match="reset_mask"):
                    env.reset(options={"reset_mask": mask})
                continue
            obs, _ = env.reset(options={"reset_mask": mask})
            lengths[mask], awaiting[mask] = 0, False
        elif kind == "invalid":
            actions = {
                "range": np.full(num_envs, VOCAB),
                "shape": np.zeros(num_envs + 1, dtype=np.int64),
                "dtype": np.zeros(num_envs, dtype=np.float32),
            }[value]
            with pytest.raises((TypeError, ValueError), match="token id"):
                env.step(actions)
        else:
            actions = np.random.default_rng(value).integers(0, VOCAB, num_envs)
            actions[rng.random(num_envs) < 0.2] = EOS
            obs, rewards, terminated, truncated, _ = env.step(actions)
            assert rewards.shape == (num_envs,) and np.isfinite(rewards).all()
            assert terminated.dtype == bool and truncated.dtype == bool
            stepped = ~awaiting  # NextStep: a row awaiting reset is reset, not stepped
            lengths[stepped] += 1
            assert (lengths <= max_new_tokens).all()
            done = terminated | truncated
            assert not done[~stepped].any()
            np.testing.assert_array_equal(terminated, stepped & (actions == EOS))
            # truncated exactly when an episode reaches max_new_tokens without EOS
            np.testing.assert_array_equal(
                truncated, stepped & ~terminated & (lengths == max_new_tokens)
            )
            lengths[done | ~stepped] = 0
            awaiting = done.copy() if mode == "NextStep" else np.zeros(num_envs, dtype=bool)
        check_observation(env, obs)
