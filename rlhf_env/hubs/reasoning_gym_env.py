"""reasoning-gym's datasets as turn-level text envs: one question, one answer in
``<answer>...</answer>`` tags, scored by the dataset's own checker.

:class:`ReasoningGymEnv` plays any registered reasoning-gym dataset (:func:`dataset_names`)
through the dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`): the answer in tags,
a held-out set from another seed that training never asks, optionally a mix of kinds of
problem in fixed shares, fixed worked examples and an integer-only checker
(:mod:`rlhf_env.hubs.reasoning_gym_problems`). The Arithmetic task
(:mod:`rlhf_env.tasks.arithmetic`) is one configuration of it: ``chain_sum`` with balanced
answer signs. Which datasets build offline here, and whose checkers can be trusted, is
surveyed in ``docs/reasoning_gym_datasets.md`` (``benchmarks/reasoning_gym_survey.py``).

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rlhf_env.dialogue.turn_level import OUTCOME_KEY, TurnLevelEpisode
from rlhf_env.extras import require
from rlhf_env.hubs.reasoning_gym_problems import (
    CHECKERS,
    Checker,
    Problem,
    Split,
    Stratum,
    allocate,
    extract_answer,
)

#: The system message of every episode: the answer's wrapper, nothing more (see the class
#: docstring for why it is this short).
INSTRUCTION = "Think briefly if needed, then give the final answer in <answer></answer> tags."

#: The user turn after a wrong attempt when ``max_turns > 1``.
FEEDBACK = "Incorrect, try again."

#: A demonstration's answer turn by default: the tagged answer alone (``worked_answer``).
WORKED_ANSWER = "<answer>{answer}</answer>"

_SPLITS = ("train", "eval")
_SCAN = 20  # dataset entries scanned per held-out problem before giving up on distinct ones
_MAX_SKIPS = 10_000  # training entries scanned for one outside the held-out set and of its kind

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
    ``<answer>...</answer>`` (:func:`extract_answer`; with ``checker="integer"``, only when
    that content is an integer); the rest (reasoning) is not scored.

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
        reward = score + format_weight * formatted       on the episode's last turn, else 0

    ``score_answer`` is the dataset's own checker, in [0, 1]; many give partial credit (0.01
    for a wrong answer in the right form, part of 1 for a near miss). A checker that raises on
    malformed text scores 0 (``info["score_error"]`` says why). With ``checker="integer"`` the
    score is 1 when the answer is an integer equal to the reference answer, else 0 (no partial
    credit). ``formatted`` is 1 when the turn has an answer. Each step's ``info`` holds
    ``answer`` (the extracted answer or None) and ``score``; the last step's
    ``info["outcome"]`` holds the episode's figures::

        {"score": score, "correct": 1.0 if score == 1.0 else 0.0,
         "formatted": 1.0 if the turn has an answer else 0.0}

    (and ``"attempts"``, the turns taken, when ``max_turns > 1``). reasoning-gym's checkers are
    not all sound: the survey lists the datasets where a wrong answer scores 1.

    ## Starting state: which problem a seed picks

    - ``split="train"``: ``reset(seed=k)`` plays problem ``k % size`` of reasoning-gym's
      dataset of ``size`` problems drawn with ``seed``; when that problem's question is a
      held-out one (or a demonstration's), the next index that is not (so training never asks
      a held-out question).
    - ``split="eval"``: ``reset(seed=k)`` plays held-out problem ``k % eval_size``.
    - ``seed=None``: a problem of the split at random (OS entropy, so forks differ; pass seeds
      for reproducible episodes).

    The held-out set is fixed: the first ``eval_size`` distinct questions of the dataset drawn
    with ``eval_seed``. Disjointness is by question text, so it holds even where two seeds draw
    the same problem.

    With a ``mix`` of strata (:class:`~rlhf_env.hubs.reasoning_gym_problems.Stratum`), each
    kind of problem has its own dataset (the env's options and the kind's) and keeps only the
    problems of its answer sign: the held-out set takes exactly its share of each kind
    (:func:`~rlhf_env.hubs.reasoning_gym_problems.allocate`, largest remainders), each the first
    distinct questions of its kind drawn with ``eval_seed``, shuffled with ``eval_seed``; a
    training seed ``k`` picks a kind by the shares (a draw seeded by ``(seed, k)``), then
    problem ``k`` of that kind's dataset, or the next index of that kind outside the held-out
    set. ``reset``'s ``info["stratum"]`` says which kind.

    Within a process, the same arguments and reset seed give the same problem in any env
    (reasoning-gym draws problem ``i`` from ``seed + i``; ``acre`` also depends on ``size``).
    Across processes too, except for the few datasets that iterate over sets of strings
    (``ransom_note``, ``word_ladder``, ...: the survey's "same across processes" column): fix
    ``PYTHONHASHSEED`` to keep their problems, the held-out ones included. An env and its forks
    remember the last :data:`MEMORY` training problems they asked, so a seed asks the same
    problem again (a group of episodes on one seed shares its problem) even of a generator that
    draws another each time (``list_functions``: the survey's "same again" column).

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
      (``info["history"]`` of ``reset``: each question, then its answer in tags): a number
      ``k`` shows the first ``k`` training problems (a small policy writes the tags only after
      seeing them: the Arithmetic task's finding); a list of problems (mappings with
      ``question``, ``answer`` and the fields ``worked_answer`` reads) shows those, and their
      questions are never asked (the Arithmetic task's fixed examples, one of each sign).
    - ``worked_answer``: the demonstrations' answer turn, a :meth:`str.format` template over
      the problem's fields (default :data:`WORKED_ANSWER`, the tagged answer alone); e.g.
      ``"{metadata[expression]} = {answer}, so <answer>{answer}</answer>"`` shows chain_sum's
      working as the Arithmetic task does, which a small policy copies.
    - ``max_turns``: attempts per episode; after a wrong one the user says :data:`FEEDBACK`.
    - ``mix``: kinds of problem and their shares (strata, or mappings of their fields:
      ``[{"share": 0.5, "answer_sign": "negative"}, {"share": 0.5, "answer_sign":
      "non_negative"}]``); None: the dataset as it draws.
    - ``checker``: ``"dataset"`` (the dataset's own ``score_answer``) or ``"integer"`` (an
      integer equal to the answer; for datasets with integer answers).
    - ``format_weight``: reward for a well-formed answer, right or wrong (0 by default).
    - ``**dataset_config``: the dataset's options (:func:`dataset_options`).

    Raises:
        ValueError: the dataset is unknown (close matches named), or cannot be built here (its
            options, a missing package or data file: the reason named), or has fewer than
            ``eval_size`` distinct questions (of a kind: fewer than its share); or an argument
            is out of range.
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
        demonstrations: int | Sequence[Mapping[str, Any]] = 0,
        worked_answer: str = WORKED_ANSWER,
        mix: Sequence[Stratum | Mapping[str, Any]] | None = None,
        checker: Checker = "dataset",
        format_weight: float = 0.0,
        **dataset_config: Any,
    ) -> None:
        eval_seed = seed + 1 if eval_seed is None else eval_seed
        _check_arguments(size, eval_size, seed, eval_seed, split, instruction, max_turns)
        _check_grading(checker, format_weight)
        self.name = dataset
        self.size = size
        self.seed = seed
        self.eval_seed = eval_seed
        self.split: Split = split
        self.instruction = instruction
        self.max_turns = max_turns
        self.checker: Checker = checker
        self.format_weight = float(format_weight)
        self.dataset_config = dict(dataset_config)
        self.mix: list[Stratum] = [Stratum.of(kind) for kind in mix or ()]
        self._train = self._datasets(seed, size)
        shown = _shown_problems(demonstrations)
        self._eval = self._held_out(eval_size, {p["question"] for p in shown})
        self.eval_problems: list[dict[str, Any]] = [problem.entry for problem in self._eval]
        self._excluded = frozenset(
            [*(p["question"] for p in shown), *(p["question"] for p in self.eval_problems)]
        )
        self._asked: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()  # forks share
        self._current: Problem | None = None
        self._attempts = 0
        self._over = True
        if isinstance(demonstrations, int):
            shown = [self._training_problem(index).entry for index in range(demonstrations)]
        self.history: list[dict[str, str]] = []
        for problem in shown:
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
        if self._current is None or self._over:
            raise RuntimeError(
                f"ReasoningGymEnv({self.name!r}).step called with no episode in progress; "
                "call reset() first (each episode is one problem)"
            )
        grade = self._current.grade(action)
        info: dict[str, Any] = {"answer": grade.answer, "score": grade.score}
        if grade.error is not None:
            info["score_error"] = grade.error
        self._attempts += 1
        self._over = grade.correct or self._attempts >= self.max_turns
        if not self._over:
            return FEEDBACK, 0.0, False, False, info
        outcome = {
            "score": grade.score,
            "correct": 1.0 if grade.correct else 0.0,
            "formatted": 1.0 if grade.formatted else 0.0,
        }
        if self.max_turns > 1:
            outcome["attempts"] = float(self._attempts)
        info[OUTCOME_KEY] = outcome
        return "", grade.reward, True, False, info

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start the episode of problem ``seed`` of the env's split (see the class docstring):
        its question and ``info`` (``system_prompt``, ``history``, ``dataset``, ``split``,
        ``problem``: the index of the problem in its split, and ``stratum`` with a mix)."""
        count = len(self._eval) if self.split == "eval" else self.size
        problem = self.problem_at(self.split, _pick(seed, count))
        self._current = problem
        self._attempts, self._over = 0, False
        info: dict[str, Any] = {
            "system_prompt": self.instruction,
            "history": [dict(message) for message in self.history],
            "dataset": self.name,
            "split": self.split,
            "problem": problem.index,
        }
        if self.mix:
            info["stratum"] = problem.stratum
        return problem.question, info

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
        return None if self._current is None else self._current.entry

    def problem_at(self, split: Split, index: int) -> Problem:
        """The problem ``reset(seed=index)`` plays on ``split`` (indices wrap around), with its
        grading (:meth:`Problem.grade <rlhf_env.hubs.reasoning_gym_problems.Problem.grade>`:
        what ``step`` pays for an answer to it).

        Example:
            >>> env = ReasoningGymEnv("chain_sum", eval_size=4)
            >>> problem = env.problem_at("eval", 0)
            >>> problem.grade(f"<answer>{problem.entry['answer']}</answer>").correct
            True
        """
        _check_split(split)
        if split == "eval":
            return self._eval[index % len(self._eval)]
        return self._training_problem(index % self.size)

    def opening(self, question: str) -> list[dict[str, str]]:
        """The chat an episode asking ``question`` opens with: the system message, the
        demonstrations, the question (what the dialogue bridge templates for the agent)."""
        return [
            {"role": "system", "content": self.instruction},
            *(dict(message) for message in self.history),
            {"role": "user", "content": question},
        ]

    def with_split(self, split: Split) -> ReasoningGymEnv:
        """A copy that plays ``split``'s problems, sharing this env's datasets (no episode in
        progress)."""
        _check_split(split)
        other = self.fork()
        other.split = split
        other._current, other._attempts, other._over = None, 0, True
        return other

    def with_training_mix(self, mix: Sequence[Stratum | Mapping[str, Any]]) -> ReasoningGymEnv:
        """A copy whose training problems follow ``mix`` (e.g. harder ones, a curriculum's next
        level), with the same held-out problems and demonstrations, never asked in training
        (no episode in progress)."""
        other = self.with_split(self.split)
        other.mix = [Stratum.of(kind) for kind in mix]
        other._train = other._datasets(self.seed, self.size)
        other._asked = OrderedDict()
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

    @property
    def _strata(self) -> list[Stratum]:
        """The kinds of problem: the mix, or the whole dataset as one."""
        return self.mix or [Stratum(1.0)]

    def _datasets(self, seed: int, size: int) -> list[Any]:
        """One reasoning-gym dataset per kind of problem: the env's options and the kind's."""
        return [
            build_dataset(self.name, seed=seed, size=size, **{**self.dataset_config, **k.options})
            for k in self._strata
        ]

    def _held_out(self, eval_size: int, excluded: set[str]) -> list[Problem]:
        """Each kind's share of ``eval_size`` distinct problems drawn with ``eval_seed`` (none
        of them ``excluded``), shuffled with ``eval_seed`` when there are several kinds."""
        counts = allocate(eval_size, [kind.share for kind in self._strata])
        scan = _SCAN * eval_size
        found: list[tuple[int, dict[str, Any], Any]] = []
        for stratum, (kind, count) in enumerate(zip(self._strata, counts, strict=True)):
            if count == 0:
                continue
            options = {**self.dataset_config, **kind.options}
            dataset = build_dataset(self.name, seed=self.eval_seed, size=scan, **options)
            problems: dict[str, dict[str, Any]] = {}
            for index in range(scan):
                if len(problems) == count:
                    break
                try:
                    entry = dataset[index]
                except Exception as error:
                    raise _unbuildable(self.name, error) from error
                if entry["question"] not in excluded and kind.admits(entry):
                    problems.setdefault(entry["question"], entry)
            if len(problems) < count:
                of_kind = f" of kind {kind.describe()!r}" if self.mix else ""
                raise ValueError(
                    f"reasoning-gym dataset {self.name!r} gave only {len(problems)} distinct "
                    f"questions{of_kind} in {scan} draws, fewer than the {count} of "
                    f"eval_size={eval_size} it should take (and training needs some left over); "
                    "lower eval_size, or widen the dataset's options"
                    + (" or that kind's share" if self.mix else "")
                )
            found += [(stratum, entry, dataset) for entry in problems.values()]
        if len(self._strata) > 1:
            order = np.random.default_rng(self.eval_seed).permutation(len(found))
            found = [found[i] for i in order]
        return [
            Problem(entry, "eval", index, stratum, dataset, self.checker, self.format_weight)
            for index, (stratum, entry, dataset) in enumerate(found)
        ]

    def _training_problem(self, index: int) -> Problem:
        """Training problem ``index``: its kind's problem ``index``, or the next one of that kind
        whose question is neither held out nor a demonstration's."""
        stratum = self._stratum_at(index)
        kind = self._strata[stratum]
        for step in range(min(self.size, _MAX_SKIPS)):
            candidate = (index + step) % self.size
            entry = self._remembered(stratum, candidate)
            if entry["question"] not in self._excluded and kind.admits(entry):
                dataset = self._train[stratum]
                return Problem(
                    entry, "train", candidate, stratum, dataset, self.checker, self.format_weight
                )
        of_kind = f" with {kind.describe()}" if self.mix else ""
        raise ValueError(
            f"found no training problem of {self.name!r}{of_kind} outside the held-out and "
            f"demonstration questions in {min(self.size, _MAX_SKIPS)} draws; raise size, lower "
            "eval_size, change eval_seed, or widen the dataset's options"
        )

    def _stratum_at(self, index: int) -> int:
        """The kind of training problem ``index``: by the mix's shares, with a draw seeded by
        ``(seed, index)`` (the same in every env and process)."""
        if len(self._strata) == 1:
            return 0
        shares = np.array([kind.share for kind in self._strata])
        draw = np.random.default_rng([self.seed % 2**63, index]).random()
        bounds = np.cumsum(shares) / shares.sum()
        return min(int(np.searchsorted(bounds, draw, side="right")), len(shares) - 1)

    def _remembered(self, stratum: int, index: int) -> dict[str, Any]:
        """Entry ``index`` of kind ``stratum``'s training dataset: as asked before (of the last
        :data:`MEMORY`), or new."""
        key = (stratum, index)
        entry = self._asked.get(key)
        if entry is None:
            entry = self._asked[key] = self._train[stratum][index]
            if len(self._asked) > MEMORY:
                self._asked.popitem(last=False)
        self._asked.move_to_end(key)
        return entry

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


