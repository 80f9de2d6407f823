"""Evaluate any agent on a vector env: gold score, learned reward, KL, fluency, diversity.

:func:`evaluate` runs the agent over whole episodes and reports the figures of
:data:`EVALUATION_METRICS`, means over the responses (the pooled ones over all of them), each
with a standard error (:attr:`Evaluation.sem`) and, where it is a mean, its per-response values
(:attr:`Evaluation.per_response`) for intervals of one's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf_agents.base import Agent
from rlhf_agents.rollout import Rollout, check_rollout_env, collect_episodes
from rlhf_env.dialogue.script import transcript
from rlhf_env.rewards.base import RewardFunction, score_responses
from rlhf_env.rewards.outcome import EpisodeOutcome
from rlhf_env.text_metrics import (
    Perplexity,
    distinct_n,
    distinct_n_standard_error,
    repetition,
    repetition_rate,
    response_perplexity,
    standard_error,
)
from rlhf_env.vector_env import TextGenerationVectorEnv

#: Every figure :meth:`Evaluation.as_dict` may hold, with its meaning.
EVALUATION_METRICS: dict[str, str] = {
    "gold": "mean gold score: the task's first gold metric (or the first of gold=); higher is "
    "better, and the figure to judge a policy by",
    "gold/<name>": "mean of each gold metric by name (the first is `gold` again)",
    "learned": "mean training reward: the env's reward_fn score (a learned reward model's, or "
    "a checkable score); the same figure as `score`",
    "score": "mean reward_fn score (kept for older callers; = `learned`)",
    "score_std": "standard deviation of the reward_fn scores",
    "return": "mean episode return: score - beta * sum of per-token KL (+ penalties)",
    "kl": "mean per-response KL to the env's reference, in nats (sum of the env's estimates)",
    "perplexity": "exp(total NLL / total tokens) of the responses given their prompts under the "
    "fluency model (the env's frozen reference unless fluency_model= says otherwise); empty "
    "responses left out. Lower is more fluent, as that model sees it",
    "distinct_1": "distinct words / words over all responses pooled (Li et al. 2016)",
    "distinct_2": "distinct word pairs / word pairs over all responses pooled",
    "repetition": "mean over responses of the share of a response's word 3-grams that repeat an "
    "earlier one of it (seq-rep-3); about 0 for ordinary text, near 1 for a word said over "
    "and over",
    "response_length": "mean generated tokens per response (EOS included; in a dialogue, the "
    "assistant's tokens of all turns, not the user turns the env inserted)",
    "episodes": "responses evaluated",
    "turn_score/<k>": "dialogue scoring every turn: mean reward_fn score of assistant turn k "
    "(1-based) over the conversations that reached it",
    "gold_turn/<k>": "dialogue: the gold score (the first gold metric) of assistant turn k "
    "given the conversation before it, over the conversations that reached it",
    "turns": "dialogue: mean assistant turns per conversation (a turn cut at max_new_tokens "
    "ends the conversation)",
}


@dataclass
class Evaluation:
    """Means over the evaluated episodes, their standard errors, and the episodes themselves.

    The first six fields are the figures every evaluation has; ``metrics`` adds the others of
    :data:`EVALUATION_METRICS` that were measured (``gold`` only with a gold metric,
    ``perplexity`` only with fluency on). :meth:`as_dict` flattens both.

    Attributes:
        per_response: the per-response values ``(E,)`` behind every figure that is a mean
            (``learned``, ``return``, ``kl``, ``response_length``, ``gold``, ``gold/<name>``,
            ``repetition``; NaN where a response has no 3-gram, or where a gold metric of a
            subset does not apply, left out of the figure's mean) and each response's own
            ``perplexity`` (NaN for an empty one), in :attr:`rollout` order.
        sem: the standard error of each figure: of the mean for means (NaNs left out), the
            delete-one jackknife over responses for the pooled ``distinct_n`` and
            ``perplexity``.
        gold_name: the name of the gold metric behind ``gold`` (None without one).
        fluency: the perplexity result (per-response NLL and token counts), or None.
    """

    score: float  # mean reward_fn score
    score_std: float
    episode_return: float  # mean env return (score - beta * KL + penalties)
    kl: float  # mean per-response KL to the reference, nats
    response_length: float
    rollout: Rollout
    metrics: dict[str, float] = field(default_factory=dict)
    per_response: dict[str, np.ndarray] = field(default_factory=dict)
    sem: dict[str, float] = field(default_factory=dict)
    gold_name: str | None = None
    fluency: Perplexity | None = None

    @property
    def gold(self) -> float | None:
        """The mean gold score, or None when no gold metric was given."""
        return self.metrics.get("gold")

    def as_dict(self) -> dict[str, float]:
        """Every scalar figure (see :data:`EVALUATION_METRICS`)."""
        return {
            "score": self.score,
            "score_std": self.score_std,
            "return": self.episode_return,
            "kl": self.kl,
            "response_length": self.response_length,
            "episodes": float(self.rollout.num_episodes),
            **self.metrics,
        }


FluencyModel = tuple[torch.nn.Module, PreTrainedTokenizerBase]


@torch.no_grad()
def evaluate(
    agent: Agent,
    env: TextGenerationVectorEnv,
    num_episodes: int | None = None,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    progress: bool = False,
    *,
    gold: Mapping[str, RewardFunction] | None = None,
    fluency: bool | None = None,
    fluency_model: FluencyModel | None = None,
    batch_size: int = 8,
) -> Evaluation:
    """Run ``agent`` on the env and report :data:`EVALUATION_METRICS` over whole episodes.

    Which prompts: ``num_episodes`` (at least that many, in whole rounds of ``num_envs``, on
    prompts drawn with ``seed``), or ``prompts`` (each answered once, in this order: a
    held-out set), or, with neither, the held-out prompts of the env's task
    (``env.task.eval_prompts``, each once). The agent acts through :meth:`Agent.act` (the
    env's fast path where it has one). Seeded prompt draws make evaluations of different
    agents on the same env comparable.

    What is measured: the learned reward (the env's score), the return and the KL to the env's
    reference always, and the diversity figures (cheap, from the texts); the gold metrics of
    ``gold`` (name -> reward function; default: the env's task's, ``env.task.gold``); and,
    with ``fluency``, the perplexity of the responses, one extra forward of the fluency model
    over every prompt + response (``batch_size`` rows at a time).

    Args:
        agent: the agent to evaluate.
        env: the vector env (a task's env carries its task as ``env.task``).
        num_episodes, seed, prompts, progress: as above; ``progress`` shows a bar of rounds.
        gold: gold metrics by name, the first being *the* gold score; overrides the task's.
        fluency: measure perplexity; default True when there is a gold metric (a task) or a
            ``fluency_model``, else False.
        fluency_model: ``(model, its tokenizer)`` to measure perplexity under, e.g. a larger
            LM sharing nothing with the policy; default the env's frozen reference and the
            env's tokenizer.
        batch_size: rows per forward of the fluency model.

    Example:
        >>> env = gym.make_vec("rlhf_env/PositiveReview-v0", num_envs=8)
        >>> result = evaluate(PolicyAgent(env), env)  # the task's held-out prompts
        >>> result.as_dict()["gold"], result.sem["gold"], result.as_dict()["perplexity"]
    """
    check_rollout_env(env)
    task = getattr(env, "task", None)
    if num_episodes is not None and prompts is not None:
        raise ValueError("pass either num_episodes or prompts, not both")
    if num_episodes is None and prompts is None:
        if task is None:
            raise ValueError(
                "pass either num_episodes or prompts (only an env built from a task, "
                "gym.make_vec('rlhf_env/<Task>-v0'), has held-out prompts of its own)"
            )
        prompts = task.eval_prompts
    gold = dict(gold) if gold is not None else (dict(task.gold) if task is not None else {})
    if fluency is None:
        fluency = bool(gold) or fluency_model is not None
    rollout = _collect(agent, env, num_episodes, seed, prompts, progress)
    scores = rollout.scores.double()
    result = Evaluation(
        score=float(scores.mean()),
        score_std=float(scores.std()) if rollout.num_episodes > 1 else 0.0,
        episode_return=float(rollout.returns.mean()),
        kl=float(rollout.sequence_kl.mean()),
        response_length=float(rollout.lengths.float().mean()),
        rollout=rollout,
    )
    per_response = {
        "learned": scores.cpu().numpy(),
        "return": rollout.returns.double().cpu().numpy(),
        "kl": rollout.sequence_kl.double().cpu().numpy(),
        "response_length": rollout.lengths.double().cpu().numpy(),
    }
    prompts_read, responses_read = scored_pairs(rollout)
    for name, metric in gold.items():
        if isinstance(metric, EpisodeOutcome):  # a turn-level env's figure, not a text score
            values = metric.values(rollout.outcomes)
        else:
            values = score_responses(metric, prompts_read, responses_read, not_applicable_ok=True)
        per_response.setdefault("gold", values)
        per_response[f"gold/{name}"] = values
    per_response["repetition"] = np.array([repetition(text) for text in rollout.responses])
    result.per_response = per_response
    result.gold_name = next(iter(gold), None)
    result.metrics["learned"] = result.score
    result.metrics.update(
        {
            key: _mean_of_applicable(values)
            for key, values in per_response.items()
            if key.startswith("gold")
        }
    )
    if any(rollout.conversations):
        per_response["turns"] = np.array(
            [sum(m["role"] == "assistant" for m in messages) for messages in rollout.conversations],
            dtype=np.float64,
        )
        result.metrics["turns"] = float(per_response["turns"].mean())
    for turn, values in enumerate(_turn_score_columns(rollout), start=1):
        per_response[f"turn_score/{turn}"] = values
        result.metrics[f"turn_score/{turn}"] = _mean_of_applicable(values)
    first_gold = next(iter(gold.values()), None)
    if (
        any(rollout.conversations)
        and first_gold is not None
        and not isinstance(first_gold, EpisodeOutcome)
    ):  # per-turn gold scores, where the gold reads texts
        for turn, values in enumerate(_gold_turn_columns(rollout, first_gold), 1):
            per_response[f"gold_turn/{turn}"] = values
            result.metrics[f"gold_turn/{turn}"] = _mean_of_applicable(values)
    result.sem = {key: standard_error(values) for key, values in per_response.items()}
    result.sem["score"] = result.sem["learned"]
    if fluency:
        model, tokenizer = fluency_model or (env.reference, env.tokenizer)
        result.fluency = response_perplexity(
            model, tokenizer, prompts_read, responses_read, batch_size=batch_size
        )
        result.metrics["perplexity"] = result.fluency.corpus
        result.per_response["perplexity"] = result.fluency.per_response
        result.sem["perplexity"] = result.fluency.standard_error
    for n in (1, 2):
        result.metrics[f"distinct_{n}"] = distinct_n(rollout.responses, n)
        result.sem[f"distinct_{n}"] = distinct_n_standard_error(rollout.responses, n)
    result.metrics["repetition"] = repetition_rate(rollout.responses)
    return result


def scored_pairs(rollout: Rollout) -> tuple[list[str], list[str]]:
    """What gold metrics and perplexity read of each episode: its prompt and response, or for
    a dialogue the transcript before its last assistant turn (the form dialogue envs hand
    reward functions, :func:`rlhf_env.dialogue.transcript`) and that turn."""
    prompts, responses = list(rollout.prompts), list(rollout.responses)
    for i, messages in enumerate(rollout.conversations):
        if messages:
            last = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
            prompts[i] = transcript(messages[:last])
            responses[i] = messages[last]["content"]
    return prompts, responses


def _turn_score_columns(rollout: Rollout) -> list[np.ndarray]:
    """Each turn's scores ``(E,)`` over the episodes, NaN where a conversation ended before."""
    turns = max((len(scores) for scores in rollout.turn_scores), default=0)
    columns = np.full((turns, rollout.num_episodes), np.nan)
    for i, scores in enumerate(rollout.turn_scores):
        columns[: len(scores), i] = scores
    return list(columns)


def _gold_turn_columns(rollout: Rollout, metric: RewardFunction) -> list[np.ndarray]:
    """The gold score of each assistant turn ``(E,)`` per turn, read as the env reads a turn
    (the transcript before it, then the turn), NaN where a conversation ended before."""
    index, prompts, responses = [], [], []
    for episode, messages in enumerate(rollout.conversations):
        turns = [k for k, message in enumerate(messages) if message["role"] == "assistant"]
        for turn, k in enumerate(turns):
            index.append((turn, episode))
            prompts.append(transcript(messages[:k]))
            responses.append(messages[k]["content"])
    columns = np.full((max((t for t, _ in index), default=-1) + 1, rollout.num_episodes), np.nan)
    if index:
        values = score_responses(metric, prompts, responses, not_applicable_ok=True)
        for (turn, episode), value in zip(index, values, strict=True):
            columns[turn, episode] = value
    return list(columns)


def _mean_of_applicable(values: np.ndarray) -> float:
    """The mean of the values that apply (NaN: a gold metric of a subset, a turn the
    conversation did not reach, left out); NaN when none does."""
    applicable = values[~np.isnan(values)]
    return float(applicable.mean()) if applicable.size else float("nan")


def _collect(
    agent: Agent,
    env: TextGenerationVectorEnv,
    num_episodes: int | None,
    seed: int,
    prompts: Sequence[str] | None,
    progress: bool,
) -> Rollout:
    """The episodes: ``prompts`` each once in order, or at least ``num_episodes`` drawn."""
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
    return rollout
