"""One process of the data-parallel tests (``tests/test_distributed.py``), started by ``torchrun``
or ``accelerate launch`` (or ``python`` for the one-process reference).

Each case writes its results under ``--out`` for the test to compare:

- ``learn``: PPO and RLOO ``learn()`` on each process's shard of the prompts, with checkpoints;
  every process writes the digest of its trained parameters, its first rollout's prompts and
  responses, and what it restores from the last checkpoint.
- ``update``: one PPO and one RLOO optimiser step on a fixed global rollout of ragged response
  lengths, each process taking its half (one process: all of it); rank 0 writes the step's
  gradient (unclipped, before the optimiser step), and one process also the gradient computed
  directly, one response at a time, with token and with sequence weighting.
- ``reward_model``: Bradley-Terry training on fixed pairs (per-process batch x processes =
  the one-process batch); rank 0 writes the trained parameters and the metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from helpers import NUMBERED_PROMPTS, length_reward, vector_env
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent, RLOOConfig
from rlhf_agents.rollout import Rollout, collect_episodes
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.distributed import barrier, init_distributed, shard
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.training import RewardTrainingConfig, train_reward_model

PROMPTS = NUMBERED_PROMPTS
#: Sub-envs of the one-process reference rollout (each of 2 processes takes half).
GLOBAL_ENVS = 8
#: The response lengths of the ``update`` case's rollout: ragged, so that weighting tokens and
#: weighting sequences differ (the two processes' halves hold 15 and 19 tokens).
RESPONSE_LENGTHS = [1, 6, 2, 6, 6, 1, 6, 6]


def env_on(tokenizer, policy, prompts: list[str], num_envs: int) -> TextGenerationVectorEnv:
    """The workers' vector env: 6 response tokens, whole prompts."""
    return vector_env(
        tokenizer, length_reward, policy=policy, prompts=prompts, num_envs=num_envs,
        max_new_tokens=6, max_prompt_tokens=64,
    )  # fmt: skip


def trainable_vector(agent: PPOAgent | RLOOAgent) -> torch.Tensor:
    """Every trained parameter of ``agent``, flattened in checkpoint-name order."""
    parameters = agent.trainable_parameters()
    return torch.cat([parameters[name].detach().flatten() for name in sorted(parameters)])


def remember_first_rollout(store: dict[str, list[str]]) -> object:
    """A learn() callback keeping the first rollout's prompts and responses in ``store``."""

    def remember(_agent: object, rollout: object, _record: dict[str, float]) -> None:
        if not store:
            store.update(prompts=rollout.prompts, responses=rollout.responses)

    return remember


def ragged_sampler(seed: int, lengths: list[int]) -> object:
    """An action chooser sampling the env's policy logits with its own generator, except that
    sub-env ``i`` ends its response with EOS as its ``lengths[i]``-th token (and never before)."""
    generator = torch.Generator().manual_seed(seed)
    ends = torch.tensor(lengths)
    step = 0

    def sample(env: TextGenerationVectorEnv, _obs: object) -> np.ndarray:
        nonlocal step
        step += 1
        eos = env.tokenizer.eos_token_id
        probs = torch.softmax(env.policy_logits, dim=-1)
        probs[:, eos] = 0
        actions = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return torch.where(ends == step, eos, actions).numpy()

    return sample


def gradient_vector(agent: PPOAgent | RLOOAgent) -> torch.Tensor:
    """The ``.grad`` of every trained parameter (0 where none), flattened like
    :func:`trainable_vector`."""
    parameters = agent.trainable_parameters()
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
            for _, p in sorted(parameters.items())
        ]
    )


def direct_gradient(agent: PPOAgent | RLOOAgent, rollout: Rollout, by_tokens: bool) -> torch.Tensor:
    """The gradient of the agent's loss on ``rollout`` computed one response at a time, each
    response's token mean weighted by its share of the rollout's tokens (``by_tokens``: the
    token mean of the whole rollout, what an update must compute) or by ``1 / E`` (sequence
    weighting). One process; leaves no gradient behind."""
    with torch.no_grad():
        targets = agent.compute_advantages(rollout)
    agent.optimizer.zero_grad(set_to_none=True)
    for row in range(rollout.num_episodes):
        batch = rollout.select([row])
        width = batch.continuation_ids.shape[1]
        loss, _ = agent.loss(batch, {name: value[[row], :width] for name, value in targets.items()})
        share = batch.num_tokens / rollout.num_tokens if by_tokens else 1 / rollout.num_episodes
        (loss * share).backward()
    gradient = gradient_vector(agent)
    agent.optimizer.zero_grad(set_to_none=True)
    return gradient


def agents_to_run(env: TextGenerationVectorEnv, **shared: object) -> dict[str, object]:
    """A PPO and an RLOO agent on ``env`` (the value head seeded alike on every process)."""
    torch.manual_seed(0)
    ppo = PPOAgent(env, PPOConfig(progress_bar=False, **shared))
    rloo = RLOOAgent(env, RLOOConfig(group_size=2, progress_bar=False, **shared))
    return {"ppo": ppo, "rloo": rloo}


