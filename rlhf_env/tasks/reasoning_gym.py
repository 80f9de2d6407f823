"""``rlhf_env/ReasoningGym-v0``: any reasoning-gym dataset, answered token by token.

``gym.make("rlhf_env/ReasoningGym-v0", dataset="countdown")`` plays the dataset's problems
through the dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`), one problem per
episode (:class:`rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv` says exactly how):

- **prompt**: the system message states the answer format (``<answer></answer>`` tags), the
  user turn is reasoning-gym's question; with ``demonstrations=k``, ``k`` worked training
  problems come before it as earlier turns (question, then the tagged answer), or the
  problems given as a list;
- **reward and gold**: the dataset's own ``score_answer`` on the content of the turn's last
  ``<answer>`` tags (0 without one; ``checker="integer"``: an integer equal to the answer),
  plus ``format_weight`` for a well-formed answer, beside the env's ``-beta * KL``; the gold
  metrics are the held-out problems' ``correct`` (score 1: many checkers give partial
  credit), ``score`` and ``formatted`` (:class:`~rlhf_env.rewards.outcome.EpisodeOutcome`);
- **split**: held-out problems are the first ``eval_problems`` distinct questions drawn with
  another seed (``eval_seed``), each kind of a ``mix`` taking its share; training never asks
  one of them (by question text). ``max_turns > 1`` gives more attempts, the user answering a
  wrong one with "Incorrect, try again.".

The Arithmetic task is one configuration of this one (:func:`rlhf_env.tasks.arithmetic.
reasoning_gym_options`): the same problems, prompts and grades, played as one turn here.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf_env.dialogue.turn_level import TurnLevelEpisode
from rlhf_env.hubs.reasoning_gym_env import INSTRUCTION, WORKED_ANSWER, ReasoningGymEnv
from rlhf_env.hubs.reasoning_gym_problems import Checker, Stratum
from rlhf_env.tasks import turn_level
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec

NAME = "ReasoningGym"

#: The figures of a problem's outcome the task reports, the first being its gold score.
GOLD_FIGURES = ("correct", "score", "formatted")

#: Training problems whose first prompts are measured beside the held-out ones'.
PROMPT_SAMPLE = 256

#: Tokens of a retry's user turn ("Incorrect, try again." with the template's headers).
FEEDBACK_TOKENS = 32


@dataclass(frozen=True)
class ProblemOptions:
    """The options that decide the task's problems, prompts and grades: its
    :class:`~rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv`'s.

    Attributes:
        dataset: a reasoning-gym dataset (``docs/reasoning_gym_datasets.md``).
        dataset_options: the dataset's own options (``{"min_terms": 3}``).
        size: training problems (drawn with ``seed``; a training draw picks one).
        seed: reasoning-gym's seed of the training problems.
        eval_seed: reasoning-gym's seed of the held-out problems (default ``seed + 1``).
        eval_problems: held-out problems.
        instruction: the system message (it must mention the ``<answer></answer>`` tags).
        demonstrations: worked examples shown before the question, as earlier user and
            assistant turns: the first ``k`` training problems, or the problems given (never
            asked then).
        worked_answer: their answer turns, a template over the problem's fields (the tagged
            answer alone by default).
        mix: kinds of problem and their shares (:class:`~rlhf_env.hubs.reasoning_gym_problems.
            Stratum`, or mappings of its fields); None: the dataset as it draws.
        checker: ``"dataset"`` (its ``score_answer``) or ``"integer"`` (exact integer match).
        format_weight: reward for a well-formed answer, right or wrong.
        max_turns: attempts per problem.
    """

    dataset: str = "chain_sum"
    dataset_options: Mapping[str, Any] | None = None
    size: int = 10_000
    seed: int = 0
    eval_seed: int | None = None
    eval_problems: int = 64
    instruction: str = INSTRUCTION
    demonstrations: int | Sequence[Mapping[str, Any]] = 0
    worked_answer: str = WORKED_ANSWER
    mix: Sequence[Stratum | Mapping[str, Any]] | None = None
    checker: Checker = "dataset"
    format_weight: float = 0.0
    max_turns: int = 1

    def make_env(self) -> ReasoningGymEnv:
        """The training env of these options (``with_split("eval")`` plays the held-out
        problems)."""
        return ReasoningGymEnv(
            self.dataset, size=self.size, seed=self.seed, eval_seed=self.eval_seed,
            eval_size=self.eval_problems, instruction=self.instruction,
            max_turns=self.max_turns, demonstrations=self.demonstrations,
            worked_answer=self.worked_answer, mix=self.mix, checker=self.checker,
            format_weight=self.format_weight, **dict(self.dataset_options or {}),
        )  # fmt: skip


def build(context: TaskContext, answer_tokens: int = 64, **problem_options: Any) -> Task:
    """The ReasoningGym task for ``context.policy`` (see the module docstring).

    Args:
        answer_tokens: tokens per attempt (the env's ``max_new_tokens``; a longer one is cut
            and closed by the env, then scored).
        problem_options: the fields of :class:`ProblemOptions` (the dataset, its options, the
            split, the prompt, the checker).
    """
    options = ProblemOptions(**problem_options)
    train = options.make_env()
    eval_problems, max_turns = options.eval_problems, options.max_turns
    held_out = train.with_split("eval").episodes(range(eval_problems))

    def train_problem(rng: np.random.Generator) -> TurnLevelEpisode:
        return train.episodes([int(rng.integers(train.size))])[0]

    # The held-out problems' first prompts and a sample of training ones: the longest sizes
    # the env's prompts.
    sample = [*held_out, *train.episodes(range(min(train.size, PROMPT_SAMPLE)))]
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
            "dataset": options.dataset,
            "dataset_options": dict(options.dataset_options or {}),
            "eval_problems": eval_problems,
            "demonstrations": len(train.history) // 2,
            "worked_answer": options.worked_answer,
            "mix": [kind.as_options() for kind in train.mix],
            "checker": options.checker,
        },
    )


#: Groups of 8, lr 1e-5, one epoch, minibatches of 16, beta 0.01, every weight trained (the
#: budget's ``full``), measured on chain sums. On the Arithmetic configuration (balanced signs),
#: 6,144 tokens, four seeds: PPO raised held-out exact match by +0.213 (Holm p = 0.006) and RLOO
#: by +0.158 (p = 0.019), the negative answers holding (-0.004 and +0.043); GRPO by +0.100
#: (p = 0.16) (benchmarks/RESULTS.md, issue 28, item 4). With the top 6 blocks alone
#: (``frozen:24``) at lr 1e-4, 10,240 tokens bought +0.06 at most and the policy dropped its
#: minus signs.
GROUP_RECIPE: dict[str, Any] = {
    "group_size": 8, "learning_rate": 1e-5, "epochs": 1, "minibatch_size": 16, "kl_coef": 0.01,
}  # fmt: skip

#: PPO's settings here: the group recipe's optimiser and beta (the agents then differ in their
#: advantage estimates alone).
PPO_RECIPE: dict[str, Any] = {
    key: value for key, value in GROUP_RECIPE.items() if key != "group_size"
}


#: A chain sum's worked answer ("4 - 1 = 3, so <answer>3</answer>"): the expression, its value,
#: the tagged answer; the form a small policy copies from the examples.
CHAIN_SUM_WORKED_ANSWER = "{metadata[expression]} = {answer}, so <answer>{answer}</answer>"

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
    "worked_answer": CHAIN_SUM_WORKED_ANSWER,
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
    shared_options=ProblemOptions,
    smoke_options={"eval_problems": 4, "answer_tokens": 8, "size": 64},
    chat_template=True,
    smoke_positions=2048,
    recipes={"ppo": PPO_RECIPE, "rloo": GROUP_RECIPE, "grpo": GROUP_RECIPE},
    budget=BUDGET,
)

__all__ = [
    "BUDGET",
    "CHAIN_SUM_WORKED_ANSWER",
    "GOLD_FIGURES",
    "GROUP_RECIPE",
    "PPO_RECIPE",
    "SPEC",
    "SUITE_OPTIONS",
    "ProblemOptions",
    "build",
]
