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
its questions. Both follow one mix (:func:`strata`): half the answers negative
(``negative_share``) and a quarter of the problems one operand longer (``harder_share``), the
held-out set in exactly those shares (:func:`allocate`), shuffled. Unbalanced, about one
answer in six is negative, and a policy that drops every minus sign gains: the untrained
SmolLM2 writes spurious minus signs, and RL on the unbalanced set learned to drop them, leaving
every negative answer wrong (benchmarks/RESULTS.md); ``exact_match_negative`` and
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

import math
import re
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlhf_env.extras import require
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec

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


@dataclass(frozen=True)
class Stratum:
    """A kind of problem and its share of both the held-out set and the training draws:
    ``extra_terms`` operands beyond the base ``terms``, and the sign of the answer (negative
    or not; None: either, as reasoning-gym draws them)."""

    extra_terms: int
    negative: bool | None
    share: float

    def admits(self, answer: int) -> bool:
        """Whether a problem with ``answer`` belongs here (by its sign)."""
        return self.negative is None or (answer < 0) == self.negative


def strata(negative_share: float | None, harder_share: float) -> list[Stratum]:
    """The problem mix: base and one-operand-longer problems (``harder_share`` of them), each
    split by the sign of the answer (``negative_share`` negative; None: unbalanced)."""
    kinds = [(0, 1 - harder_share), (1, harder_share)]
    signs = (
        [(None, 1.0)]
        if negative_share is None
        else [(True, negative_share), (False, 1 - negative_share)]
    )
    return [
        Stratum(extra, negative, kind_share * sign_share)
        for extra, kind_share in kinds
        for negative, sign_share in signs
        if kind_share * sign_share > 0
    ]