def _check_grading(checker: str, format_weight: float) -> None:
    if checker not in CHECKERS:
        raise ValueError(f"checker must be one of {CHECKERS}, got {checker!r}")
    if not math.isfinite(format_weight):
        raise ValueError(f"format_weight must be a finite number, got {format_weight}")


def _shown_problems(demonstrations: int | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fixed demonstrations given as problems (none for a number of training ones)."""
    if isinstance(demonstrations, int):
        if demonstrations < 0:
            raise ValueError(f"demonstrations must be >= 0, got {demonstrations}")
        return []
    shown = [problem for problem in demonstrations if isinstance(problem, Mapping)]
    if isinstance(demonstrations, str) or len(shown) < len(demonstrations):
        raise ValueError(
            "demonstrations is a number of training problems or a list of problems (mappings "
            f"with a 'question' and an 'answer'), got {demonstrations!r:.120}"
        )
    for problem in shown:
        if not {"question", "answer"} <= set(problem):
            raise ValueError(
                "each demonstration is a problem with a 'question' and an 'answer' (and the "
                f"fields worked_answer reads), got {problem!r:.120}"
            )
    return shown


def _worked(template: str, problem: Mapping[str, Any]) -> str:
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
    "WORKED_ANSWER",
    "ReasoningGymEnv",
    "Split",
    "build_dataset",
    "dataset_names",
    "dataset_options",
    "extract_answer",
]
