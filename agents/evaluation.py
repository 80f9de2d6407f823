"""Evaluate any agent on a vector env: gold score, return, KL and length over whole episodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_agents.base import Agent
from rlhf_agents.rollout import Rollout, check_rollout_env, collect_episodes
from rlhf_env.vector_env import TextGenerationVectorEnv


@dataclass
class Evaluation:
    """Means over the evaluated episodes, and the episodes themselves."""

    score: float  # mean reward_fn score
    score_std: float
    episode_return: float  # mean env return (score - beta * KL + penalties)
    kl: float  # mean per-response KL to the reference, nats
    response_length: float
    rollout: Rollout

    def as_dict(self) -> dict[str, float]:
        """The scalar figures."""
        return {
            "score": self.score,
            "score_std": self.score_std,
            "return": self.episode_return,
            "kl": self.kl,
            "response_length": self.response_length,
            "episodes": float(self.rollout.num_episodes),
        }


@torch.no_grad()
def evaluate(
    agent: Agent,
    env: TextGenerationVectorEnv,
    num_episodes: int | None = None,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    progress: bool = False,
) -> Evaluation:
    """Run ``agent`` on the env and average over whole episodes; the env's KL is measured
    against its reference.

    Either ``num_episodes`` (at least that many, in whole rounds of ``num_envs``, on prompts
    drawn with ``seed``) or ``prompts`` (each answered once, in this order: a held-out set).
    The agent acts through :meth:`Agent.act` (the env's fast path where it has one). Seeded
    prompt draws make evaluations of different agents on the same env comparable.
    """
    check_rollout_env(env)
    if (num_episodes is None) == (prompts is None):
        raise ValueError("pass either num_episodes or prompts")
    if prompts is not None:
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts is empty")
        n = env.num_envs
        rounds = [prompts[i : i + n] for i in range(0, len(prompts), n)]
        # The last round is filled up with repeats, which are dropped afterwards.
        rounds[-1] = (rounds[-1] * n)[:n]
    else:
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        rounds = [None] * -(-num_episodes // env.num_envs)
    seeds = np.random.default_rng(seed).integers(2**31 - 1, size=len(rounds))
    jobs = list(zip(rounds, seeds, strict=True))
    parts = [
        collect_episodes(env, agent.act, round_prompts, seed=int(round_seed))
        for round_prompts, round_seed in tqdm(
            jobs, desc="evaluate", unit="round", disable=not progress
        )
    ]
    rollout = Rollout.concatenate(parts)
    if prompts is not None:
        rollout = rollout.select(np.arange(len(prompts)))
    scores = rollout.scores.double()
    return Evaluation(
        score=float(scores.mean()),
        score_std=float(scores.std()) if rollout.num_episodes > 1 else 0.0,
        episode_return=float(rollout.returns.mean()),
        kl=float(rollout.sequence_kl.mean()),
        response_length=float(rollout.lengths.float().mean()),
        rollout=rollout,
    )
