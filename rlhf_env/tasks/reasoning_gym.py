"""``rlhf_env/ReasoningGym-v0``: any reasoning-gym dataset, answered token by token.

``gym.make("rlhf_env/ReasoningGym-v0", dataset="countdown")`` plays the dataset's problems
through the dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`), one problem per
episode (:class:`rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv` says exactly how):

- **prompt**: the system message states the answer format (``<answer></answer>`` tags), the
  user turn is reasoning-gym's question; with ``demonstrations=k``, ``k`` worked training
  problems come before it as earlier turns (question, then the tagged answer);
- **reward and gold**: the dataset's own ``score_answer`` on the content of the turn's last
  ``<answer>`` tags (0 without one), beside the env's ``-beta * KL``; the gold metrics are the
  held-out problems' ``correct`` (score 1: many checkers give partial credit), ``score`` and
  ``formatted`` (:class:`~rlhf_env.rewards.outcome.EpisodeOutcome`);
- **split**: held-out problems are the first ``eval_problems`` distinct questions drawn with
  another seed; training never asks one of them (by question text). ``max_turns > 1`` gives
  more attempts, the user answering a wrong one with "Incorrect, try again.".

Which of the 106 datasets build offline (105: ``composite`` needs its ``datasets`` option) and
where a checker can be gamed: ``docs/reasoning_gym_datasets.md``. The dataset's own options
are ``dataset_options={...}``.

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("rlhf_env/ReasoningGym-v0", dataset="chain_sum")
    >>> env.unwrapped.task.gold_name
    'correct'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlhf_env.dialogue.turn_level import TurnLevelEpisode
from rlhf_env.hubs.reasoning_gym_env import WORKED_ANSWER, ReasoningGymEnv
from rlhf_env.tasks import turn_level
from rlhf_env.tasks.arithmetic import GROUP_RECIPE, PPO_RECIPE
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec

NAME = "ReasoningGym"

#: The figures of a problem's outcome the task reports, the first being its gold score.
GOLD_FIGURES = ("correct", "score", "formatted")

#: Training problems whose first prompts are measured beside the held-out ones'.
PROMPT_SAMPLE = 256

#: Tokens of a retry's user turn ("Incorrect, try again." with the template's headers).
FEEDBACK_TOKENS = 32


def build(
    context: TaskContext,
    dataset: str = "chain_sum",
    dataset_options: Mapping[str, Any] | None = None,
    size: int = 10_000,
    seed: int = 0,
    eval_problems: int = 64,
    demonstrations: int = 0,
    worked_answer: str = WORKED_ANSWER,
    max_turns: int = 1,
    answer_tokens: int = 64,
) -> Task:
    """The ReasoningGym task for ``context.policy`` (see the module docstring).

    Args:
        dataset: a reasoning-gym dataset (``docs/reasoning_gym_datasets.md``).
        dataset_options: the dataset's own options (``{"min_terms": 3}``).
        size: training problems (drawn with ``seed``; a training draw picks one).
        seed: reasoning-gym's seed of the training problems; held-out ones use ``seed + 1``.
        eval_problems: held-out problems.
        demonstrations: worked training problems shown before the question, as earlier
            user and assistant turns.
        worked_answer: their answer turns, a template over the problem's fields
            (:class:`~rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv`; the tagged answer
            alone by default).
        max_turns: attempts per problem.
        answer_tokens: tokens per attempt (the env's ``max_new_tokens``; a longer one is cut
            and closed by the env, then scored).
    """
    options = dict(dataset_options or {})
    train = ReasoningGymEnv(
        dataset, size=size, seed=seed, eval_size=eval_problems, max_turns=max_turns,
        demonstrations=demonstrations, worked_answer=worked_answer, **options,
    )  # fmt: skip
    held_out = train.with_split("eval").episodes(range(eval_problems))

    def train_problem(rng: np.random.Generator) -> TurnLevelEpisode:
        return train.episodes([int(rng.integers(size))])[0]

    # The held-out problems' first prompts and a sample of training ones: the longest sizes
    # the env's prompts.
    sample = [*held_out, *train.episodes(range(min(size, PROMPT_SAMPLE)))]
    return Task(
        name=NAME,
        train_prompts=train_problem,
        eval_prompts=held_out,
        reward_fn=None,
        gold=turn_level.outcome_gold(GOLD_FIGURES),
        env_options=turn_level.env_options(
            context, sample, max_turns, answer_tokens, FEEDBACK_TOKENS
        ),
        details={
            "dataset": dataset,
            "dataset_options": options,
            "eval_problems": eval_problems,
            "demonstrations": demonstrations,
            "worked_answer": worked_answer,
        },
    )


#: The suite's configuration: the Arithmetic task's sums (two or three one-digit terms) after
#: two examples worked as its are ("4 - 1 = 3, so <answer>3</answer>"), answers cut at 32
#: tokens. The untrained SmolLM2-135M-Instruct answers 5.5% of the held-out ones right (4.7%
#: with the tagged answers alone as examples; none at the dataset's defaults, up to six 4-digit
#: terms); RLOO at this budget, 30.5% (+25 points, Holm p < 0.001, 3 seeds; benchmarks/
#: RESULTS.md, issue 30).
SUITE_OPTIONS: dict[str, Any] = {
    "dataset": "chain_sum",
    "dataset_options": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1},
    "demonstrations": 2,
    "worked_answer": "{metadata[expression]} = {answer}, so <answer>{answer}</answer>",
    "answer_tokens": 32,
}

#: A suite run: the Arithmetic task's budget and recipes (the same sums, played as a one-turn
#: dialogue and scored by reasoning-gym's checker), each held-out problem answered twice.
BUDGET = SuiteBudget(timesteps=6144, training_setup="full", options=SUITE_OPTIONS, eval_samples=2)

SPEC = TaskSpec(
    name=NAME,
    description="answer a reasoning-gym dataset's problems (dataset=...; 105 build offline) in "
    "<answer> tags; reward and gold = the dataset's own score_answer on held-out problems",
    build=build,
    smoke_options={"eval_problems": 4, "answer_tokens": 8, "size": 64},
    chat_template=True,
    smoke_positions=2048,
    recipes={"ppo": PPO_RECIPE, "rloo": GROUP_RECIPE, "grpo": GROUP_RECIPE},
    budget=BUDGET,
)

__all__ = ["BUDGET", "GOLD_FIGURES", "SPEC", "SUITE_OPTIONS", "build"]