def allocate(total: int, shares: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``shares`` (largest remainders; sums to ``total``).

    Examples:
        >>> allocate(64, [0.375, 0.375, 0.125, 0.125])
        [24, 24, 8, 8]
        >>> allocate(8, [0.375, 0.375, 0.125, 0.125])
        [3, 3, 1, 1]
        >>> allocate(5, [0.5, 0.5])  # a tie goes to the first
        [3, 2]
    """
    exact = [total * share / sum(shares) for share in shares]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - exact[i])
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


class ArithmeticProblems:
    """The task's problems and their answers by prompt text.

    Args:
        context: the policy the prompts are formatted for (its chat template).
        terms, digits: the base difficulty (operands per problem, digits per operand).
        eval_size: distinct held-out problems.
        eval_seed: reasoning-gym seed of the held-out problems.
        demonstrations: worked examples in each prompt (0 to ``len(DEMONSTRATIONS)``).
        curriculum: raises the training difficulty (None: fixed).
        mix: the kinds of problem and their shares (:func:`strata`; default: base problems,
            either sign, as reasoning-gym draws them).
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
        mix: Sequence[Stratum] = (Stratum(0, None, 1.0),),
    ) -> None:
        self._reasoning_gym = require("reasoning_gym", "tasks", "the Arithmetic task")
        self.context = context
        self.terms, self.digits = terms, digits
        self.curriculum = curriculum
        self.mix = list(mix)
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
            "eval_negative": sum(answer < 0 for _, answer in self.eval_problems),
            "eval_harder": sum(
                question.count(" + ") + question.count(" - ") >= terms
                for question, _ in self.eval_problems
            ),
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
        """A fresh training prompt at the current level, drawn with ``rng`` (the env's): a
        kind of problem by the mix's shares, then a problem of that kind whose question is not
        a held-out one; its answer is remembered for the reward."""
        stratum = self.mix[0]
        if len(self.mix) > 1:  # one kind draws nothing here: the same stream as without a mix
            shares = np.array([kind.share for kind in self.mix])
            stratum = self.mix[int(rng.choice(len(self.mix), p=shares / shares.sum()))]
        dataset = self._dataset(self.terms + stratum.extra_terms + self.level)
        for _ in range(_MAX_TRIES):
            entry = dataset[int(rng.integers(dataset.size))]
            if entry["question"] not in self._excluded and stratum.admits(int(entry["answer"])):
                prompt = self.prompt(entry["question"])
                self._train_answers[prompt] = int(entry["answer"])
                self._train_answers.move_to_end(prompt)
                if len(self._train_answers) > TRAIN_MEMORY:
                    self._train_answers.popitem(last=False)
                return prompt
        raise ValueError(
            f"found no training problem outside the {len(self.eval_problems)} held-out ones in "
            f"{_MAX_TRIES} draws (terms={self.terms + stratum.extra_terms + self.level}, "
            f"digits={self.digits}, {_sign_words(stratum)}): the held-out set takes nearly "
            "every such problem; lower eval_size or negative_share, or raise terms or digits"
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
        """``size`` distinct problems from seed ``seed``, none of them ``excluded``, each kind
        of the mix taking its share (:func:`allocate`), shuffled with ``seed`` so that the
        first ones (a curve's subset, a sample table) mix the kinds too; one kind keeps
        reasoning-gym's order."""
        counts = allocate(size, [stratum.share for stratum in self.mix])
        held_out: list[tuple[str, int]] = []
        for stratum, count in zip(self.mix, counts, strict=True):
            terms = self.terms + stratum.extra_terms
            dataset = self._chain_sum(terms, size=2**31 - 1 - seed, seed=seed)
            problems: dict[str, int] = {}
            for index in range(200 * count):
                if len(problems) == count:
                    break
                entry = dataset[index]
                answer = int(entry["answer"])
                if entry["question"] not in excluded and stratum.admits(answer):
                    problems.setdefault(entry["question"], answer)
            if len(problems) < count:
                raise ValueError(
                    f"terms={terms}, digits={self.digits} make only {len(problems)} distinct "
                    f"problems with {_sign_words(stratum)}, fewer than the {count} of "
                    f"eval_size={size} they should take (and training needs some left over); "
                    "lower eval_size (or negative_share), or raise terms or digits"
                )
            held_out.extend(problems.items())
        if len(self.mix) == 1:
            return held_out
        order = np.random.default_rng(seed).permutation(len(held_out))
        return [held_out[i] for i in order]


def _sign_words(stratum: Stratum) -> str:
    return {None: "any answer", True: "a negative answer", False: "a non-negative answer"}[
        stratum.negative
    ]


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

    def exact_match_negative(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Exact match of the responses to problems with a negative answer; NaN for the others
        (left out of the mean): the figure a policy that drops minus signs loses."""
        return self._by_sign(prompts, responses, negative=True)

    def exact_match_non_negative(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Exact match of the responses to problems whose answer is 0 or more; NaN for the
        others."""
        return self._by_sign(prompts, responses, negative=False)

    def _by_sign(self, prompts: list[str], responses: list[str], negative: bool) -> list[float]:
        answers = self.problems.answers(prompts)
        return [
            float(is_correct(r, a)) if (a < 0) == negative else math.nan
            for r, (a, _) in zip(responses, answers, strict=True)
        ]

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
    negative_share: float | None = 0.5,
    harder_share: float = 0.25,
) -> Task:
    """The Arithmetic task for ``context``'s policy.

    Args:
        terms: operands per problem (>= 1) of the base problems; the curriculum's level 0.
        digits: digits per operand (>= 1; 1-digit operands are 0-9).
        negative_share: the share of problems, held-out and training alike, whose answer is
            negative (None: as reasoning-gym draws them, about 1 in 6 for two terms); a policy
            cannot gain by dropping minus signs when half the answers need one.
        harder_share: the share of problems with one more operand than ``terms`` (a mix of
            difficulties in both sets).
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
        ``exact_match`` (first), ``format``, and exact match by the sign of the answer
        (``exact_match_negative``, ``exact_match_non_negative``: NaN for the other sign's
        responses, left out of their means), ``details["level"]`` (also ``reward_fn.level``) is
        the curriculum's current level, ``details["eval_negative"]`` and ``["eval_harder"]``
        count the held-out problems of each kind, and ``env_options`` fit the largest problem
        (see :func:`_env_options`).
    """
    if terms < 1 or digits < 1 or eval_size < 1:
        raise ValueError(
            f"terms ({terms}), digits ({digits}) and eval_size ({eval_size}) must all be >= 1"
        )
    for name, share in (("negative_share", negative_share), ("harder_share", harder_share)):
        if share is not None and not 0 <= share <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {share}")
    if terms == 1 and negative_share and harder_share < 1:
        raise ValueError(
            "one-operand problems have no negative answers: pass negative_share=None (or 0) "
            "with terms=1, or raise terms"
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
    mix = strata(negative_share, harder_share)
    problems = ArithmeticProblems(
        context, terms, digits, eval_size, eval_seed, demonstrations, schedule, mix
    )
    reward = ArithmeticReward(problems, format_weight)
    top_terms = (
        terms + max(s.extra_terms for s in mix) + (curriculum_max_level if curriculum else 0)
    )
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
        env_options=_env_options(problems, top_terms),
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


#: Groups of 8, lr 1e-5, one epoch, minibatches of 16, beta 0.01, every weight trained (the
#: budget's ``full``): on the balanced problems, 6,144 tokens, four seeds, PPO raised held-out
#: exact match by +0.213 (Holm p = 0.006) and RLOO by +0.158 (p = 0.019), the negative answers
#: holding (-0.004 and +0.043); GRPO by +0.100 (p = 0.16) (benchmarks/RESULTS.md, issue 28,
#: item 4). With the top 6 blocks alone (``frozen:24``) at lr 1e-4, 10,240 tokens bought +0.06
#: at most and the policy dropped its minus signs.
GROUP_RECIPE: dict[str, Any] = {
    "group_size": 8, "learning_rate": 1e-5, "epochs": 1, "minibatch_size": 16, "kl_coef": 0.01,
}  # fmt: skip

#: PPO's settings here: the group recipe's optimiser and beta (the agents then differ in their
#: advantage estimates alone).
PPO_RECIPE: dict[str, Any] = {
    key: value for key, value in GROUP_RECIPE.items() if key != "group_size"
}

#: A suite run's budget: 6,144 tokens of full fine-tuning (the recipe's measurement above),
#: each held-out problem answered twice: with one 0-or-1 answer per problem the sampling noise
#: was most of the spread between seeds (PPO +0.17 in two three-seed runs, Holm p 0.045 and
#: 0.094; answered twice, seeds 6-8: +0.24, p < 0.001; benchmarks/RESULTS.md, issue 28).
BUDGET = SuiteBudget(timesteps=6144, training_setup="full", eval_samples=2)

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
    recipes={"ppo": PPO_RECIPE, "rloo": GROUP_RECIPE, "grpo": GROUP_RECIPE},
    budget=BUDGET,
)

__all__ = [
    "BUDGET",
    "SPEC",
    "ArithmeticProblems",
    "ArithmeticReward",
    "Curriculum",
    "Stratum",
    "UnknownPromptError",
    "allocate",
    "build",
    "extract_answer",
    "is_correct",
    "strata",
]
