"""reasoning-gym's datasets as turn-level text envs: one question, one answer in
``<answer>...</answer>`` tags, scored by the dataset's own checker.

:class:`ReasoningGymEnv` plays any registered reasoning-gym dataset (:func:`dataset_names`)
through the dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`). It generalises the
Arithmetic task (:mod:`rlhf_env.tasks.arithmetic`, reasoning-gym's ``chain_sum`` alone) to every
dataset: the same answer tags, a held-out set from another seed that training never asks.
Which datasets build offline here, and whose checkers can be trusted, is surveyed in
``docs/reasoning_gym_datasets.md`` (``benchmarks/reasoning_gym_survey.py``).

Example:
    >>> env = ReasoningGymEnv("chain_sum", eval_size=4)
    >>> question, info = env.reset(seed=3)
    >>> info["system_prompt"]
    'Think briefly if needed, then give the final answer in <answer></answer> tags.'
    >>> _, reward, terminated, _, info = env.step("<answer>0</answer>")
    >>> sorted(info["outcome"])
    ['correct', 'formatted', 'score']
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import random
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Literal

from rlhf_env.dialogue.turn_level import OUTCOME_KEY, TurnLevelEpisode
from rlhf_env.extras import require

#: The system message of every episode: the answer's wrapper, nothing more (see the class
#: docstring for why it is this short).
INSTRUCTION = "Think briefly if needed, then give the final answer in <answer></answer> tags."

#: The user turn after a wrong attempt when ``max_turns > 1``.
FEEDBACK = "Incorrect, try again."

#: A demonstration's answer turn by default: the tagged answer alone (``worked_answer``).
WORKED_ANSWER = "<answer>{answer}</answer>"

#: Which problems an env plays: the training ones or the held-out ones.
Split = Literal["train", "eval"]

_SPLITS = ("train", "eval")
_SCAN = 20  # dataset entries scanned per held-out problem before giving up on distinct ones

#: Training problems an env and its forks remember, by index (see "Starting state").
MEMORY = 4096

#: What to do about datasets that need options to build at all.
_REQUIRED_OPTIONS = {
    "composite": "it mixes other datasets: pass datasets=[reasoning_gym.composite.DatasetSpec("
    "name='chain_sum', weight=1.0, config={}), ...]",
}


def _reasoning_gym() -> Any:
    return require("reasoning_gym", "tasks", "ReasoningGymEnv")


def dataset_names() -> list[str]:
    """Every dataset registered with reasoning-gym, sorted (106 in reasoning-gym 0.1.25; a few
    do not build with their defaults: see ``docs/reasoning_gym_datasets.md``).

    Example:
        >>> "chain_sum" in dataset_names()
        True
    """
    _reasoning_gym()
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def dataset_options(name: str) -> dict[str, Any]:
    """The options of dataset ``name`` (its config's fields, ``seed`` and ``size`` aside) and
    their defaults; a field without a default maps to :data:`dataclasses.MISSING`.

    Raises:
        ValueError: ``name`` is not a registered dataset (the message lists close matches).

    Example:
        >>> dataset_options("chain_sum")["min_terms"]
        2
    """
    _check_name(name)
    from reasoning_gym.factory import DATASETS

    options: dict[str, Any] = {}
    for field in dataclasses.fields(DATASETS[name][1]):
        if field.name in ("seed", "size"):
            continue
        if field.default is not dataclasses.MISSING:
            options[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            options[field.name] = field.default_factory()
        else:
            options[field.name] = dataclasses.MISSING
    return options


def extract_answer(text: str) -> str | None:
    """The content of ``text``'s last ``<answer>...</answer>``, stripped; None without one.

    This is reasoning-gym's own extractor (``reasoning_gym.utils.extract_answer``, what its
    checkers expect). The Arithmetic task's :func:`rlhf_env.tasks.arithmetic.extract_answer`
    reads the same tag but admits integers alone, which would fail every dataset whose answers
    are words, lists or grids.

    Examples:
        >>> extract_answer("so <answer>1</answer>, no: <answer> 2 3 </answer>")
        '2 3'
        >>> extract_answer("the answer is 9") is None
        True
    """
    _reasoning_gym()
    from reasoning_gym.utils import extract_answer as extract

    return extract(text)


class ReasoningGymEnv:
    """A reasoning-gym dataset as a turn-level text env: the question is the first user turn;
    the agent's turn is scored on the answer in its last ``<answer>...</answer>`` tags.

    ## Description

    Each episode is one problem of reasoning-gym dataset ``dataset`` (any of
    :func:`dataset_names`, with its options as keyword arguments: :func:`dataset_options`). The
    env implements :class:`rlhf_env.dialogue.turn_level.TurnLevelEnv`, so a dialogue env plays
    it token by token (:meth:`episodes` makes its prompts).

    ## Action space

    A string: the agent's whole turn. Its final answer is the content of its last
    ``<answer>...</answer>`` (:func:`extract_answer`); the rest (reasoning) is not scored.

    ## Observation space

    | observation         | when                                                      |
    |---------------------|-----------------------------------------------------------|
    | the question        | ``reset``: reasoning-gym's question text, as it is        |
    | :data:`FEEDBACK`    | after a wrong attempt, while attempts remain              |
    | ``""``              | once the episode is over (unused by the bridge)           |

    ``reset``'s ``info["system_prompt"]`` is ``instruction`` (default :data:`INSTRUCTION`): the
    answer's wrapper alone. It is short because most reasoning-gym questions already say what
    form their answer takes ("Give your answer as a comma-separated list"), so the system
    message only has to fix the tags that :func:`extract_answer` reads; and because a small
    policy's context is spent on the question (up to ~7,000 characters with the defaults).
    "Think briefly" asks for short reasoning, since a turn cut at the env's token budget has no
    answer.

    ## Rewards

    ::

        score  = dataset.score_answer(answer, problem)   if the turn has an answer, else 0
        reward = score                                   on the episode's last turn, else 0

    ``score_answer`` is the dataset's own checker, in [0, 1]; many give partial credit (0.01
    for a wrong answer in the right form, part of 1 for a near miss). A checker that raises on
    malformed text scores 0 (``info["score_error"]`` says why). Each step's ``info`` holds
    ``answer`` (the extracted answer or None) and ``score``; the last step's
    ``info["outcome"]`` holds the episode's figures::

        {"score": score, "correct": 1.0 if score == 1.0 else 0.0,
         "formatted": 1.0 if the turn has an answer else 0.0}

    (and ``"attempts"``, the turns taken, when ``max_turns > 1``). reasoning-gym's checkers are
    not all sound: the survey lists the datasets where a wrong answer scores 1.

    ## Starting state: which problem a seed picks

    - ``split="train"``: ``reset(seed=k)`` plays problem ``k % size`` of reasoning-gym's
      dataset of ``size`` problems drawn with ``seed``; when that problem's question is a
      held-out one, the next index that is not (so training never asks a held-out question).
    - ``split="eval"``: ``reset(seed=k)`` plays held-out problem ``k % eval_size``.
    - ``seed=None``: a problem of the split at random (OS entropy, so forks differ; pass seeds
      for reproducible episodes).

    The held-out set is fixed: the first ``eval_size`` distinct questions of the dataset drawn
    with ``eval_seed``. Disjointness is by question text, as in the Arithmetic task, so it holds
    even where two seeds draw the same problem. Within a process, the same arguments and reset
    seed give the same problem in any env (reasoning-gym draws problem ``i`` from
    ``seed + i``; ``acre`` also depends on ``size``). Across processes too, except for the
    few datasets that iterate over sets of strings (``ransom_note``, ``word_ladder``, ...: the
    survey's "same across processes" column): fix ``PYTHONHASHSEED`` to keep their problems,
    the held-out ones included. An env and its forks remember the last :data:`MEMORY`
    training problems they asked, so a seed asks the same problem again (a group of episodes
    on one seed shares its problem) even of a generator that draws another each time
    (``list_functions``: the survey's "same again" column).

    ## Episode end

    Terminated when the answer scores 1, or after ``max_turns`` attempts (default 1: every
    episode is one turn). Never truncated; the dialogue env's own limits (tokens per turn)
    apply on top.

    ## Arguments

    - ``dataset``: the reasoning-gym dataset's name.
    - ``size``: training problems (indices wrap around). Problems are generated as they are
      asked, except by datasets that build all of them up front (``acre``: ~2 s for 10,000).
    - ``seed``: reasoning-gym's seed of the training problems.
    - ``eval_size``: held-out problems (distinct questions); building the env generates them,
      once (forks share them).
    - ``eval_seed``: reasoning-gym's seed of the held-out problems; default ``seed + 1``.
    - ``split``: ``"train"`` or ``"eval"``: which problems ``reset`` plays
      (:meth:`with_split` switches a copy).
    - ``instruction``: the system message.
    - ``demonstrations``: worked examples shown before the question as earlier chat turns
      (``info["history"]`` of ``reset``: each question, then its answer in tags), the first
      ``demonstrations`` training problems (a small policy writes the tags only after seeing
      them: the Arithmetic task's finding).
    - ``worked_answer``: the demonstrations' answer turn, a :meth:`str.format` template over
      the problem's fields (default :data:`WORKED_ANSWER`, the tagged answer alone); e.g.
      ``"{metadata[expression]} = {answer}, so <answer>{answer}</answer>"`` shows chain_sum's
      working as the Arithmetic task does, which a small policy copies.
    - ``max_turns``: attempts per episode; after a wrong one the user says :data:`FEEDBACK`.
    - ``**dataset_config``: the dataset's options (:func:`dataset_options`).

    Raises:
        ValueError: the dataset is unknown (close matches named), or cannot be built here (its
            options, a missing package or data file: the reason named), or has fewer than
            ``eval_size`` distinct questions; or an argument is out of range.
        rlhf_env.extras.MissingExtraError: reasoning-gym is not installed.

    ## Version history

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        dataset: str,
        size: int = 10_000,
        seed: int = 0,
        eval_size: int = 64,
        eval_seed: int | None = None,
        split: Split = "train",
        instruction: str = INSTRUCTION,
        max_turns: int = 1,
        demonstrations: int = 0,
        worked_answer: str = WORKED_ANSWER,
        **dataset_config: Any,
    ) -> None:
        eval_seed = seed + 1 if eval_seed is None else eval_seed
        _check_arguments(size, eval_size, seed, eval_seed, split, instruction, max_turns)
        self.name = dataset
        self.size = size
        self.seed = seed
        self.eval_seed = eval_seed
        self.split: Split = split
        self.instruction = instruction
        self.max_turns = max_turns
        self.dataset_config = dict(dataset_config)
        self._train = build_dataset(dataset, seed=seed, size=size, **dataset_config)
        self.eval_problems: list[dict[str, Any]] = _held_out(
            dataset, eval_size, eval_seed, dataset_config
        )
        self._eval_questions = frozenset(p["question"] for p in self.eval_problems)
        self._asked: OrderedDict[int, dict[str, Any]] = OrderedDict()  # shared with forks
        self._problem: dict[str, Any] | None = None
        self._attempts = 0
        self._over = True
        if demonstrations < 0:
            raise ValueError(f"demonstrations must be >= 0, got {demonstrations}")
        self.history: list[dict[str, str]] = []
        for index in range(demonstrations):
            problem = self._training_problem(index)[1]
            self.history += [
                {"role": "user", "content": problem["question"]},
                {"role": "assistant", "content": _worked(worked_answer, problem)},
            ]

    # -- the turn-level protocol ----------------------------------------------------------------

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Score the agent's turn ``action`` (see the class docstring).

        Raises:
            RuntimeError: no episode is in progress (call :meth:`reset`).
        """
        if self._problem is None or self._over:
            raise RuntimeError(
                f"ReasoningGymEnv({self.name!r}).step called with no episode in progress; "
                "call reset() first (each episode is one problem)"
            )
        answer = extract_answer(action)
        score, info = self._score(answer, self._problem)
        self._attempts += 1
        self._over = score == 1.0 or self._attempts >= self.max_turns
        if not self._over:
            return FEEDBACK, 0.0, False, False, info
        outcome = {
            "score": score,
            "correct": 1.0 if score == 1.0 else 0.0,
            "formatted": 1.0 if answer is not None else 0.0,
        }
        if self.max_turns > 1:
            outcome["attempts"] = float(self._attempts)
        info[OUTCOME_KEY] = outcome
        return "", score, True, False, info

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start the episode of problem ``seed`` of the env's split (see the class docstring):
        its question and ``info`` (``system_prompt``, ``dataset``, ``split``, ``problem``: the
        index of the problem in its split)."""
        if self.split == "eval":
            index = _pick(seed, len(self.eval_problems))
            problem = self.eval_problems[index]
        else:
            index, problem = self._training_problem(_pick(seed, self.size))
        self._problem = problem
        self._attempts, self._over = 0, False
        return problem["question"], {
            "system_prompt": self.instruction,
            "history": [dict(message) for message in self.history],
            "dataset": self.name,
            "split": self.split,
            "problem": index,
        }

    def fork(self) -> ReasoningGymEnv:
        """An independent copy, mid-episode included, that shares the (read-only) datasets."""
        return copy.copy(self)

    def close(self) -> None:
        """Nothing to release."""

    # -- helpers --------------------------------------------------------------------------------

    @property
    def problem(self) -> dict[str, Any] | None:
        """The current episode's reasoning-gym entry (``question``, ``answer``, ``metadata``), or
        None before the first reset."""
        return self._problem

    def with_split(self, split: Split) -> ReasoningGymEnv:
        """A copy that plays ``split``'s problems, sharing this env's datasets (no episode in
        progress)."""
        _check_split(split)
        other = self.fork()
        other.split = split
        other._problem, other._attempts, other._over = None, 0, True
        return other

    def episodes(self, seeds: Iterable[int]) -> list[TurnLevelEpisode]:
        """The dialogue mode's prompts for problems ``seeds`` of this env's split: each plays a
        fork of this env.

        Example:
            >>> env = ReasoningGymEnv("chain_sum", eval_size=4)
            >>> [e.name for e in env.with_split("eval").episodes(range(2))]
            ['chain_sum eval #0', 'chain_sum eval #1']
        """
        return [
            TurnLevelEpisode(make_env=self.fork, seed=s, name=f"{self.name} {self.split} #{s}")
            for s in seeds
        ]

    def _training_problem(self, index: int) -> tuple[int, dict[str, Any]]:
        """Problem ``index`` of the training dataset, or the next one whose question is not
        held out."""
        for step in range(self.size):
            candidate = (index + step) % self.size
            problem = self._remembered(candidate)
            if problem["question"] not in self._eval_questions:
                return candidate, problem
        raise ValueError(
            f"every one of the {self.size} training problems of {self.name!r} is a held-out "
            "question; raise size, lower eval_size, or change eval_seed"
        )

    def _remembered(self, index: int) -> dict[str, Any]:
        """Training problem ``index``: as asked before (of the last :data:`MEMORY`), or new."""
        problem = self._asked.get(index)
        if problem is None:
            problem = self._asked[index] = self._train[index]
            if len(self._asked) > MEMORY:
                self._asked.popitem(last=False)
        self._asked.move_to_end(index)
        return problem

    def _score(self, answer: str | None, problem: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """The dataset's score of ``answer`` (0 without one) and the step's ``info``."""
        info: dict[str, Any] = {"answer": answer}
        score = 0.0
        if answer is not None:
            try:
                score = float(self._train.score_answer(answer, problem))
            except Exception as error:  # a checker choking on free text: a wrong answer
                info["score_error"] = f"{type(error).__name__}: {error}"
            if not math.isfinite(score):
                info["score_error"] = f"score_answer returned {score}"
                score = 0.0
        info["score"] = score
        return score, info

    def __repr__(self) -> str:
        return (
            f"ReasoningGymEnv({self.name!r}, split={self.split!r}, size={self.size}, "
            f"eval_size={len(self.eval_problems)})"
        )


def build_dataset(name: str, *, seed: int, size: int, **options: Any) -> Any:
    """reasoning-gym's dataset ``name``, or a :class:`ValueError` saying why it cannot be built.

    Raises:
        ValueError: unknown name (close matches listed), bad options (the valid ones listed), a
            missing package or data file, or any other failure of the dataset's constructor.
    """
    _check_name(name)
    try:
        return _reasoning_gym().create_dataset(name, seed=seed, size=size, **options)
    except Exception as error:
        raise _unbuildable(name, error) from error


def _held_out(
    name: str, eval_size: int, eval_seed: int, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """The first ``eval_size`` distinct questions (with their entries) drawn with
    ``eval_seed``."""
    dataset = build_dataset(name, seed=eval_seed, size=_SCAN * eval_size, **options)
    problems: dict[str, dict[str, Any]] = {}
    for index in range(_SCAN * eval_size):
        if len(problems) == eval_size:
            break
        try:
            entry = dataset[index]
        except Exception as error:
            raise _unbuildable(name, error) from error
        problems.setdefault(entry["question"], entry)
    if len(problems) < eval_size:
        raise ValueError(
            f"reasoning-gym dataset {name!r} gave only {len(problems)} distinct questions in "
            f"{_SCAN * eval_size} draws, fewer than eval_size={eval_size} (and training needs "
            "some left over); lower eval_size, or widen the dataset's options"
        )
    return list(problems.values())


def _check_name(name: str) -> None:
    names = dataset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"{name!r} is not a reasoning-gym dataset{hint} (dataset_names() lists all "
            f"{len(names)})"
        )


def _unbuildable(name: str, error: Exception) -> ValueError:
    """The error for dataset ``name`` failing to build with ``error``: the reason, and what to
    do where that is known."""
    reason = f"{type(error).__name__}: {error}".rstrip(": ")
    if name in _REQUIRED_OPTIONS:
        fix = _REQUIRED_OPTIONS[name]
    elif isinstance(error, ImportError):
        missing = getattr(error, "name", None) or "a package"
        fix = f"it needs {missing!r}, which is not installed: pip install it"
    elif isinstance(error, OSError):
        fix = "it needs data it cannot read here (reasoning-gym's packaged files or a download)"
    elif isinstance(error, (TypeError, AssertionError, ValueError)):
        options = ", ".join(
            f"{k}={'<required>' if v is dataclasses.MISSING else repr(v)}"
            for k, v in dataset_options(name).items()
        )
        fix = f"check its options (keyword arguments; with their defaults: {options})"
    else:
        fix = "reasoning-gym's generator failed"
    return ValueError(f"reasoning-gym dataset {name!r} cannot be built here: {reason}; {fix}")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _check_arguments(
    size: int,
    eval_size: int,
    seed: int,
    eval_seed: int,
    split: str,
    instruction: str,
    max_turns: int,
) -> None:
    _check_split(split)
    if size < 1 or eval_size < 1 or max_turns < 1:
        raise ValueError(
            f"size ({size}), eval_size ({eval_size}) and max_turns ({max_turns}) must all be >= 1"
        )
    if seed == eval_seed:
        raise ValueError(
            f"seed and eval_seed are both {seed}: the held-out problems would be the training "
            "ones; leave eval_seed out (it defaults to seed + 1) or pick another"
        )
    if "<answer>" not in instruction:
        raise ValueError(
            f"instruction {instruction!r:.80} does not mention <answer></answer> tags, the only "
            "place the env reads an answer from; say how to write it"
        )


def _worked(template: str, problem: dict[str, Any]) -> str:
    """A demonstration's answer turn: ``template`` filled from ``problem``'s fields."""
    try:
        text = template.format(**problem)
    except (KeyError, IndexError, AttributeError, ValueError) as error:
        raise ValueError(
            f"worked_answer {template!r} does not fill from the problem's fields ({error!r}); "
            f"use {sorted(problem)} (and metadata's {sorted(problem.get('metadata', {}))})"
        ) from error
    if template != WORKED_ANSWER and extract_answer(text) != str(problem["answer"]).strip():
        raise ValueError(
            f"worked_answer {template!r} gives {text!r}, whose <answer> tags do not hold the "
            f"answer {problem['answer']!r}: a demonstration must show the answer as the env "
            "reads it"
        )
    return text


def _pick(seed: int | None, count: int) -> int:
    """Problem ``seed % count``, or a random one (OS entropy) for ``seed=None``."""
    if seed is None:
        return random.SystemRandom().randrange(count)
    if seed < 0:
        raise ValueError(f"seed must be >= 0 or None, got {seed}")
    return seed % count


__all__ = [
    "FEEDBACK",
    "INSTRUCTION",
    "MEMORY",
    "ReasoningGymEnv",
    "Split",
    "build_dataset",
    "dataset_names",
    "dataset_options",
    "extract_answer",
]
