"""Agents that act in and learn from the rlhf_env environments.

============== ===================================================================
``RandomAgent``    uniformly random tokens
``ReferenceAgent`` samples from the frozen reference: the baseline of every result
``PolicyAgent``    samples from the env's current policy (to evaluate one trained elsewhere)
``PPOAgent``       PPO with a value head and token-level GAE (:class:`PPOConfig`)
``RLOOAgent``      critic-free, group baseline: RLOO or GRPO-style (:class:`RLOOConfig`)
============== ===================================================================

Select one by name with :func:`make_agent` (``"random"``, ``"reference"``, ``"policy"``,
``"ppo"``, ``"rloo"``, ``"grpo"``). :mod:`rlhf_agents.sb3_policy` holds
``LanguageModelPolicy``, the policy class for stable-baselines3's own PPO and A2C (imported
on demand; the ``sb3`` extra).
"""

from __future__ import annotations

from typing import Any

from rlhf_agents.base import Agent
from rlhf_agents.baselines import PolicyAgent, RandomAgent, ReferenceAgent
from rlhf_agents.config import PolicyGradientConfig, PPOConfig, RLOOConfig
from rlhf_agents.evaluation import Evaluation, evaluate
from rlhf_agents.ppo import PPOAgent
from rlhf_agents.rloo import RLOOAgent
from rlhf_env.vector_env import TextGenerationVectorEnv

#: The agents that learn, by the names :func:`make_agent` and the CLI take.
LEARNING_AGENTS: tuple[str, ...] = ("ppo", "rloo", "grpo")

#: Agent classes by the name :func:`make_agent` and the CLI take.
AGENTS: dict[str, type[Agent]] = {
    "random": RandomAgent,
    "reference": ReferenceAgent,
    "policy": PolicyAgent,
    "ppo": PPOAgent,
    "rloo": RLOOAgent,
    "grpo": RLOOAgent,
}


#: What a name sets in its agent's config beyond the class's defaults: ``"grpo"`` is the
#: RLOO agent with GRPO's baseline (the group mean, advantages scaled by the group's std).
NAMED_DEFAULTS: dict[str, dict[str, Any]] = {
    "rloo": {"baseline": "rloo"},
    "grpo": {"baseline": "grpo"},
}


def make_agent(name: str, env: TextGenerationVectorEnv, **config: Any) -> Agent:
    """An agent by name, its config built from keyword arguments.

    Example:
        >>> agent = make_agent("rloo", env, group_size=4, learning_rate=1e-4)
    """
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    return AGENTS[name](env, **{**NAMED_DEFAULTS.get(name, {}), **config})


__all__ = [
    "AGENTS",
    "LEARNING_AGENTS",
    "NAMED_DEFAULTS",
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