def case_learn(out: Path, rank: int) -> None:
    tokenizer = build_tiny_tokenizer()
    results = {}
    for name in ("ppo", "rloo"):
        policy = build_tiny_gpt2(tokenizer, seed=0)
        env = env_on(tokenizer, policy, shard(PROMPTS), 4)
        run_dir = out / f"run-{name}"
        agent = agents_to_run(
            env, learning_rate=1e-3, epochs=2, minibatch_size=2, seed=7,
            checkpoint_dir=str(run_dir), checkpoint_every=1,
        )[name]  # fmt: skip
        first_rollout: dict[str, list[str]] = {}
        before = trainable_vector(agent).clone()
        agent.learn(3 * 4 * 6, callback=remember_first_rollout(first_rollout))
        after = trainable_vector(agent)
        restored = type(agent).load(run_dir, env, progress_bar=False)
        results[name] = {
            "digest": hashlib.sha256(after.numpy().tobytes()).hexdigest(),
            "moved": float((after - before).abs().max()),
            "timesteps": agent.num_timesteps,
            "iterations": agent.iterations,
            "first_rollout": first_rollout,
            "restored_equal": bool(torch.equal(trainable_vector(restored), after)),
            "restored_numpy_rng": restored.rng.bit_generator.state == agent.rng.bit_generator.state,
            "restored_generator": bool(
                torch.equal(restored.generator.get_state(), agent.generator.get_state())
            ),
            "history_kl": [record["rollout/kl"] for record in agent.history],
        }
    (out / f"learn-rank{rank}.json").write_text(json.dumps(results, indent=1))


def case_update(out: Path, rank: int, world_size: int) -> None:
    tokenizer = build_tiny_tokenizer()
    tensors = {}
    for name in ("ppo", "rloo"):
        policy = build_tiny_gpt2(tokenizer, seed=0)
        # The same global rollout on every process, of ragged response lengths.
        collector = env_on(tokenizer, policy, PROMPTS, GLOBAL_ENVS)
        prompts = [prompt for prompt in PROMPTS[: GLOBAL_ENVS // 2] for _ in range(2)]
        rollout = collect_episodes(collector, ragged_sampler(3, RESPONSE_LENGTHS), prompts, seed=0)
        assert rollout.lengths.tolist() == RESPONSE_LENGTHS, rollout.lengths
        local = GLOBAL_ENVS // world_size
        mine = rollout.select(torch.arange(rank * local, (rank + 1) * local))
        env = env_on(tokenizer, policy, PROMPTS, local)
        # One optimiser step of 2 micro-batches, unclipped: its .grad is the raw gradient.
        agent = agents_to_run(
            env, learning_rate=1e-3, epochs=1, minibatch_size=local,
            gradient_accumulation_steps=2, max_grad_norm=1e9,
        )[name]  # fmt: skip
        if world_size == 1:
            tensors[f"{name}.token_weighted"] = direct_gradient(agent, rollout, by_tokens=True)
            tensors[f"{name}.sequence_weighted"] = direct_gradient(agent, rollout, by_tokens=False)
        stats = agent.update(mine)
        tensors[f"{name}.gradient"] = gradient_vector(agent)
        losses = sorted(key for key in stats if key.startswith("losses/"))  # policy, entropy...
        tensors[f"{name}.losses"] = torch.tensor([stats[key] for key in losses])
    if rank == 0:
        save_file(tensors, out / f"update-world{world_size}.safetensors")


def case_reward_model(out: Path, rank: int, world_size: int) -> None:
    subjects = ["The film", "This movie", "The plot", "The acting", "The music", "The ending"]
    tokenizer = build_tiny_tokenizer(
        corpus=[f"{s} was great. {s} was awful." for s in subjects] * 3, vocab_size=320
    )
    backbone = out / "backbone"
    if rank == 0:  # transformers saves on the main process only
        config = GPT2Config(
            n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
        )  # fmt: skip
        torch.manual_seed(0)
        GPT2ForSequenceClassification(config).save_pretrained(backbone)
        tokenizer.save_pretrained(backbone)
    barrier()
    pairs = [
        PreferencePair(subjects[i % 6], f" was {'really ' * (i % 3)}great.",
                       f" was {'really ' * (i % 2)}awful.")
        for i in range(40)
    ]  # fmt: skip
    reward_model = RewardModel.from_backbone(backbone, device="cpu")
    metrics = train_reward_model(
        reward_model,
        pairs,
        RewardTrainingConfig(
            epochs=2,
            batch_size=8 // world_size,
            group_by_prompt=False,
            learning_rate=1e-3,
            eval_fraction=0.34,
        ),
        progress=False,
    )
    parameters = dict(reward_model.model.named_parameters())
    vector = torch.cat([parameters[name].detach().flatten() for name in sorted(parameters)])
    if rank == 0:
        save_file(
            {"parameters": vector, "loss": torch.tensor(metrics["loss"])},
            out / f"reward-model-world{world_size}.safetensors",
        )
        summary = {key: metrics[key] for key in ("eval_accuracy", "train_pairs", "eval_pairs")}
        summary["normalization"] = metrics["normalization"]
        (out / f"reward-model-world{world_size}.json").write_text(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", nargs="+", default=["learn", "update", "reward_model"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    context = init_distributed()
    if "learn" in args.cases:
        case_learn(args.out, context.rank)
    if "update" in args.cases:
        case_update(args.out, context.rank, context.world_size)
    if "reward_model" in args.cases:
        case_reward_model(args.out, context.rank, context.world_size)
    (args.out / f"done-rank{context.rank}-of{context.world_size}").touch()


if __name__ == "__main__":
    main()
