"""What a :class:`~rlhf_env.hubs.reasoning_gym_env.ReasoningGymEnv` asks and how it grades:
strata of problems (a mix of difficulties or answer signs, each with its share), the problem
an episode asks, and the grade of an answer to it.

A :class:`Stratum` is a kind of problem: the dataset drawn with some options on top of the
env's (``{"min_terms": 3, "max_terms": 3}``), keeping only the problems whose answer has a
given sign. A mix of strata fixes the held-out set's composition exactly (:func:`allocate`)
and the training draws' in expectation; the Arithmetic task's mix (half the answers negative,
a quarter of the sums one term longer) is why a policy cannot gain there by dropping minus
signs.

A :class:`Problem` is one reasoning-gym entry as the env asked it, with the dataset that made
it, whose ``score_answer`` grades it (some checkers read the dataset's options). The
``checker`` says what counts: ``"dataset"``, reasoning-gym's own extractor and
``score_answer`` (partial credit included); ``"integer"``, an integer in the last tags, equal
to the answer as integers (no partial credit: ``"-4."`` is no answer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf_env.extras import require

#: Which problems an env plays: the training ones or the held-out ones.
Split = Literal["train", "eval"]

#: How an answer is read and scored (see the module docstring).
Checker = Literal["dataset", "integer"]

#: The sign a stratum's answers have (``"non_negative"``: 0 or more).
AnswerSign = Literal["negative", "non_negative"]

CHECKERS: tuple[str, ...] = ("dataset", "integer")
ANSWER_SIGNS: tuple[str, ...] = ("negative", "non_negative")

_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)
_INTEGER = re.compile(r"[+-]?[0-9]+")


# -- answers ------------------------------------------------------------------------------------


def extract_answer(text: str) -> str | None:
    """The content of ``text``'s last ``<answer>...</answer>``, stripped; None without one.

    This is reasoning-gym's own extractor (``reasoning_gym.utils.extract_answer``, what its
    checkers expect).

    Examples:
        >>> extract_answer("so <answer>1</answer>, no: <answer> 2 3 </answer>")
        '2 3'
        >>> extract_answer("the answer is 9") is None
        True
    """
    require("reasoning_gym", "tasks", "ReasoningGymEnv")
    from reasoning_gym.utils import extract_answer as extract

    return extract(text)


def extract_integer(text: str) -> str | None:
    """The final answer of ``text`` under the ``"integer"`` checker: the content of its last
    ``<answer>...</answer>``, stripped of surrounding whitespace, when that content is an
    integer (ASCII digits with an optional sign, no decimal point, no thousands separator, no
    words); otherwise None. There is no fallback to the last number of the text.

    Examples:
        >>> extract_integer("4 + 5 = 9, so <answer>9</answer>")
        '9'
        >>> extract_integer("<answer> -4 </answer>")
        '-4'
        >>> extract_integer("<answer>1</answer> no, <answer>2</answer>")
        '2'
        >>> extract_integer("<answer>-4.</answer>") is None
        True
        >>> extract_integer("<answer>4 apples</answer>") is None
        True
        >>> extract_integer("<answer>3 4</answer>") is None
        True
        >>> extract_integer("the answer is 9") is None
        True
    """
    matches = _TAG.findall(text)
    if not matches:
        return None
    content = matches[-1].strip()
    return content if _INTEGER.fullmatch(content) else None


# -- strata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stratum:
    """A kind of problem and its share of the held-out set and of the training draws.

    Attributes:
        share: its weight in the mix (the shares need not sum to 1).
        options: the dataset's options for this kind, on top of the env's
            (``{"min_terms": 3, "max_terms": 3}``).
        answer_sign: keep only problems whose (numeric) answer is ``"negative"`` or
            ``"non_negative"``; None: any.
    """

    share: float
    options: Mapping[str, Any] = field(default_factory=dict)
    answer_sign: AnswerSign | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.share) and self.share > 0):
            raise ValueError(
                f"a stratum's share must be a positive number, got {self.share}; leave a kind "
                "with no share out of the mix"
            )
        if self.answer_sign not in (None, *ANSWER_SIGNS):
            raise ValueError(
                f"answer_sign must be one of {ANSWER_SIGNS} or None, got {self.answer_sign!r}"
            )

    @classmethod
    def of(cls, kind: Stratum | Mapping[str, Any]) -> Stratum:
        """``kind`` as a stratum: itself, or built from a mapping of its fields (JSON options).

        Example:
            >>> Stratum.of({"share": 0.5, "answer_sign": "negative"}).describe()
            'a negative answer'
        """
        if isinstance(kind, Stratum):
            return kind
        unknown = set(kind) - {"share", "options", "answer_sign"}
        if unknown or "share" not in kind:
            raise ValueError(
                f"a stratum is {{'share': ..., 'options': {{...}}, 'answer_sign': ...}}, got "
                f"{dict(kind)!r:.120}"
            )
        return cls(float(kind["share"]), dict(kind.get("options") or {}), kind.get("answer_sign"))

    def admits(self, entry: Mapping[str, Any]) -> bool:
        """Whether the reasoning-gym ``entry`` is of this kind (by its answer's sign).

        Raises:
            ValueError: the stratum has an ``answer_sign`` and the answer is not a number.
        """
        if self.answer_sign is None:
            return True
        try:
            value = float(entry["answer"])
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"answer_sign={self.answer_sign!r} needs numeric answers; {entry['answer']!r:.40} "
                "is not one: leave answer_sign out for this dataset"
            ) from error
        return (value < 0) == (self.answer_sign == "negative")

    def describe(self) -> str:
        """The kind in words (for errors and reports)."""
        words = [f"{key}={value!r}" for key, value in self.options.items()]
        if self.answer_sign is not None:
            words.append(
                "a negative answer" if self.answer_sign == "negative" else "a non-negative answer"
            )
        return ", ".join(words) or "any problem"

    def as_options(self) -> dict[str, Any]:
        """The stratum as JSON-ready options (what :meth:`of` reads)."""
        return {"share": self.share, "options": dict(self.options), "answer_sign": self.answer_sign}


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


# -- problems and grades ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grade:
    """An answer's grade.

    Attributes:
        answer: the extracted final answer (None: the turn has none).
        score: the checker's score in [0, 1] (0 without an answer).
        reward: ``score + format_weight * formatted``.
        error: why the checker failed on the answer (scored 0), or None.
    """

    answer: str | None
    score: float
    reward: float
    error: str | None = None

    @property
    def formatted(self) -> bool:
        """Whether the turn has an answer the checker reads."""
        return self.answer is not None

    @property
    def correct(self) -> bool:
        """Whether the answer scores 1 (partial credit is not correct)."""
        return self.score == 1.0


@dataclass(frozen=True)
class Problem:
    """A problem an env asks, and how its answers are graded.

    Attributes:
        entry: reasoning-gym's entry (``question``, ``answer``, ``metadata``).
        split: ``"train"`` or ``"eval"``.
        index: its index in its split (training: in its stratum's dataset).
        stratum: the index of its stratum in the env's mix (0 without one).
        dataset: the reasoning-gym dataset that made it (its ``score_answer``).
        checker: what counts as an answer and a right one (see the module docstring).
        format_weight: the reward for a well-formed answer, right or wrong.
    """

    entry: dict[str, Any]
    split: Split
    index: int
    stratum: int
    dataset: Any = field(repr=False)
    checker: Checker = "dataset"
    format_weight: float = 0.0

    @property
    def question(self) -> str:
        """The question text."""
        return self.entry["question"]

    def grade(self, text: str) -> Grade:
        """The grade of the agent's turn ``text``: its last tagged answer, scored by the
        checker (0 without one, or where the checker raises or returns a non-finite number)."""
        if self.checker == "integer":
            answer = extract_integer(text)
            right = answer is not None and int(answer) == _integer(self.entry["answer"])
            return self._graded(answer, 1.0 if right else 0.0)
        answer = extract_answer(text)
        if answer is None:
            return self._graded(None, 0.0)
        try:
            score = float(self.dataset.score_answer(answer, self.entry))
        except Exception as error:  # a checker choking on free text: a wrong answer
            return self._graded(answer, 0.0, f"{type(error).__name__}: {error}")
        if not math.isfinite(score):
            return self._graded(answer, 0.0, f"score_answer returned {score}")
        return self._graded(answer, score)

    def _graded(self, answer: str | None, score: float, error: str | None = None) -> Grade:
        reward = score + self.format_weight * float(answer is not None)
        return Grade(answer, score, reward, error)


def _integer(answer: Any) -> int:
    try:
        return int(answer)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"checker='integer' needs integer answers, and this dataset's answer is "
            f"{answer!r:.40}: use checker='dataset'"
        ) from error


__all__ = [
    "ANSWER_SIGNS",
    "CHECKERS",
    "AnswerSign",
    "Checker",
    "Grade",
    "Problem",
    "Split",
    "Stratum",
    "allocate",
    "extract_answer",
    "extract_integer",
]
