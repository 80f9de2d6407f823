"""Shared compute under ``frozen:N``: the trunk's views, the environments and the updates.

The engines' side (every architecture, both engines, restarts and appends, the compiled step)
is in ``test_engines.py``. Here: the views of :mod:`rlhf_env.models.trunk` against the model
itself, the vector env with sharing on and off under every autoreset mode, and the agents'
update from a trunk computed once per rollout against the whole forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    assert_same_traces,
    behaviour_is,
    dialogue_rollout,
    forward_shapes,
    frozen_pair,
    random_ids,
    roll,
    vector_env,
)

from rlhf_agents import make_agent
from rlhf_env.models.efficient import (
    add_lora,
    apply_training_setup,
    decoder_layers,
    freeze_lower_layers,
)
from rlhf_env.models.tiny import TINY_ARCHITECTURES, build_tiny_causal_lm
from rlhf_env.models.trunk import (
    TrunkHandoff,
    frozen_trunk_depth,
    recording_view,
    replaying_view,
    trunk_view,
)


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_views_give_the_models_numbers_and_copy_nothing(tokenizer, architecture):
    """Recording the policy's trunk and replaying it into the reference's upper blocks, or
    into the policy's own, gives the models' logits bit for bit (left padding included); the
    views hold the models' own parameters, and the models keep their own blocks."""
    policy, reference = frozen_pair(architecture, tokenizer, depth=1)
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


@pytest.mark.parametrize("mode", ["NextStep", "SameStep", "Disabled"])
def test_vector_env_with_a_shared_trunk_equals_it_without(tokenizer, mode):
    """frozen:2 on the 4-block tiny Llama: under every autoreset mode, 30 steps of 3 rows with
    staggered episode ends give the same observations, flags, rewards and KL (1e-5) with
    ``share_trunk`` on (the engine shares 2 blocks) and off (none)."""
    policy, reference = frozen_pair("llama", tokenizer, depth=2)
    traces = []
    for share in (True, False):
        venv = vector_env(
            tokenizer, policy=policy, reference=reference, num_envs=3, max_new_tokens=5,
            autoreset_mode=mode, share_trunk=share,
        )  # fmt: skip
        assert venv.engine.trunk.depth == (2 if share else 0)
        traces.append(roll(venv, steps=30, seed=0))
    assert sum(int(step[2].sum() + step[3].sum()) for step in traces[0]) >= 10  # episodes ended
    assert_same_traces(*traces)
    assert max(np.abs(step[4]).max() for step in traces[0]) > 1e-3  # the KL is not trivially 0


