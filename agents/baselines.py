"""Agents that do not learn: the baselines every trained policy is compared with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents.base import Agent
from rlhf_agents.checkpoint import STATE_FILE, read_state, resolve_checkpoint, write_checkpoint
from rlhf_agents.forward import next_token_logits
from rlhf_agents.rollout import check_rollout_env
from rlhf_agents.sampling import sample_tokens
from rlhf_env.vector_env import TextGenerationVectorEnv


class _FixedAgent(Agent):
    """Shared plumbing of the non-learning agents: a seed, and learn/save/load."""

    def __init__(self, env: TextGenerationVectorEnv, seed: int = 0) -> None:
        super().__init__(check_rollout_env(env))
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=env.device).manual_seed(self.seed)

    def learn(self, total_timesteps: int) -> Agent:
        """Nothing to learn: returns ``self`` unchanged."""
        return self

    def save(self, path: str | Path) -> Path:
        """Write the agent's kind and seed (it has no weights)."""
        state = {"agent": type(self).__name__, "seed": self.seed}

        def write(folder: Path) -> None:
            (folder / STATE_FILE).write_text(json.dumps(state) + "\n")

        return write_checkpoint(path, "checkpoint-000000", write)

    @classmethod
    def load(cls, path: str | Path, env: TextGenerationVectorEnv) -> Agent:
        """The agent saved at ``path``, acting in ``env``."""
        state = read_state(resolve_checkpoint(path))
        return cls(env, seed=int(state.get("seed", 0)))

    def _sample(self, logits: torch.Tensor, deterministic: bool) -> np.ndarray:
        if deterministic:
            return logits.argmax(dim=-1).cpu().numpy()
        return sample_tokens(logits, self.generator).cpu().numpy()


class RandomAgent(_FixedAgent):
    """Uniformly random tokens from the whole vocabulary."""

    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """Random token ids, one per observation row (``deterministic`` is ignored)."""
        ids = np.asarray(observation["input_ids"])
        shape = () if ids.ndim == 1 else (ids.shape[0],)
        return self.rng.integers(self.env.vocab_size, size=shape), None

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """One random token id per sub-env."""
        return self.rng.integers(env.vocab_size, size=env.num_envs)


class _SamplingAgent(_FixedAgent):
    """Samples from one of the env's two models: ``predict`` runs it, ``act`` reads the env's
    fast-path logits of it."""

    def _model(self) -> torch.nn.Module:
        raise NotImplementedError

    def _fast_logits(self, env: TextGenerationVectorEnv) -> torch.Tensor | None:
        raise NotImplementedError

    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """Sample (or, ``deterministic``, take the argmax of) the model's next token."""
        actions = self._sample(next_token_logits(self._model(), observation), deterministic)
        return (actions[0] if np.asarray(observation["input_ids"]).ndim == 1 else actions), None

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample from the env's logits of the model (no forward of its own)."""
        logits = self._fast_logits(env)
        assert logits is not None
        return self._sample(logits, deterministic=False)


class ReferenceAgent(_SamplingAgent):
    """Samples from the frozen reference model: the untrained baseline."""

    def _model(self) -> torch.nn.Module:
        return self.env.reference

    def _fast_logits(self, env: TextGenerationVectorEnv) -> torch.Tensor | None:
        return env.reference_logits


class PolicyAgent(_SamplingAgent):
    """Samples from the env's current policy, whatever trained it (e.g. stable-baselines3):
    the way to evaluate a policy trained outside :mod:`rlhf_agents`."""

    def _model(self) -> torch.nn.Module:
        return self.env.policy

    def _fast_logits(self, env: TextGenerationVectorEnv) -> torch.Tensor | None:
        return env.policy_logits
