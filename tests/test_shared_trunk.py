"""Shared compute under ``frozen:N``: the trunk's views, the environments and the updates.

The engines' side (every architecture, both engines, restarts and appends, the compiled step)
is in ``test_engines.py``. Here: the views of :mod:`rlhf_env.models.trunk` against the model
itself, the vector env with sharing on and off under every autoreset mode, and the agents'
update from a trunk computed once per rollout against the whole forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers import behaviour_is, dialogue_rollout, random_ids, vector_env

from rlhf_agents import make_agent
from rlhf_env.models.efficient import add_lora, decoder_layers, freeze_lower_layers
from rlhf_env.models.tiny import TINY_ARCHITECTURES, build_tiny_causal_lm
from rlhf_env.models.trunk import (
    TrunkHandoff,
    frozen_trunk_depth,
    recording_view,
    replaying_view,
    trunk_view,
)


def _frozen(architecture: str, tokenizer, depth: int = 1):
    """``(policy, reference)`` of frozen:``depth``, the policy's trained weights moved."""
    policy, reference = freeze_lower_layers(
        build_tiny_causal_lm(architecture, tokenizer, seed=0), depth
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return policy, reference


@contextlib.contextmanager
def _counting_forwards(module: torch.nn.Module) -> Iterator[list[int]]:
    count = [0]
    handle = module.register_forward_hook(lambda *args: count.__setitem__(0, count[0] + 1))
    try:
        yield count
    finally:
        handle.remove()


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_views_give_the_models_numbers_and_copy_nothing(tokenizer, architecture):
    """Recording the policy's trunk and replaying it into the reference's upper blocks, or
    into the policy's own, gives the models' logits bit for bit (left padding included); the
    views hold the models' own parameters, and the models keep their own blocks."""
    policy, reference = _frozen(architecture, tokenizer)
    handoff = TrunkHandoff()
    recording, replaying = recording_view(policy, 1, handoff), replaying_view(reference, 1, handoff)
    ids = torch.randint(5, 300, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    inputs = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(0))
    with torch.no_grad():
        assert torch.equal(recording(**inputs).logits, policy(**inputs).logits)
        assert torch.equal(replaying(**inputs).logits, reference(**inputs).logits)
        trunk_view(policy, 1, handoff)(**inputs, logits_to_keep=1)
        own = replaying_view(policy, 1, handoff)(**inputs).logits
        assert torch.equal(own, policy(**inputs).logits)
        assert not torch.equal(own, reference(**inputs).logits)  # the control
    for view, model in ((recording, policy), (replaying, reference)):
        own = {p.data_ptr() for p in model.parameters()}
        assert {p.data_ptr() for p in view.parameters()} <= own
    blocks = decoder_layers(policy)  # the model's own, not the views' stand-ins
    assert all(type(block).__name__.endswith(("Layer", "Block")) for block in blocks)
    handoff.clear()
    with pytest.raises(RuntimeError, match="recorded"):
        replaying(**inputs)


def test_frozen_trunk_depth(tokenizer):
    model = build_tiny_causal_lm("llama", tokenizer)
    assert frozen_trunk_depth(model) == 0  # full fine-tuning
    assert frozen_trunk_depth(freeze_lower_layers(model, 3)[0]) == 3
    assert frozen_trunk_depth(add_lora(build_tiny_causal_lm("llama", tokenizer), r=2)[0]) == 0


def _roll(venv, steps: int, seed: int) -> list[tuple]:
    """Step ``venv`` with seeded random actions, resetting finished rows as its autoreset mode
    asks; returns every step's observations, rewards, flags and KL."""
    rng = np.random.default_rng(seed)
    observation, _ = venv.reset(seed=seed)
    trace = []
    for _ in range(steps):
        actions = rng.integers(5, 300, size=venv.num_envs)
        observation, reward, terminated, truncated, info = venv.step(actions)
        acted = info.get("_kl", np.zeros(venv.num_envs, dtype=bool))  # rows that acted
        kl = np.where(acted, info.get("kl", 0.0), 0.0)
        trace.append((observation["input_ids"].copy(), reward, terminated, truncated, kl))
        ended = terminated | truncated
        if venv.autoreset_mode.name == "DISABLED" and ended.any():
            observation, _ = venv.reset(options={"reset_mask": ended})
    return trace


@pytest.mark.parametrize("mode", ["NextStep", "SameStep", "Disabled"])
def test_vector_env_with_a_shared_trunk_equals_it_without(tokenizer, mode):
    """frozen:2 on the 4-block tiny Llama: under every autoreset mode, 30 steps of 3 rows with
    staggered episode ends give the same observations, flags, rewards and KL (1e-5) with
    ``share_trunk`` on (the engine shares 2 blocks) and off (none)."""
    policy, reference = _frozen("llama", tokenizer, depth=2)
    traces = []
    for share in (True, False):
        venv = vector_env(
            tokenizer, policy=policy, reference=reference, num_envs=3, max_new_tokens=5,
            autoreset_mode=mode, share_trunk=share,
        )  # fmt: skip
        assert venv.engine.trunk.depth == (2 if share else 0)
        traces.append(_roll(venv, steps=30, seed=0))
    assert sum(int(step[2].sum() + step[3].sum()) for step in traces[0]) >= 10  # episodes ended
    for shared, unshared in zip(*traces, strict=True):
        assert np.array_equal(shared[0], unshared[0])
        assert np.array_equal(shared[2], unshared[2]) and np.array_equal(shared[3], unshared[3])
        np.testing.assert_allclose(shared[1], unshared[1], atol=1e-5, rtol=0)
        np.testing.assert_allclose(shared[4], unshared[4], atol=1e-5, rtol=0)
    assert max(np.abs(step[4]).max() for step in traces[0]) > 1e-3  # the KL is not trivially 0


def _ragged_rollout(tokenizer, policy):
    """Four episodes: prompts of 2-5 tokens, continuations of 2-7 with inserted user turns."""
    generator = torch.Generator().manual_seed(0)
    kinds = ["aaaiiaa", "aaaaa", "aiiiaaa", "aa"]
    prompts = [random_ids(generator, n, len(tokenizer)) for n in (3, 5, 4, 2)]
    continuations = [random_ids(generator, len(kind), len(tokenizer)) for kind in kinds]
    return behaviour_is(policy, dialogue_rollout(prompts, continuations, kinds))


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma3_text"])
@pytest.mark.parametrize("name", ["ppo", "rloo", "grpo"])
def test_update_from_the_kept_trunk_has_the_same_gradients(tokenizer, architecture, name):
    """frozen:1: an update of 2 epochs x 2 micro-batches (each trimmed to its own widths) on a
    ragged dialogue rollout gives every trainable parameter the gradient of the whole forward
    (1e-6; the value head's too), with the frozen block run once per micro-batch-sized chunk
    of the rollout instead of in every forward."""
    rollout = None
    results = []
    for share in (True, False):
        policy, reference = _frozen(architecture, tokenizer)
        env = vector_env(tokenizer, policy=policy, reference=reference, num_envs=4)
        options = {} if name == "ppo" else {"group_size": 2}
        agent = make_agent(
            name, env, minibatch_size=4, gradient_accumulation_steps=2, epochs=2, ent_coef=0.01,
            progress_bar=False, share_trunk=share, **options,
        )  # fmt: skip
        assert (agent.frozen_trunk is not None) == share
        if name == "ppo":  # a zero-initialised head has zero values and gradients everywhere
            torch.nn.init.normal_(
                agent.value_head.linear.weight, generator=torch.Generator().manual_seed(0)
            )
        # Learning rate 0: every step sees the same weights, the last step's .grad is compared.
        agent.optimizer = torch.optim.SGD(list(agent.trainable_parameters().values()), lr=0.0)
        rollout = rollout if rollout is not None else _ragged_rollout(tokenizer, policy)
        with _counting_forwards(decoder_layers(policy)[0]) as calls:
            agent.update(rollout)
        gradients = {n: p.grad for n, p in agent.trainable_parameters().items()}
        results.append((gradients, calls[0]))
    (shared, shared_calls), (whole, whole_calls) = results
    assert shared.keys() == whole.keys() and all(g is not None for g in whole.values())
    assert max(float(g.abs().max()) for g in whole.values()) > 1e-3
    for key, gradient in whole.items():
        torch.testing.assert_close(shared[key], gradient, atol=1e-6, rtol=0, msg=key)
    assert shared_calls == 2  # 4 episodes in chunks of 2
    assert whole_calls == (6 if name == "ppo" else 4)  # (values: 2) + 2 epochs x 2