def _ragged_rollout(tokenizer, policy, common: int = 0):
    """Four episodes: prompts of ``common`` shared tokens and 2-5 of their own, continuations
    of 2-7 tokens with inserted user turns."""
    generator = torch.Generator().manual_seed(0)
    kinds = ["aaaiiaa", "aaaaa", "aiiiaaa", "aa"]
    shared = random_ids(generator, common, len(tokenizer))
    prompts = [shared + random_ids(generator, n, len(tokenizer)) for n in (3, 5, 4, 2)]
    continuations = [random_ids(generator, len(kind), len(tokenizer)) for kind in kinds]
    return behaviour_is(policy, dialogue_rollout(prompts, continuations, kinds))


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma3_text"])
@pytest.mark.parametrize("name", ["ppo", "rloo", "grpo"])
@pytest.mark.parametrize(
    "setup, common", [("frozen:1", 0), ("frozen:1", 18), ("full", 18), ("lora:4", 18)]
)
def test_shared_compute_in_the_update_changes_no_gradient(
    tokenizer, architecture, name, setup, common
):
    """An update of 2 epochs x 2 micro-batches (each trimmed to its own widths) on a ragged
    dialogue rollout, with ``share_trunk`` and ``share_prefix`` on and off: every trainable
    parameter gets the same gradient (1e-6; the value head's too). Under frozen:1 the frozen
    block runs once per micro-batch-sized chunk of the rollout instead of in every forward;
    prompts that share 18 tokens (Gemma 3's sliding window is 5) run them once, in the trunk
    pass under frozen:1 and in every forward under full fine-tuning and LoRA."""
    rollout = None
    results = []
    for on in (True, False):
        if setup == "frozen:1":
            policy, reference = frozen_pair(architecture, tokenizer, depth=1)
        else:  # full: the env copies the reference; LoRA: the adapters off
            model = build_tiny_causal_lm(architecture, tokenizer, seed=0)
            policy, reference = apply_training_setup(model, setup)
        env = vector_env(tokenizer, policy=policy, reference=reference, num_envs=4)
        options = {} if name == "ppo" else {"group_size": 2}
        agent = make_agent(
            name, env, minibatch_size=4, gradient_accumulation_steps=2, epochs=2, ent_coef=0.01,
            progress_bar=False, share_trunk=on, share_prefix=on, **options,
        )  # fmt: skip
        assert (agent.frozen_trunk is not None) == (on and setup == "frozen:1")
        if name == "ppo":  # a zero-initialised head has zero values and gradients everywhere
            torch.nn.init.normal_(
                agent.value_head.linear.weight, generator=torch.Generator().manual_seed(0)
            )
        # Learning rate 0: every step sees the same weights, the last step's .grad is compared.
        agent.optimizer = torch.optim.SGD(list(agent.trainable_parameters().values()), lr=0.0)
        rollout = rollout if rollout is not None else _ragged_rollout(tokenizer, policy, common)
        critic = decoder_layers(agent.critic)[-1] if name == "ppo" else torch.nn.Identity()
        if name == "ppo":  # PPO's separate critic shares the frozen block, copies the others
            shares = decoder_layers(agent.critic)[0] is decoder_layers(policy)[0]
            assert shares == (setup == "frozen:1")
        with forward_shapes(decoder_layers(policy)[0]) as calls, forward_shapes(critic) as critics:
            agent.update(rollout)
        gradients = {n: p.grad for n, p in agent.trainable_parameters().items()}
        results.append((gradients, calls, critics))
    (shared, shared_calls, shared_critic), (whole, whole_calls, whole_critic) = results
    assert shared.keys() == whole.keys() and all(g is not None for g in whole.values())
    assert max(float(g.abs().max()) for g in whole.values()) > 1e-3
    for key, gradient in whole.items():
        torch.testing.assert_close(shared[key], gradient, atol=1e-6, rtol=0, msg=key)
    forwards = 4  # 2 epochs x 2 micro-batches
    # PPO's critic: the values (2 chunks), then every loss forward, each as the policy's (the
    # shared prefix, one row, then the tails); through the frozen block, which it shares under
    # frozen:1, only when the trunk's output is not shared
    critic_forwards = 2 + forwards if name == "ppo" else 0
    assert len(whole_critic) == critic_forwards
    assert len(shared_critic) == critic_forwards * (2 if common else 1)
    assert len(whole_calls) == forwards + (critic_forwards if setup == "frozen:1" else 0)
    if setup != "frozen:1":  # every forward: the prefix (one row), then the tails
        assert shared_calls[::2] == [(1, common)] * forwards and len(shared_calls) == 2 * forwards
    elif common:  # the trunk pass alone: the prefix, then 2 chunks of tails
        assert len(shared_calls) == 3 and shared_calls[0] == (1, common)
    else:  # the trunk pass alone: 2 chunks of whole episodes, each trimmed to its widths
        chunks = [rollout.select(torch.arange(first, first + 2)) for first in (0, 2)]
        widths = [chunk.prompt_ids.shape[1] + chunk.continuation_ids.shape[1] for chunk in chunks]
        assert shared_calls == [(2, width) for width in widths]
    tokens = [sum(rows * width for rows, width in calls) for calls in (shared_calls, whole_calls)]
    assert tokens[0] < tokens[1], tokens


