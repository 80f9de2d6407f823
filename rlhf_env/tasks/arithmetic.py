"""The Arithmetic task: chain sums from reasoning-gym, answered in ``<answer>...</answer>`` tags.

``gym.make("rlhf_env/Arithmetic-v0")`` builds it on the packaged SmolLM2-135M-Instruct. The
problems are reasoning-gym's ``chain_sum`` ("State the final answer to the following
arithmetic problem: 4 + 5 =") with ``terms`` operands of ``digits`` digits each (1-digit
operands are 0-9; d-digit ones 10**(d-1) to 10**d - 1) joined by ``+`` and ``-``. The prompt is
the policy's chat template over :data:`INSTRUCTION` as the system message, ``demonstrations``
worked examples ("5 + 3 = 8, so <answer>8</answer>") as earlier turns, and the question.

It is one configuration of ``rlhf_env/ReasoningGym-v0`` (:func:`reasoning_gym_options`): a
:class:`~rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv` makes its problems, its held-out set,
its opening chat and its grades; this module serves them one prompt at a time (prompt texts
and a reward function, as TRL and the env's prompt mode take them) and adds the per-sign gold
and the curriculum. ``gym.make("rlhf_env/ReasoningGym-v0", **reasoning_gym_options())`` asks
the same problems in the same chat and pays the same, as a one-turn dialogue
(``tests/test_task_arithmetic.py``).

Reward (a checkable score, no learned model)::

    reward = exact_match + format_weight * format

``exact_match`` is 1 when the content of the response's last ``<answer>...</answer>`` is an
integer equal to the reference answer, ``format`` is 1 when that content is an integer at all
(the env's ``checker="integer"``: :func:`~rlhf_env.hubs.reasoning_gym_problems.
extract_integer`). Both are the task's gold metrics, exact match first. reasoning-gym's own
``score_answer`` is not used: it gives partial credit ("-4." scores 0.67 on some tasks).

Prompts: training draws fresh problems with the env's generator; the held-out set is a fixed
list of ``eval_size`` distinct problems from another seed, and no training draw repeats one of
its questions. Both follow one mix (:func:`strata`, the env's ``mix``): half the answers
negative (``negative_share``) and a quarter of the problems one operand longer
(``harder_share``), the held-out set in exactly those shares (:func:`allocate`), shuffled.
Unbalanced, about one answer in six is negative, and a policy that drops every minus sign gains:
the untrained SmolLM2 writes spurious minus signs, and RL on the unbalanced set learned to drop
them, leaving every negative answer wrong (benchmarks/RESULTS.md); ``exact_match_negative`` and
``exact_match_non_negative`` report each sign apart. With ``curriculum=True`` the training
problems get one operand longer per level (see :class:`Curriculum`); held-out problems stay at
the base mix.

Defaults (measured on SmolLM2-135M-Instruct, 64 held-out problems, sampling at temperature 1
as the env does, 2 samples each): 2 one-digit terms, half the answers negative, a quarter of
the problems with 3 terms: 24.2% exact match (negative answers 12.5%, the others 35.9%), 89%
well-formed, prompts up to 135 tokens (benchmarks/RESULTS.md, issue 28). As reasoning-gym
draws them (``negative_share=None, harder_share=0``: 10 of the 64 answers negative): 35.9%
(s.e. 4.3), greedy 59.4%, 96% / 100% well-formed, 132 tokens. Without the demonstrations the
untrained policy wrote no tags at all (0 of 32 answers under four wordings of the instruction;
benchmarks/RESULTS.md, "Ready-made tasks"), hence ``demonstrations=2``. The env's
``max_new_tokens`` and ``max_prompt_tokens`` default to what the largest problem the task asks
needs (:attr:`Task.env_options`: 32 and 152 for the defaults).

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("rlhf_env/Arithmetic-v0", terms=2, digits=1)
    >>> env.unwrapped.task.gold_name
    'exact_match'
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlhf_env.hubs.reasoning_gym_env import ReasoningGymEnv
from rlhf_env.hubs.reasoning_gym_problems import Problem, Stratum, allocate
from rlhf_env.tasks import reasoning_gym
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.reasoning_gym import CHAIN_SUM_WORKED_ANSWER, GROUP_RECIPE, PPO_RECIPE

#: The system message of every prompt (it replaces a chat template's default one).
INSTRUCTION = "Reply with only the final answer in <answer></answer> tags."

#: Worked examples shown before the question (as earlier chat turns), in this order; the
#: ``demonstrations`` option takes the first n. Their questions are never asked.
DEMONSTRATIONS: tuple[tuple[str, str], ...] = (
    ("5 + 3", "8"),
    ("7 - 9", "-2"),
)

#: reasoning-gym's chain_sum question, before the expression.
QUESTION_PREFIX = "State the final answer to the following arithmetic problem: "

#: The demonstrations' answer turn ("5 + 3 = 8, so <answer>8</answer>").
WORKED_ANSWER = CHAIN_SUM_WORKED_ANSWER

#: How many training prompts the reward remembers (their problems, by prompt text): far more
#: than are ever in flight between a draw and its scoring.
TRAIN_MEMORY = 100_000

#: reasoning-gym's seed of the training problems, and their number (indices are random).
TRAIN_SEED = 1_000_003
TRAIN_SIZE = 2**31 - 1 - TRAIN_SEED


class UnknownPromptError(ValueError):
    """A prompt the task did not make (or one cut by ``max_prompt_tokens``) was scored."""


# -- the configuration --------------------------------------------------------------------------


def strata(negative_share: float | None, harder_share: float, terms: int) -> list[Stratum]:
    """The problem mix: sums of ``terms`` operands and one operand longer (``harder_share`` of
    them), each split by the sign of the answer (``negative_share`` negative; None: as
    reasoning-gym draws them); kinds with no share are left out.

    Example:
        >>> [(k.share, k.options["max_terms"], k.answer_sign) for k in strata(0.5, 0.25, 2)]
        [(0.375, 2, 'negative'), (0.375, 2, 'non_negative'), (0.125, 3, 'negative'), \
(0.125, 3, 'non_negative')]
    """
    kinds = [(terms, 1 - harder_share), (terms + 1, harder_share)]
    signs = (
        [(None, 1.0)]
        if negative_share is None
        else [("negative", negative_share), ("non_negative", 1 - negative_share)]
    )
    return [
        Stratum(kind_share * sign_share, {"min_terms": count, "max_terms": count}, sign)
        for count, kind_share in kinds
        for sign, sign_share in signs
        if kind_share * sign_share > 0
    ]


def demonstration_problems(count: int) -> list[dict[str, Any]]:
    """The first ``count`` of :data:`DEMONSTRATIONS` as reasoning-gym chain_sum problems."""
    return [
        {
            "question": f"{QUESTION_PREFIX}{expression} =",
            "answer": answer,
            "metadata": {"expression": expression},
        }
        for expression, answer in DEMONSTRATIONS[:count]
    ]


@dataclass(frozen=True)
class ArithmeticOptions:
    """The options that decide the Arithmetic task's problems, prompts and grades.

    Attributes:
        terms: operands per problem (>= 1) of the base problems; the curriculum's level 0.
        digits: digits per operand (>= 1; 1-digit operands are 0-9).
        eval_size: held-out problems (distinct, never asked in training; two one-digit terms
            make only 198 problems besides the demonstrations', so keep it well below that).
        eval_seed: which held-out set (reasoning-gym's seed for it).
        demonstrations: worked examples before the question, 0-2 (they teach the answer
            format; 0 for tiny policies with short contexts).
        format_weight: reward for a well-formed ``<answer>N</answer>`` even when N is wrong.
        negative_share: the share of problems, held-out and training alike, whose answer is
            negative (None: as reasoning-gym draws them, about 1 in 6 for two terms); a policy
            cannot gain by dropping minus signs when half the answers need one.
        harder_share: the share of problems with one more operand than ``terms`` (a mix of
            difficulties in both sets).

    Raises:
        ValueError: an option out of range (the message says which and what to do).
    """

    terms: int = 2
    digits: int = 1
    eval_size: int = 64
    eval_seed: int = 0
    demonstrations: int = 2
    format_weight: float = 0.0
    negative_share: float | None = 0.5
    harder_share: float = 0.25

    def __post_init__(self) -> None:
        if self.terms < 1 or self.digits < 1 or self.eval_size < 1:
            raise ValueError(
                f"terms ({self.terms}), digits ({self.digits}) and eval_size ({self.eval_size}) "
                "must all be >= 1"
            )
        for name in ("negative_share", "harder_share"):
            share = getattr(self, name)
            if share is not None and not 0 <= share <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {share}")
        if self.terms == 1 and self.negative_share and self.harder_share < 1:
            raise ValueError(
                "one-operand problems have no negative answers: pass negative_share=None (or 0) "
                "with terms=1, or raise terms"
            )
        if not 0 <= self.demonstrations <= len(DEMONSTRATIONS):
            raise ValueError(
                f"demonstrations must be between 0 and {len(DEMONSTRATIONS)}, got "
                f"{self.demonstrations}"
            )

    def reasoning_gym_options(self) -> dict[str, Any]:
        """The ``rlhf_env/ReasoningGym-v0`` options that ask these problems in this chat and
        grade them so (:class:`~rlhf_env.tasks.reasoning_gym.ProblemOptions`' fields)."""
        mix = strata(self.negative_share, self.harder_share, self.terms)
        return {
            "dataset": "chain_sum",
            "dataset_options": {
                "min_terms": self.terms,
                "max_terms": self.terms,
                "min_digits": self.digits,
                "max_digits": self.digits,
            },
            "mix": [kind.as_options() for kind in mix],
            "size": TRAIN_SIZE,
            "seed": TRAIN_SEED,
            "eval_seed": self.eval_seed,
            "eval_problems": self.eval_size,
            "instruction": INSTRUCTION,
            "demonstrations": demonstration_problems(self.demonstrations),
            "worked_answer": WORKED_ANSWER,
            "checker": "integer",
            "format_weight": self.format_weight,
        }


def reasoning_gym_options(**options: Any) -> dict[str, Any]:
    """The ``rlhf_env/ReasoningGym-v0`` options of the Arithmetic task with ``options`` (the
    fields of :class:`ArithmeticOptions`): the same problems, prompts and grades, played as a
    one-turn dialogue.

    Example:
        >>> options = reasoning_gym_options(digits=2)
        >>> options["dataset"], options["checker"], len(options["mix"])
        ('chain_sum', 'integer', 4)
    """
    return ArithmeticOptions(**options).reasoning_gym_options()


# -- problems -----------------------------------------------------------------------------------


@dataclass
class Curriculum:
    """Raises the training difficulty when the policy succeeds often enough.

    Every scored training episode (not held-out ones) adds its exact match to a window of the
    last ``window`` episodes. When the window is full and its success rate reaches
    ``threshold``, the level rises by one (up to ``max_level``) and the window starts empty;
    each raise is announced with a warning. At level ``L`` training problems have
    ``terms + L`` operands of the same ``digits``; the task's default ``max_new_tokens`` and
    ``max_prompt_tokens`` leave room for level ``max_level``.
    """

    threshold: float = 0.6
    window: int = 256
    max_level: int = 4
    level: int = 0
    _outcomes: deque[bool] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(
                f"curriculum_threshold must be in (0, 1], got {self.threshold}: it is the "
                "success rate over the window that raises the level"
            )
        if self.window < 1 or self.max_level < 0:
            raise ValueError(
                f"curriculum_window ({self.window}) must be >= 1 and curriculum_max_level "
                f"({self.max_level}) >= 0"
            )
        self._outcomes = deque(maxlen=self.window)

    def record(self, outcomes: Iterable[bool]) -> bool:
        """Add training outcomes; True when the level rose."""
        raised = False
        for outcome in outcomes:
            self._outcomes.append(bool(outcome))
            if self.level < self.max_level and len(self._outcomes) == self.window:
                rate = sum(self._outcomes) / self.window
                if rate >= self.threshold:
                    self.level += 1
                    self._outcomes.clear()
                    raised = True
                    warnings.warn(
                        f"Arithmetic curriculum: success rate {rate:.2f} over the last "
                        f"{self.window} training episodes reached {self.threshold}; level "
                        f"{self.level - 1} -> {self.level} (one more operand; held-out "
                        "problems stay at level 0)",
                        stacklevel=3,
                    )
        return raised


class ArithmeticProblems:
    """The Arithmetic configuration of a :class:`ReasoningGymEnv`, served one turn at a time:
    prompt texts (the policy's chat template over the env's opening chat) and their problems.

    Args:
        context: the policy the prompts are formatted for (its chat template).
        env: the configuration's env (:func:`reasoning_gym_options`).
        terms, digits: the base difficulty (operands per problem, digits per operand).
        curriculum: raises the training difficulty (None: fixed).
    """

    def __init__(
        self,
        context: TaskContext,
        env: ReasoningGymEnv,
        terms: int,
        digits: int,
        curriculum: Curriculum | None = None,
    ) -> None:
        self.context = context
        self.env = env
        self.terms, self.digits = terms, digits
        self.curriculum = curriculum
        self.eval_problems = [env.problem_at("eval", i) for i in range(len(env.eval_problems))]
        self.eval_prompts = [self.prompt(problem.question) for problem in self.eval_problems]
        self._eval = dict(zip(self.eval_prompts, self.eval_problems, strict=True))
        self._train: OrderedDict[str, Problem] = OrderedDict()
        self._envs = {0: env}  # by curriculum level
        #: Facts for reports (the task's ``details``), the level kept current.
        self.details: dict[str, Any] = {
            "source": "reasoning-gym chain_sum (rlhf_env/ReasoningGym-v0)",
            "terms": terms,
            "digits": digits,
            "level": self.level,
            "eval_size": len(self.eval_problems),
            "eval_negative": sum(_answer(p) < 0 for p in self.eval_problems),
            "eval_harder": sum(_terms(p) > terms for p in self.eval_problems),
            "demonstrations": len(env.history) // 2,
            "longest_eval_prompt_tokens": self.longest_prompt_tokens(),
        }

    @property
    def level(self) -> int:
        """The curriculum level of the training problems (0 without a curriculum)."""
        return self.curriculum.level if self.curriculum is not None else 0

    def record(self, training_outcomes: Sequence[bool]) -> None:
        """Feed the exact matches of scored training prompts to the curriculum (if any)."""
        if self.curriculum is not None and self.curriculum.record(training_outcomes):
            self.details["level"] = self.curriculum.level

    def prompt(self, question: str) -> str:
        """The prompt text of ``question``: the policy's chat template over the env's opening
        chat (:data:`INSTRUCTION` as the system message, the demonstrations as earlier turns,
        the question)."""
        return self.context.chat_prompt(self.env.opening(question))

    def sample(self, rng: np.random.Generator) -> str:
        """A fresh training prompt at the current level, drawn with ``rng`` (the env's): the
        configuration env's training problem of a random seed (a kind by the mix's shares, never
        a held-out question); its problem is remembered for the reward."""
        env = self._level_env()
        problem = env.problem_at("train", int(rng.integers(env.size)))
        prompt = self.prompt(problem.question)
        self._train[prompt] = problem
        self._train.move_to_end(prompt)
        if len(self._train) > TRAIN_MEMORY:
            self._train.popitem(last=False)
        return prompt

    def problems(self, prompts: Sequence[str]) -> list[Problem]:
        """The problem of each prompt, by its text.

        Raises:
            UnknownPromptError: a prompt the task did not make (or one cut by
                ``max_prompt_tokens``).
        """
        found = []
        for prompt in prompts:
            problem = self._eval.get(prompt) or self._train.get(prompt)
            if problem is None:
                raise UnknownPromptError(
                    f"prompt {prompt[-120:]!r} (its last 120 characters) is not one of this "
                    f"Arithmetic task's prompts (the held-out ones or the last {TRAIN_MEMORY} "
                    "training draws); a prompt cut by max_prompt_tokens no longer matches: "
                    f"raise max_prompt_tokens (the held-out prompts are up to "
                    f"{self.longest_prompt_tokens()} tokens), and score only prompts the task "
                    "made"
                )
            found.append(problem)
        return found

    def answers(self, prompts: Sequence[str]) -> list[tuple[int, bool]]:
        """``(reference answer, is held out)`` of each prompt, by its text."""
        return [(_answer(p), p.split == "eval") for p in self.problems(prompts)]

    def longest_prompt_tokens(self) -> int:
        """Tokens of the longest held-out prompt under the policy's tokenizer."""
        return max(len(self.context.tokenizer(p)["input_ids"]) for p in self.eval_prompts)

    def _level_env(self) -> ReasoningGymEnv:
        """The env whose training problems are the current level's: each sum of the mix
        ``level`` operands longer; the held-out problems stay at level 0."""
        level = self.level
        if level not in self._envs:
            longer = [
                dataclasses.replace(kind, options={k: v + level for k, v in kind.options.items()})
                for kind in self.env.mix
            ]
            self._envs[level] = self.env.with_training_mix(longer)
        return self._envs[level]


def _answer(problem: Problem) -> int:
    return int(problem.entry["answer"])


def _terms(problem: Problem) -> int:
    return int(problem.entry["metadata"]["num_terms"])


# -- reward -------------------------------------------------------------------------------------


class ArithmeticReward:
    """The training reward: ``exact_match + format_weight * format`` per response (the
    configuration env's grade, :meth:`Problem.grade
    <rlhf_env.hubs.reasoning_gym_problems.Problem.grade>`); feeds the curriculum (if any) with
    the exact matches of training prompts.

    Attributes:
        problems: the task's problems (by prompt, the curriculum level).
    """

    def __init__(self, problems: ArithmeticProblems) -> None:
        self.problems = problems

    @property
    def format_weight(self) -> float:
        """The weight of the format term."""
        return self.problems.env.format_weight

    @property
    def level(self) -> int:
        """The curriculum level of the training problems."""
        return self.problems.level

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per response (see the class docstring)."""
        problems = self.problems.problems(prompts)
        grades = [p.grade(r) for p, r in zip(problems, responses, strict=True)]
        self.problems.record(
            [g.correct for g, p in zip(grades, problems, strict=True) if p.split == "train"]
        )
        return [grade.reward for grade in grades]

    def exact_match(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The gold score: 1.0 where the final answer is right (does not feed the curriculum)."""
        return [float(grade.correct) for _, grade in self._graded(prompts, responses)]

    def exact_match_negative(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Exact match of the responses to problems with a negative answer; NaN for the others
        (left out of the mean): the figure a policy that drops minus signs loses."""
        return self._by_sign(prompts, responses, negative=True)

    def exact_match_non_negative(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Exact match of the responses to problems whose answer is 0 or more; NaN for the
        others."""
        return self._by_sign(prompts, responses, negative=False)

    def format(self, prompts: list[str], responses: list[str]) -> list[float]:
        """1.0 where the response's last ``<answer>...</answer>`` holds an integer, right or
        wrong."""
        return [float(grade.formatted) for _, grade in self._graded(prompts, responses)]

    def _graded(self, prompts: list[str], responses: list[str]) -> list[tuple[Problem, Any]]:
        problems = self.problems.problems(prompts)
        return [(p, p.grade(r)) for p, r in zip(problems, responses, strict=True)]

    def _by_sign(self, prompts: list[str], responses: list[str], negative: bool) -> list[float]:
        return [
            float(grade.correct) if (_answer(problem) < 0) == negative else math.nan
            for problem, grade in self._graded(prompts, responses)
        ]


# -- the task -----------------------------------------------------------------------------------


def build(
    context: TaskContext,
    curriculum: bool = False,
    curriculum_threshold: float = 0.6,
    curriculum_window: int = 256,
    curriculum_max_level: int = 4,
    **problem_options: Any,
) -> Task:
    """The Arithmetic task for ``context``'s policy.

    Args:
        curriculum: raise the training difficulty as the policy succeeds (:class:`Curriculum`).
        curriculum_threshold: success rate over the window that raises the level.
        curriculum_window: training episodes the success rate is measured over.
        curriculum_max_level: the highest level (``terms + curriculum_max_level`` operands).
        problem_options: the fields of :class:`ArithmeticOptions` (the difficulty, the mix, the
            held-out set, the demonstrations, the format term).

    Returns:
        The task: ``reward_fn`` is an :class:`ArithmeticReward`, the gold metrics are
        ``exact_match`` (first), ``format``, and exact match by the sign of the answer
        (``exact_match_negative``, ``exact_match_non_negative``: NaN for the other sign's
        responses, left out of their means), ``details["level"]`` (also ``reward_fn.level``) is
        the curriculum's current level, ``details["eval_negative"]`` and ``["eval_harder"]``
        count the held-out problems of each kind, and ``env_options`` fit the largest problem
        (see :func:`_env_options`).
    """
    options = ArithmeticOptions(**problem_options)
    schedule = (
        Curriculum(curriculum_threshold, curriculum_window, curriculum_max_level)
        if curriculum
        else None
    )
    env = reasoning_gym.ProblemOptions(**options.reasoning_gym_options()).make_env()
    problems = ArithmeticProblems(context, env, options.terms, options.digits, schedule)
    reward = ArithmeticReward(problems)
    longer = (1 if options.harder_share > 0 else 0) + (curriculum_max_level if curriculum else 0)
    return Task(
        name="Arithmetic",
        train_prompts=problems.sample,
        eval_prompts=problems.eval_prompts,
        reward_fn=reward,
        gold={
            "exact_match": reward.exact_match,
            "format": reward.format,
            "exact_match_negative": reward.exact_match_negative,
            "exact_match_non_negative": reward.exact_match_non_negative,
        },
        env_options=_env_options(problems, options.terms + longer),
        details=problems.details,
    )


def _env_options(problems: ArithmeticProblems, top_terms: int) -> dict[str, int]:
    """``max_new_tokens`` and ``max_prompt_tokens`` that fit the largest problem the task asks
    (``top_terms`` operands of the most digits): its worked answer as the demonstrations
    write it plus 8 tokens, and the longest prompt plus 16, each rounded up to a multiple of 8."""
    largest = 10**problems.digits - 1
    expression = " + ".join([str(largest)] * top_terms)
    answer = str(-largest * max(top_terms - 2, 1))
    answer = max(answer, str(largest * top_terms), key=len)
    tokenizer = problems.context.tokenizer
    worked = WORKED_ANSWER.format(answer=answer, metadata={"expression": expression})
    new_tokens = len(tokenizer(worked, add_special_tokens=False)["input_ids"]) + 8
    prompt = problems.prompt(f"{QUESTION_PREFIX}{expression} =")
    prompt_tokens = max(len(tokenizer(prompt)["input_ids"]), problems.longest_prompt_tokens()) + 16
    return {
        "max_new_tokens": -(-new_tokens // 8) * 8,
        "max_prompt_tokens": -(-prompt_tokens // 8) * 8,
    }


#: A suite run's budget: 6,144 tokens of full fine-tuning (the recipes' measurement:
#: :data:`rlhf_env.tasks.reasoning_gym.GROUP_RECIPE`), each held-out problem answered twice:
#: with one 0-or-1 answer per problem the sampling noise was most of the spread between seeds
#: (PPO +0.17 in two three-seed runs, Holm p 0.045 and 0.094; answered twice, seeds 6-8: +0.24,
#: p < 0.001; benchmarks/RESULTS.md, issue 28).
BUDGET = SuiteBudget(timesteps=6144, training_setup="full", eval_samples=2)

SPEC = TaskSpec(
    name="Arithmetic",
    description="chain sums from reasoning-gym, answered in <answer> tags (ReasoningGym-v0's "
    "Arithmetic configuration, one prompt at a time); reward and gold = exact match on "
    "held-out problems (optional format term and curriculum)",
    build=build,
    shared_options=ArithmeticOptions,
    smoke_options={
        "demonstrations": 0,
        "eval_size": 8,
        "max_new_tokens": 8,
        "max_prompt_tokens": 128,
    },
    recipes={"ppo": PPO_RECIPE, "rloo": GROUP_RECIPE, "grpo": GROUP_RECIPE},
    budget=BUDGET,
)

__all__ = [
    "BUDGET",
    "DEMONSTRATIONS",
    "INSTRUCTION",
    "SPEC",
    "ArithmeticOptions",
    "ArithmeticProblems",
    "ArithmeticReward",
    "Curriculum",
    "UnknownPromptError",
    "allocate",
    "build",
    "demonstration_problems",
    "reasoning_gym_options",
    "strata",
]
