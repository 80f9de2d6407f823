"""Shared fixtures: tiny random-initialised models and tokenizers built offline (the plain
helpers behind them are in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import PROMPTS, length_reward, make_word_start_reward, save_tiny_backbone

from rlhf_env import TextGenerationEnv
from rlhf_env.models import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer


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


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory):
    """A tiny GPT-2 reward-model backbone with its tokenizer, saved like a hub checkpoint."""
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone"))


@pytest.fixture
def learning_threads():
    """Torch's thread count pinned for a learning test (``learning.LEARNING_THREADS``) and
    restored afterwards: the test's figures then do not depend on the machine's cores or on
    ``OMP_NUM_THREADS``."""
    from learning import LEARNING_THREADS, torch_threads

    with torch_threads(LEARNING_THREADS) as threads:
        yield threads
