"""Saving and restoring a learning agent: what a checkpoint of a policy-gradient agent holds.

A checkpoint (written atomically by :mod:`rlhf_agents.checkpoint`) holds the trainable
weights (``weights.safetensors``: all of them, the unfrozen top, or the LoRA adapters, and the
value head), the optimizer (``optimizer.pt``, loaded with ``weights_only=True``), every
process's RNG states (``rng.safetensors``, and the numpy states in ``state.json``), the KL
controller, the counters, the history and the config. Restoring checks each part and names
the file that does not fit.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhf_agents.checkpoint import (
    STATE_FILE,
    CheckpointError,
    load_into_parameters,
    load_tensors,
    read_state,
    resolve_checkpoint,
    save_tensors,
    write_checkpoint,
)
from rlhf_env.distributed import barrier, current_context, gather_objects

if TYPE_CHECKING:
    from rlhf_agents.policy_gradient import PolicyGradientAgent
    from rlhf_env.vector_env import TextGenerationVectorEnv

CHECKPOINT_FORMAT = 1
#: What every checkpoint's state.json holds.
REQUIRED_STATE = (
    "agent", "config", "num_timesteps", "iterations", "kl_controller", "numpy_rng",
)  # fmt: skip


def save_agent(agent: PolicyGradientAgent, path: str | Path) -> Path:
    """Write a checkpoint of ``agent`` to the run directory ``path``; returns its folder.

    With several processes every process must call it (they send their RNG states); rank 0
    writes, and all return once the checkpoint is complete.
    """
    trainable = agent.trainable_parameters()
    ranks = gather_objects((agent.rng.bit_generator.state, agent.generator.get_state()))
    state = {
        "format": CHECKPOINT_FORMAT,
        "agent": type(agent).__name__,
        "config": asdict(agent.config),
        "num_timesteps": agent.num_timesteps,
        "iterations": agent.iterations,
        "kl_controller": {"type": type(agent.kl_controller).__name__}
        | agent.kl_controller.state_dict(),
        "numpy_rng": ranks[0][0],
        "world_size": len(ranks),
        "rank_numpy_rngs": [numpy_state for numpy_state, _ in ranks[1:]],
        "history": agent.history,
    }
    generators = {_generator_key(rank): generator for rank, (_, generator) in enumerate(ranks)}

    def write(folder: Path) -> None:
        save_tensors(trainable, folder / "weights.safetensors")
        save_tensors(generators, folder / "rng.safetensors")
        torch.save(agent.optimizer.state_dict(), folder / "optimizer.pt")
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

    name = f"checkpoint-{agent.iterations:06d}"
    if agent.distributed.is_main:
        write_checkpoint(path, name, write, keep=agent.config.keep_checkpoints)
    barrier()
    return Path(path) / name


def load_agent(
    agent_class: type[PolicyGradientAgent],
    path: str | Path,
    env: TextGenerationVectorEnv,
    **config_overrides: Any,
) -> PolicyGradientAgent:
    """An ``agent_class`` agent restored from ``path`` into ``env`` (whose policy must be set up
    as when it was saved: same model, same LoRA or frozen layers); ``config_overrides``
    replace saved config fields. Every process loads its own RNG states; their number must be
    the one that wrote the checkpoint.

    Raises:
        CheckpointError: a missing, corrupt or mismatched file, named in the message.
    """
    folder = resolve_checkpoint(path)
    state = read_state(folder)
    state_file = folder / STATE_FILE
    _check_state(state, state_file, agent_class)
    try:
        config = agent_class.config_class(**{**state["config"], **config_overrides})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{state_file}: config does not fit: {error}") from error
    agent = agent_class(env, config)
    load_into_parameters(agent.trainable_parameters(), folder / "weights.safetensors")
    optimizer_file = folder / "optimizer.pt"
    try:
        agent.optimizer.load_state_dict(
            torch.load(optimizer_file, map_location=agent.device, weights_only=True)
        )
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{optimizer_file} is missing or corrupt: {error}") from error
    rank = current_context().rank
    generators = load_tensors(folder / "rng.safetensors")
    if _generator_key(rank) not in generators:
        raise CheckpointError(f"{folder / 'rng.safetensors'} has no RNG state of rank {rank}")
    agent.generator.set_state(generators[_generator_key(rank)])
    agent.rng.bit_generator.state = (
        state["numpy_rng"] if rank == 0 else state["rank_numpy_rngs"][rank - 1]
    )
    controller = dict(state["kl_controller"])
    if controller.pop("type", None) != type(agent.kl_controller).__name__:
        raise CheckpointError(
            f"{state_file} holds a {state['kl_controller'].get('type')} KL controller, the "
            f"config makes a {type(agent.kl_controller).__name__}: keep kl_target as saved"
        )
    agent.kl_controller.load_state_dict(controller)
    env.set_kl_coef(agent.kl_controller.value)
    agent.num_timesteps = int(state["num_timesteps"])
    agent.iterations = int(state["iterations"])
    agent.history = list(state.get("history", []))
    return agent


def _check_state(state: dict[str, Any], state_file: Path, agent_class: type) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{state_file} has checkpoint format {state.get('format')!r}; this version reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    missing = sorted(set(REQUIRED_STATE) - set(state))
    if missing:
        raise CheckpointError(f"{state_file} is incomplete: it lacks {missing}")
    world_size = current_context().world_size
    if state.get("world_size", 1) != world_size:
        raise CheckpointError(
            f"{state_file} was written by {state.get('world_size', 1)} process(es); resume it "
            f"with as many (this run has {world_size}), e.g. torchrun --nproc-per-node "
            f"{state.get('world_size', 1)}"
        )
    if state.get("agent") != agent_class.__name__:
        raise CheckpointError(
            f"{state_file} holds a {state.get('agent')} checkpoint; load it with that class, "
            f"not {agent_class.__name__}"
        )


def _generator_key(rank: int) -> str:
    """The torch generator state's name in ``rng.safetensors`` (rank 0: ``generator``, as
    one-process checkpoints name it)."""
    return "generator" if rank == 0 else f"generator.rank{rank}"
