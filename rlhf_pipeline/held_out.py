"""Held-out evaluation of the env's current policy: gold score, learned score, KL, samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhf_agents import PolicyAgent, evaluate
from rlhf_env.vector_env import TextGenerationVectorEnv

Oracle = Callable[[list[str], list[str]], Sequence[float]]


def evaluate_policy(
    env: TextGenerationVectorEnv,
    prompts: Sequence[str],
    oracle: Oracle | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample the env's current policy once per prompt (temperature 1, seeded).

    Returns ``{"summary": {...}, "samples": [...]}``: means of the env's score (the learned
    reward), of the ``oracle``'s gold score when given (with its standard error), of the
    per-response KL to the env's reference and of the length; and every (prompt, response) with
    its figures.
    """
    agent = PolicyAgent(env, seed=seed)
    result = evaluate(agent, env, prompts=prompts, seed=seed, progress=progress)
    rollout = result.rollout
    summary: dict[str, Any] = {
        "learned_score": result.score,
        "kl": result.kl,
        "response_length": result.response_length,
        "responses": rollout.num_episodes,
    }
    samples: list[dict[str, Any]] = [
        {"prompt": p, "response": r, "learned": float(s), "kl": float(k)}
        for p, r, s, k in zip(
            rollout.prompts,
            rollout.responses,
            rollout.scores.tolist(),
            rollout.sequence_kl.tolist(),
            strict=True,
        )
    ]
    if oracle is not None:
        gold = np.asarray(oracle(rollout.prompts, rollout.responses), dtype=np.float64)
        summary["gold_score"] = float(gold.mean())
        summary["gold_score_sem"] = (
            float(gold.std(ddof=1) / np.sqrt(len(gold))) if len(gold) > 1 else 0.0
        )
        for sample, value in zip(samples, gold, strict=True):
            sample["gold"] = float(value)
    return {"summary": summary, "samples": samples}
