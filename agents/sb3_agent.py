"""stable-baselines3's own PPO behind the :class:`~rlhf_agents.Agent` interface, so that it is
trained, evaluated and compared exactly like the agents here (``rlhf-env bench suite``).

::

    env = TextGenerationVectorEnv(..., autoreset_mode="SameStep")  # SB3 resets in that step
    agent = SB3PPOAgent(env, seed=0, learning_rate=1e-5, n_epochs=4)
    agent.learn(16_384)                  # generated tokens, as every agent counts them
    evaluate(agent, env, prompts=held_out)

SB3's PPO runs unmodified on :class:`rlhf_env.sb3_vec_env.SB3VecEnv` with
:class:`rlhf_agents.sb3_policy.LanguageModelPolicy`, whose actor is the env's policy module
itself (trained in place) and whose action distribution is that module's next-token logits.
So :meth:`SB3PPOAgent.act` samples from the env's fast-path logits of the same module: the
same distribution as SB3's ``policy(obs)``, without a second forward.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents.base import Agent
from rlhf_agents.checkpoint import STATE_FILE, read_state, resolve_checkpoint, write_checkpoint
from rlhf_agents.rollout import check_rollout_env
from rlhf_agents.sampling import sample_tokens
from rlhf_env.extras import missing_extra
from rlhf_env.vector_env import TextGenerationVectorEnv

try:
    from stable_baselines3 import PPO

    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv
except ImportError as error:
    raise missing_extra(
        "stable_baselines3", "sb3", "rlhf_agents.sb3_agent (SB3PPOAgent)"
    ) from error

#: The file of a checkpoint holding SB3's parameters (policy, value head, optimizer).
SB3_FILE = "sb3_ppo.zip"


class SB3PPOAgent(Agent):
    """stable-baselines3's ``PPO(LanguageModelPolicy, SB3VecEnv(env))`` as an agent.

    A rollout is ``n_steps`` steps of every sub-env (default: ``max_new_tokens``, so one
    response per sub-env when none ends early); ``num_timesteps`` counts SB3's steps, which
    are generated tokens (a ``SameStep`` env has no idle steps), so token budgets compare with
    the other agents'. Like theirs, ``learn`` stops at the first rollout boundary at or past
    the budget.

    Args:
        env: a vector env built with ``autoreset_mode="SameStep"``.
        seed: SB3's seed (its global seeding, the env's first reset, action sampling).
        n_steps: steps per sub-env per rollout (None: ``env.max_new_tokens``).
        batch_size: transitions per optimiser step (None: ``n_steps x min(8, num_envs)``,
            i.e. about 8 responses, as the other agents' ``minibatch_size``).
        gamma: discount per token (1: the score at the end counts in full, as here).
        **ppo_kwargs: any other argument of ``stable_baselines3.PPO`` (``learning_rate``,
            ``n_epochs``, ``clip_range``, ``vf_coef``, ...).
    """

    def __init__(
        self,
        env: TextGenerationVectorEnv,
        seed: int = 0,
        n_steps: int | None = None,
        batch_size: int | None = None,
        gamma: float = 1.0,
        **ppo_kwargs: Any,
    ) -> None:
        super().__init__(check_rollout_env(env))
        n_steps = int(n_steps or env.max_new_tokens)
        if batch_size is None:
            batch_size = n_steps * min(8, env.num_envs)
        self.seed = int(seed)
        self.config: dict[str, Any] = {
            "n_steps": n_steps, "batch_size": int(batch_size), "gamma": gamma, **ppo_kwargs,
        }  # fmt: skip
        self.model = PPO(
            LanguageModelPolicy,
            SB3VecEnv(env),
            policy_kwargs={"model": env.policy},
            seed=self.seed,
            device=env.device,
            verbose=0,
            **self.config,
        )
        self.generator = torch.Generator(device=env.device).manual_seed(self.seed)

    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """SB3's ``model.predict`` (the policy's next token for an observation or a batch)."""
        actions, _ = self.model.predict(observation, deterministic=deterministic)
        return np.asarray(actions), None

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per sub-env from ``env.policy_logits``: the logits of the module
        SB3 trains, i.e. its policy's action distribution."""
        assert env.policy_logits is not None
        return sample_tokens(env.policy_logits, self.generator).cpu().numpy()

    def learn(self, total_timesteps: int, callback: Any = None) -> SB3PPOAgent:
        """Run SB3's ``learn`` until ``num_timesteps >= total_timesteps`` (tokens in all, so a
        second call goes on where the first stopped); ``callback`` is SB3's."""
        remaining = int(total_timesteps) - self.num_timesteps
        if remaining > 0:
            self.model.learn(
                remaining, callback=callback, reset_num_timesteps=self.model.num_timesteps == 0
            )
        self.num_timesteps = int(self.model.num_timesteps)
        return self

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint under the run directory ``path``: SB3's parameters (the LM, the
        value head, the optimizer) and the agent's settings."""
        state = {
            "agent": type(self).__name__,
            "seed": self.seed,
            "config": self.config,
            "num_timesteps": self.num_timesteps,
        }

        def write(folder: Path) -> None:
            # The LM is the env's policy: SB3 would pickle it whole inside policy_kwargs.
            self.model.save(folder / SB3_FILE, exclude=["policy_kwargs"])
            (folder / STATE_FILE).write_text(json.dumps(state, default=str) + "\n")

        return write_checkpoint(path, f"checkpoint-{self.num_timesteps:09d}", write)

    @classmethod
    def load(cls, path: str | Path, env: TextGenerationVectorEnv) -> SB3PPOAgent:
        """The agent saved at ``path``, acting in (and training the policy of) ``env``."""
        checkpoint = resolve_checkpoint(path)
        state = read_state(checkpoint)
        agent = cls(env, seed=int(state.get("seed", 0)), **state.get("config", {}))
        agent.model.set_parameters(str(checkpoint / SB3_FILE), exact_match=True)
        agent.model.num_timesteps = agent.num_timesteps = int(state.get("num_timesteps", 0))
        return agent
