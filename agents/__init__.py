"""Agents that act in and learn from the rlhf_env environments.

============== ===================================================================
``RandomAgent``    uniformly random tokens
``ReferenceAgent`` samples from the frozen reference: the baseline of every result
``PolicyAgent``    samples from the env's current policy (to evaluate one trained elsewhere)
``PPOAgent``       PPO with a value head and token-level GAE (:class:`PPOConfig`)
``RLOOAgent``      critic-free, group baseline: RLOO or GRPO-style (:class:`RLOOConfig`)
============== ===================================================================

Select one by name with :func:`make_agent` (``"random"``, ``"reference"``, ``"policy"``,
``"ppo"``, ``"rloo"``, ``"grpo"``). :mod:`agents.sb3` holds ``LanguageModelPolicy``, the policy
class for stable-baselines3's own PPO and A2C (imported on demand).
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent
from agents.baselines import PolicyAgent, RandomAgent, ReferenceAgent
from agents.config import PolicyGradientConfig, PPOConfig, RLOOConfig
from agents.evaluation import Evaluation, evaluate
from agents.ppo import PPOAgent
from agents.rloo import RLOOAgent
from rlhf_env.vector_env import TextGenerationVectorEnv

#: Agent classes by the name :func:`make_agent` and the CLI take.
AGENTS: dict[str, type[Agent]] = {
    "random": RandomAgent,
    "reference": ReferenceAgent,
    "policy": PolicyAgent,
    "ppo": PPOAgent,
    "rloo": RLOOAgent,
    "grpo": RLOOAgent,
}


def make_agent(name: str, env: TextGenerationVectorEnv, **config: Any) -> Agent:
    """An agent by name, its config built from keyword arguments.

    Example:
        >>> agent = make_agent("rloo", env, group_size=4, learning_rate=1e-4)
    """
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    cls = AGENTS[name]
    if cls is RLOOAgent:
        config.setdefault("baseline", name)
        return RLOOAgent(env, RLOOConfig(**config))
    if cls is PPOAgent:
        return PPOAgent(env, PPOConfig(**config))
    return cls(env, **config)


__all__ = [
    "AGENTS",
    "Agent",
    "Evaluation",
    "PPOAgent",
    "PPOConfig",
    "PolicyAgent",
    "PolicyGradientConfig",
    "RLOOAgent",
    "RLOOConfig",
    "RandomAgent",
    "ReferenceAgent",
    "evaluate",
    "make_agent",
]
