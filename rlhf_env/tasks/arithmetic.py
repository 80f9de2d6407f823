"""The Arithmetic task: chain sums from reasoning-gym, answered in ``<answer>...</answer>`` tags.

``gym.make("rlhf_env/Arithmetic-v0")`` builds it on the packaged SmolLM2-135M-Instruct. The
problems are reasoning-gym's ``chain_sum`` ("State the final answer to the following
arithmetic problem: 4 + 5 =") with ``terms`` operands of ``digits`` digits each (1-digit
operands are 0-9; d-digit ones 10**(d-1) to 10**d - 1) joined by ``+`` and ``-``. The prompt is
the policy's chat template over :data:`INSTRUCTION` as the system message, ``demonstrations``
worked examples ("5 + 3 = 8, so <answer>8</answer>") as earlier turns, and the question.

Reward (a checkable score, no learned model)::

    reward = exact_match + format_weight * format

``exact_match`` is 1 when the content of the response's last ``<answer>...</answer>`` is an
integer equal to the reference answer (:func:`is_correct`), ``format`` is 1 when that content is
an integer at all (:func:`extract_answer`). Both are the task's gold metrics, exact match first.
reasoning-gym's own ``score_answer`` is not used: it gives partial credit ("-4." scores 0.67
on some tasks).

Prompts: training draws fresh problems with the env's generator; the held-out set is a fixed
list of ``eval_size`` distinct problems from another seed, and no training draw repeats one of
its questions. With ``curriculum=True`` the training problems get one operand longer per level
(see :class:`Curriculum`); held-out problems stay at the base difficulty.

Defaults (measured on SmolLM2-135M-Instruct, 64 held-out problems, sampling at temperature 1
as the env does, 2 samples each / greedy): 2 one-digit terms, 35.9% (s.e. 4.3) / 59.4% exact
match, 96% / 100% well-formed, with a 132-token prompt. Measured with an earlier prompt (the
instruction after every question, SmolLM2's default system message; 181 tokens): 2 two-digit
terms 3% / 17%, 3 one-digit terms 9% / 9%, and without the demonstrations no tags at all (0 of
32 under four wordings of the instruction), hence ``demonstrations=2``. The env's
``max_new_tokens`` and ``max_prompt_tokens`` default to what the largest problem the task asks
needs (:attr:`Task.env_options`: 32 and 152 for the defaults).

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("rlhf_env/Arithmetic-v0", terms=2, digits=1)
    >>> env.unwrapped.task.gold_name
    'exact_match'
"""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlhf_env.extras import require
from rlhf_env.tasks.base import Task, TaskContext, TaskSpec

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

#: How many training prompts the reward remembers (their answers, by prompt text): far more
#: than are ever in flight between a draw and its scoring.
TRAIN_MEMORY = 100_000

_TRAIN_SEED = 1_000_003  # reasoning-gym seed of the training draws (indices are random)
_MAX_TRIES = 1_000  # draws before giving up on finding a problem outside the held-out set
_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_INTEGER = re.compile(r"[+-]?[0-9]+")


# -- answers ------------------------------------------------------------------------------------


def extract_answer(text: str) -> str | None:
    """The final answer of ``text``: the content of its last ``<answer>...</answer>``, stripped
    of surrounding whitespace, when that content is an integer (ASCII digits with an optional
    sign, no decimal point, no thousands separator, no words); otherwise None. There is no
    fallback to the last number of the text.

    Examples:
        >>> extract_answer("4 + 5 = 9, so <answer>9</answer>")
        '9'
        >>> extract_answer("<answer> -4 </answer>")
        '-4'
        >>> extract_answer("<answer>1</answer> no, <answer>2</answer>")
        '2'
        >>> extract_answer("<answer>-4.</answer>") is None
        True
        >>> extract_answer("<answer>4 apples</answer>") is None
        True
        >>> extract_answer("<answer>3 4</answer>") is None
        True
        >>> extract_answer("the answer is 9") is None
        True
    """
    matches = _TAG.findall(text)
    if not matches:
        return None
    content = matches[-1].strip()
    return content if _INTEGER.fullmatch(content) else None


