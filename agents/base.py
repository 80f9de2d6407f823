"""The agent interface, in the shape stable-baselines3 users know."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.vector_env import TextGenerationVectorEnv


class Agent(ABC):
    """An agent acting in a :class:`~rlhf_env.TextGenerationVectorEnv`.

    - ``predict(observation, deterministic=False) -> (actions, None)``: token ids for one
      observation or a batch, from the observation alone (SB3's signature; the second item is
      the recurrent state, always ``None``).
    - ``act(env, observation) -> actions``: the same choice inside a rollout, allowed to read the
      env's documented fast path (``env.policy_logits`` / ``env.reference_logits``) instead of
      running a forward of its own.
    - ``learn(total_timesteps) -> self``: train until ``total_timesteps`` generated tokens in
      all (a loaded checkpoint's count included, so it resumes a run where it stopped).
    - ``save(path)`` / ``Agent.load(path, env)``.
    """

    def __init__(self, env: TextGenerationVectorEnv) -> None:
        self.env = env
        self.num_timesteps = 0

    @abstractmethod
    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """Token ids for an observation ``(L,)`` or a batch ``(B, L)``."""

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """One token id per sub-env (default: :meth:`predict` on the batch)."""
        return self.predict(observation)[0]

    @abstractmethod
    def learn(self, total_timesteps: int) -> Agent:
        """Train until ``num_timesteps >= total_timesteps``; returns ``self``."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write a checkpoint under the run directory ``path``; returns its folder."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, env: TextGenerationVectorEnv) -> Agent:
        """An agent restored from ``path`` (a run directory or a checkpoint) acting in ``env``."""
