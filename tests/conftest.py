"""Shared fixtures: tiny random-initialised models and tokenizers built offline."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from rlhf_env import TextGenerationEnv
from rlhf_env.models import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer

PROMPTS = [
    "This movie was",
    "I think the acting",
    "The plot of this film is",
    "Honestly, the music",
    "One of the best",
]


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """A deterministic reward: a tenth of the response's character count."""
    return [len(response) / 10 for response in responses]


def make_word_start_reward(tokenizer) -> Callable[[list[str], list[str]], list[float]]:
    """The agents' easy task: the share of response tokens that start a word (a leading space
    and at least one more character). 34 of the tiny tokenizer's 384 tokens qualify, so a
    random-init policy scores about 0.06 and the best policy 1.0."""
    targets = {
        i
        for i in range(len(tokenizer))
        if len(text := tokenizer.decode([i])) > 1 and text[0] == " "
    }

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        scores = []
        for response in responses:
            ids = tokenizer.encode(response, add_special_tokens=False)
            scores.append(sum(i in targets for i in ids) / max(len(ids), 1))
        return scores

    return reward


@pytest.fixture(scope="session")
def word_start_reward(tokenizer):
    return make_word_start_reward(tokenizer)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def gpt2(tokenizer) -> torch.nn.Module:
    return build_tiny_gpt2(tokenizer, seed=0)


@pytest.fixture(scope="session")
def gpt2_other(tokenizer) -> torch.nn.Module:
    """A second GPT-2 with other weights: a reference that differs from the policy."""
    return build_tiny_gpt2(tokenizer, seed=1).requires_grad_(False)


@pytest.fixture(scope="session")
def llama(tokenizer) -> torch.nn.Module:
    return build_tiny_llama(tokenizer, seed=0)


@pytest.fixture
def make_env(tokenizer, gpt2) -> Callable[..., TextGenerationEnv]:
    """Build a TextGenerationEnv on the tiny GPT-2 with overridable keyword arguments."""

    def make(**overrides) -> TextGenerationEnv:
        kwargs = dict(
            policy=gpt2,
            tokenizer=tokenizer,
            reward_fn=length_reward,
            prompts=PROMPTS,
            max_new_tokens=6,
            max_prompt_tokens=12,
            kl_coef=0.1,
        )
        kwargs.update(overrides)
        return TextGenerationEnv(**kwargs)

    return make