def _read_columns(rollout) -> torch.Tensor:
    """``(E, P + R)`` bool: the columns the env's models read, every prompt token and every
    continuation token but each episode's last."""
    continuation = rollout.context_mask.bool().clone()
    last = rollout.context_lengths - 1
    continuation[torch.arange(rollout.num_episodes), last] = False
    return torch.cat([rollout.prompt_mask.bool(), continuation], dim=1)


@pytest.mark.parametrize("case", ["ppo, prefixed prompts", "rloo, groups", "ppo, dialogue"])
def test_the_update_starts_from_the_trunk_output_the_env_kept(tokenizer, case):
    """frozen:N with a shared trunk, the static engine: the env keeps the trunk's output while
    it generates (rows started from a shared prefix, rows copied from the same prompt of an
    RLOO group, inserted dialogue turns), the rollout carries it, and it equals the trunk pass
    over the rollout at every token the models read (1e-5). An update from it runs no frozen
    block, and every parameter gets the gradient of the plain forward (share_trunk off)."""
    from test_dialogue_agents import EndsTurns, dialogue_env
    from test_prefix_cache import PREFIXED

    from rlhf_agents.frozen_trunk import FrozenTrunk
    from rlhf_agents.rollout import collect_episodes
    from rlhf_env.dialogue import IncrementalChatTemplate
    from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer

    name = case.split(",")[0]
    if case.endswith("dialogue"):
        chat_tokenizer = build_tiny_tokenizer(chat_template=True)
        policy, reference = freeze_lower_layers(build_tiny_llama(chat_tokenizer, seed=0), 1)
        env = dialogue_env((chat_tokenizer, policy), reference=reference, engine="static")
    else:
        policy, reference = frozen_pair("llama", tokenizer, depth=2)
        env = vector_env(
            tokenizer, policy=policy, reference=reference, prompts=PREFIXED, num_envs=4,
            max_new_tokens=6, max_prompt_tokens=64, engine="static",
        )  # fmt: skip
    options = {} if name == "ppo" else {"group_size": 2}
    agents = [
        make_agent(name, env, minibatch_size=4, epochs=2, progress_bar=False, seed=0,
                   share_trunk=share, **options)
        for share in (True, False)
    ]  # fmt: skip
    assert agents[0].trunk_from_env and not agents[1].trunk_from_env
    if case.endswith("dialogue"):
        end = IncrementalChatTemplate(chat_tokenizer).end_of_turn_id
        rollout = collect_episodes(env, EndsTurns(agents[0], end), seed=0)
        assert rollout.inserted_mask.sum() > 0
    else:
        rollout = agents[0].collect()
    assert rollout.trunk_states is not None
    cache = env.engine.prefix_cache
    if not case.endswith("dialogue"):  # rows started from a prefix, or copied
        assert cache.copies >= 2 if name == "rloo" else cache.misses >= 2
    computed = FrozenTrunk.of(policy).states(rollout, chunk=4, share_prefix=False)
    read = _read_columns(rollout)
    torch.testing.assert_close(rollout.trunk_states[read], computed[read], atol=1e-5, rtol=0)
    results = []
    for agent in agents:
        if name == "ppo":
            torch.nn.init.normal_(
                agent.value_head.linear.weight, generator=torch.Generator().manual_seed(0)
            )
        agent.optimizer = torch.optim.SGD(list(agent.trainable_parameters().values()), lr=0.0)
        critic = decoder_layers(agent.critic)[0] if name == "ppo" else torch.nn.Identity()
        with forward_shapes(decoder_layers(policy)[0]) as calls, forward_shapes(critic) as critics:
            agent.update(rollout)
        grads = {n: p.grad for n, p in agent.trainable_parameters().items()}
        results.append((grads, calls + critics))
    (kept, kept_calls), (whole, whole_calls) = results
    assert kept_calls == [] and len(whole_calls) >= 2  # the critic runs no frozen block either
    assert max(float(g.abs().max()) for g in whole.values()) > 1e-3
    for key, gradient in whole.items():
        torch.testing.assert_close(kept[key], gradient, atol=1e-5, rtol=1e-4, msg=key)
