"""Held-out evaluation of the env's current policy: gold score, learned score, KL, fluency,
diversity, and the samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlhf_agents import Agent, PolicyAgent, evaluate
from rlhf_env.vector_env import TextGenerationVectorEnv

Oracle = Callable[[list[str], list[str]], Sequence[float]]

#: The figures of :func:`rlhf_agents.evaluate` the summary carries under their own names
#: (besides learned_score, gold_score, kl, response_length and responses).
EXTRA_FIGURES = ("perplexity", "distinct_1", "distinct_2", "repetition")


def evaluate_policy(
    env: TextGenerationVectorEnv,
    prompts: Sequence[str],
    oracle: Oracle | None = None,
    seed: int = 0,
    progress: bool = False,
    *,
    agent: Agent | None = None,
    gold: Mapping[str, Oracle] | None = None,
    fluency: bool = True,
) -> dict[str, Any]:
    """Sample the env's current policy once per prompt (temperature 1, seeded), or ``agent``.

    The gold metrics are ``gold`` (name -> metric, the first being the gold score), else
    ``oracle`` alone (named ``"oracle"``), else the env's task's (``env.task.gold``), else
    none. With ``fluency`` the responses' perplexity under the env's reference is measured (one
    forward of it over the responses).

    Returns ``{"summary": {...}, "sem": {...}, "samples": [...]}``. ``summary``: the means of
    the env's score (``learned_score``, the learned reward), of the gold score when there is
    one (``gold_score``, with its standard error ``gold_score_sem``, and ``gold/<name>`` for
    every gold metric), of the per-response KL to the env's reference (``kl``) and of the
    length (``response_length``); ``perplexity``, ``distinct_1``, ``distinct_2`` and
    ``repetition`` (see :data:`rlhf_agents.evaluation.EVALUATION_METRICS`); for dialogues each
    turn's mean score (``turn_score/<k>``; ``gold_turn/<k>`` by the gold); and the count of
    ``responses``. ``sem``: the standard error of each figure of the summary that has one.
    ``samples``: every (prompt, response) with its own figures (a dialogue's with its
    ``conversation`` and ``turn_scores``).
    """
    if gold is None and oracle is not None:
        gold = {"oracle": oracle}
    agent = agent if agent is not None else PolicyAgent(env, seed=seed)
    result = evaluate(
        agent, env, prompts=prompts, seed=seed, progress=progress, gold=gold, fluency=fluency
    )
    rollout, figures = result.rollout, result.as_dict()
    summary: dict[str, Any] = {
        "learned_score": result.score,
        "kl": result.kl,
        "response_length": result.response_length,
        "responses": rollout.num_episodes,
    }
    sem = {
        "learned_score": result.sem["learned"],
        "kl": result.sem["kl"],
        "response_length": result.sem["response_length"],
    }
    if result.gold is not None:
        summary["gold_score"] = result.gold
        summary["gold_score_sem"] = sem["gold_score"] = result.sem["gold"]
        for name in figures:
            if name.startswith("gold/"):
                summary[name], sem[name] = figures[name], result.sem[name]
    for name in EXTRA_FIGURES:
        if name in figures:
            summary[name], sem[name] = figures[name], result.sem[name]
    for name in figures:  # dialogue: each turn's mean score, learned and gold
        if name.startswith(("turn_score/", "gold_turn/")) or name == "turns":
            summary[name], sem[name] = figures[name], result.sem[name]

    # Each sample's own figures, under the summary's names.
    columns = {"learned": "learned", "kl": "kl", "gold": "gold"}
    columns |= {name: name for name in result.per_response if name.startswith("gold/")}
    columns |= {"perplexity": "perplexity", "repetition": "repetition"}
    samples: list[dict[str, Any]] = []
    for i, (prompt, response) in enumerate(zip(rollout.prompts, rollout.responses, strict=True)):
        sample: dict[str, Any] = {"prompt": prompt, "response": response}
        if rollout.conversations[i]:
            sample["conversation"] = rollout.conversations[i]
            sample["turn_scores"] = rollout.turn_scores[i]
        for key, column in columns.items():
            if column in result.per_response:
                sample[key] = _json_number(result.per_response[column][i])
        samples.append(sample)
    return {"summary": summary, "sem": sem, "samples": samples}


def _json_number(value: Any) -> float | None:
    """``value`` as a float, NaN as None (JSON has no NaN)."""
    number = float(value)
    return None if number != number else number