def is_correct(response: str, answer: str | int) -> bool:
    """Whether ``response``'s final answer (:func:`extract_answer`) equals ``answer`` as an
    integer ("+7" and "07" equal 7).

    Examples:
        >>> is_correct("<answer>-30</answer>", "-30")
        True
        >>> is_correct("<answer>-30</answer>", 30)
        False
        >>> is_correct("57 - 87 = -30", "-30")  # no tag: not an answer
        False
    """
    extracted = extract_answer(response)
    return extracted is not None and int(extracted) == int(answer)


class UnknownPromptError(ValueError):
    """A prompt the task did not make (or one cut by ``max_prompt_tokens``) was scored."""


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
    """The task's problems and their answers by prompt text.

    Args:
        context: the policy the prompts are formatted for (its chat template).
        terms, digits: the base difficulty (operands per problem, digits per operand).
        eval_size: distinct held-out problems.
        eval_seed: reasoning-gym seed of the held-out problems.
        demonstrations: worked examples in each prompt (0 to ``len(DEMONSTRATIONS)``).
        curriculum: raises the training difficulty (None: fixed).
    """

    def __init__(
        self,
        context: TaskContext,
        terms: int,
        digits: int,
        eval_size: int,
        eval_seed: int,
        demonstrations: int,
        curriculum: Curriculum | None = None,
    ) -> None:
        self._reasoning_gym = require("reasoning_gym", "tasks", "the Arithmetic task")
        self.context = context
        self.terms, self.digits = terms, digits
        self.curriculum = curriculum
        self.demonstrations = DEMONSTRATIONS[:demonstrations]
        excluded = {QUESTION_PREFIX + f"{expression} =" for expression, _ in self.demonstrations}
        self.eval_problems = self._held_out(eval_size, eval_seed, excluded)
        self._excluded = excluded | {question for question, _ in self.eval_problems}
        self.eval_prompts = [self.prompt(question) for question, _ in self.eval_problems]
        self._eval_answers = {
            prompt: answer
            for prompt, (_, answer) in zip(self.eval_prompts, self.eval_problems, strict=True)
        }
        self._train_answers: OrderedDict[str, int] = OrderedDict()
        self._datasets: dict[int, Any] = {}
        #: Facts for reports (the task's ``details``), the level kept current.
        self.details: dict[str, Any] = {
            "source": "reasoning-gym chain_sum",
            "terms": terms,
            "digits": digits,
            "level": self.level,
            "eval_size": eval_size,
            "demonstrations": demonstrations,
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
        """The prompt text of ``question``: the chat of :data:`INSTRUCTION` as the system
        message, the demonstrations as earlier turns, then the question."""
        messages = [{"role": "system", "content": INSTRUCTION}]
        for expression, answer in self.demonstrations:
            messages.append({"role": "user", "content": f"{QUESTION_PREFIX}{expression} ="})
            messages.append(
                {
                    "role": "assistant",
                    "content": f"{expression} = {answer}, so <answer>{answer}</answer>",
                }
            )
        messages.append({"role": "user", "content": question})
        return self.context.chat_prompt(messages)

    def sample(self, rng: np.random.Generator) -> str:
        """A fresh training prompt at the current level, drawn with ``rng`` (the env's), whose
        question is not a held-out one; its answer is remembered for the reward."""
        dataset = self._dataset(self.terms + self.level)
        for _ in range(_MAX_TRIES):
            entry = dataset[int(rng.integers(dataset.size))]
            if entry["question"] not in self._excluded:
                prompt = self.prompt(entry["question"])
                self._train_answers[prompt] = int(entry["answer"])
                self._train_answers.move_to_end(prompt)
                if len(self._train_answers) > TRAIN_MEMORY:
                    self._train_answers.popitem(last=False)
                return prompt
        raise ValueError(
            f"found no training problem outside the {len(self.eval_problems)} held-out ones in "
            f"{_MAX_TRIES} draws (terms={self.terms + self.level}, digits={self.digits}): the "
            "held-out set takes nearly every problem; lower eval_size or raise terms or digits"
        )

    def answers(self, prompts: Sequence[str]) -> list[tuple[int, bool]]:
        """``(reference answer, is held out)`` of each prompt, by its text."""
        found = []
        for prompt in prompts:
            if prompt in self._eval_answers:
                found.append((self._eval_answers[prompt], True))
            elif prompt in self._train_answers:
                found.append((self._train_answers[prompt], False))
            else:
                raise UnknownPromptError(
                    f"prompt {prompt[-120:]!r} (its last 120 characters) is not one of this "
                    f"Arithmetic task's prompts (the held-out ones or the last {TRAIN_MEMORY} "
                    "training draws); a prompt cut by max_prompt_tokens no longer matches: "
                    f"raise max_prompt_tokens (the held-out prompts are up to "
                    f"{self.longest_prompt_tokens()} tokens), and score only prompts the task "
                    "made"
                )
        return found

    def longest_prompt_tokens(self) -> int:
        """Tokens of the longest held-out prompt under the policy's tokenizer."""
        return max(len(self.context.tokenizer(p)["input_ids"]) for p in self.eval_prompts)

    def _dataset(self, terms: int) -> Any:
        if terms not in self._datasets:
            self._datasets[terms] = self._chain_sum(
                terms, size=2**31 - 1 - _TRAIN_SEED, seed=_TRAIN_SEED
            )
        return self._datasets[terms]

    def _chain_sum(self, terms: int, size: int, seed: int) -> Any:
        return self._reasoning_gym.create_dataset(
            "chain_sum", size=size, seed=seed, min_terms=terms, max_terms=terms,
            min_digits=self.digits, max_digits=self.digits,
        )  # fmt: skip

    def _held_out(self, size: int, seed: int, excluded: set[str]) -> list[tuple[str, int]]:
        """``size`` distinct problems from seed ``seed``, none of them ``excluded``."""
        dataset = self._chain_sum(self.terms, size=2**31 - 1 - seed, seed=seed)
        problems: dict[str, int] = {}
        for index in range(50 * size):
            entry = dataset[index]
            if entry["question"] not in excluded:
                problems.setdefault(entry["question"], int(entry["answer"]))
                if len(problems) == size:
                    return list(problems.items())
        raise ValueError(
            f"terms={self.terms}, digits={self.digits} make only {len(problems)} distinct "
            f"problems, fewer than eval_size={size} (and training needs some left over); lower "
            "eval_size or raise terms or digits"
        )


# -- reward -------------------------------------------------------------------------------------


class ArithmeticReward:
    """The training reward: ``exact_match + format_weight * format`` per response; feeds the
    curriculum (if any) with the exact matches of training prompts.

    Attributes:
        problems: the task's problems (answers by prompt, the curriculum level).
        format_weight: the weight of the format term.
    """

    def __init__(self, problems: ArithmeticProblems, format_weight: float = 0.0) -> None:
        self.problems = problems
        self.format_weight = float(format_weight)

    @property
    def level(self) -> int:
        """The curriculum level of the training problems."""
        return self.problems.level

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per response (see the class docstring)."""
        answers = self.problems.answers(prompts)
        correct = [is_correct(r, a) for r, (a, _) in zip(responses, answers, strict=True)]
        formatted = [extract_answer(r) is not None for r in responses]
        self.problems.record(
            [ok for ok, (_, held_out) in zip(correct, answers, strict=True) if not held_out]
        )
        return [
            float(c) + self.format_weight * float(f)
            for c, f in zip(correct, formatted, strict=True)
        ]

    def exact_match(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The gold score: 1.0 where the final answer is right (does not feed the curriculum)."""
        answers = self.problems.answers(prompts)
        return [float(is_correct(r, a)) for r, (a, _) in zip(responses, answers, strict=True)]

    def format(self, prompts: list[str], responses: list[str]) -> list[float]:
        """1.0 where the response's last ``<answer>...</answer>`` holds an integer, right or
        wrong (:func:`extract_answer`)."""
        return [float(extract_answer(r) is not None) for r in responses]


# -- the task -----------------------------------------------------------------------------------


def build(
    context: TaskContext,
    terms: int = 2,
    digits: int = 1,
    eval_size: int = 64,
    eval_seed: int = 0,
    demonstrations: int = 2,
    format_weight: float = 0.0,
    curriculum: bool = False,
    curriculum_threshold: float = 0.6,
    curriculum_window: int = 256,
    curriculum_max_level: int = 4,
) -> Task:
    """The Arithmetic task for ``context``'s policy.

    Args:
        terms: operands per problem (>= 1); the curriculum's level 0.
        digits: digits per operand (>= 1; 1-digit operands are 0-9).
        eval_size: held-out problems (distinct, never asked in training; two one-digit terms
            make only 198 problems besides the demonstrations', so keep it well below that).
        eval_seed: which held-out set (reasoning-gym's seed for it).
        demonstrations: worked examples before the question, 0-2 (they teach the answer
            format; 0 for tiny policies with short contexts).
        format_weight: reward for a well-formed ``<answer>N</answer>`` even when N is wrong.
        curriculum: raise the training difficulty as the policy succeeds (:class:`Curriculum`).
        curriculum_threshold: success rate over the window that raises the level.
        curriculum_window: training episodes the success rate is measured over.
        curriculum_max_level: the highest level (``terms + curriculum_max_level`` operands).

    Returns:
        The task: ``reward_fn`` is an :class:`ArithmeticReward`, the gold metrics are
        ``exact_match`` and ``format``, ``details["level"]`` (also ``reward_fn.level``) is the
        curriculum's current level, and ``env_options`` fit the largest problem (see
        :func:`_env_options`).
    """
    if terms < 1 or digits < 1 or eval_size < 1:
        raise ValueError(
            f"terms ({terms}), digits ({digits}) and eval_size ({eval_size}) must all be >= 1"
        )
    if not math.isfinite(format_weight):
        raise ValueError(f"format_weight must be a finite number, got {format_weight}")
    if not 0 <= demonstrations <= len(DEMONSTRATIONS):
        raise ValueError(
            f"demonstrations must be between 0 and {len(DEMONSTRATIONS)}, got {demonstrations}"
        )
    schedule = (
        Curriculum(curriculum_threshold, curriculum_window, curriculum_max_level)
        if curriculum
        else None
    )
    problems = ArithmeticProblems(
        context, terms, digits, eval_size, eval_seed, demonstrations, schedule
    )
    reward = ArithmeticReward(problems, format_weight)
    return Task(
        name="Arithmetic",
        train_prompts=problems.sample,
        eval_prompts=problems.eval_prompts,
        reward_fn=reward,
        gold={"exact_match": reward.exact_match, "format": reward.format},
        env_options=_env_options(problems, terms + (curriculum_max_level if curriculum else 0)),
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
    worked = f"{expression} = {answer}, so <answer>{answer}</answer>"
    new_tokens = len(tokenizer(worked, add_special_tokens=False)["input_ids"]) + 8
    prompt = problems.prompt(f"{QUESTION_PREFIX}{expression} =")
    prompt_tokens = max(len(tokenizer(prompt)["input_ids"]), problems.longest_prompt_tokens()) + 16
    return {
        "max_new_tokens": -(-new_tokens // 8) * 8,
        "max_prompt_tokens": -(-prompt_tokens // 8) * 8,
    }


SPEC = TaskSpec(
    name="Arithmetic",
    description="chain sums from reasoning-gym, answered in <answer> tags; reward and "
    "gold = exact match on held-out problems (optional format term and curriculum)",
    build=build,
    smoke_options={
        "demonstrations": 0,
        "eval_size": 8,
        "max_new_tokens": 8,
        "max_prompt_tokens": 128,
    },
)

__all__ = [
    "SPEC",
    "ArithmeticProblems",
    "ArithmeticReward",
    "Curriculum",
    "UnknownPromptError",
    "build",
    "extract_answer",
    "is_correct",
]
