"""Prompt sources for the environments: a list of strings, a ``datasets`` column, or a callable."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.data.hub import load_dataset
from rlhf_env.data.reviews import movie_reviews

PromptsLike = Sequence[str] | Callable[[], str] | Callable[[np.random.Generator], str]


def _takes_rng(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


class PromptSource:
    """Draws prompts reproducibly from the environment's random generator.

    Args:
        prompts: a sequence of strings (a list, a tuple, a ``datasets`` column such as
            ``dataset["text"]``), or a callable returning a prompt. A callable that takes one
            positional argument receives the env's ``numpy.random.Generator`` so that seeded
            resets stay reproducible; a zero-argument callable is called as is.
        check: turns each drawn item into the prompt, raising ``TypeError``/``ValueError``
            for a bad one (dialogue scripts: :func:`rlhf_env.dialogue.as_script`); default:
            items must be strings.

    Example:
        >>> source = PromptSource(["The movie was", "I think that"])
        >>> source.sample(np.random.default_rng(0)) in ("The movie was", "I think that")
        True
    """

    def __init__(self, prompts: PromptsLike, check: Callable[[Any], Any] | None = None) -> None:
        if isinstance(prompts, str):
            raise TypeError(
                "prompts is a single string; pass a list of prompts, e.g. prompts=[prompt]"
            )
        self._check = check
        self._function: Callable[..., str] | None = None
        self._items: Sequence[str] | None = None
        if callable(prompts) and not hasattr(prompts, "__getitem__"):
            self._function = prompts
            self._function_takes_rng = _takes_rng(prompts)
        elif hasattr(prompts, "__len__") and hasattr(prompts, "__getitem__"):
            self._items = prompts  # type: ignore[assignment]
        elif hasattr(prompts, "__iter__"):
            self._items = list(prompts)  # type: ignore[arg-type]
        else:
            raise TypeError(
                f"prompts must be a sequence of strings or a callable returning one, "
                f"got {type(prompts).__name__}"
            )
        if self._items is not None and len(self._items) == 0:
            raise ValueError("prompts is empty; pass at least one prompt")

    def __len__(self) -> int:
        """Number of prompts; raises ``TypeError`` for a callable source."""
        if self._items is None:
            raise TypeError("a callable prompt source has no length")
        return len(self._items)

    def sample(self, rng: np.random.Generator) -> Any:
        """One prompt, drawn with ``rng`` (a str, or what ``check`` made of it)."""
        if self._function is not None:
            prompt = self._function(rng) if self._function_takes_rng else self._function()
            where = "the prompts callable"
        else:
            assert self._items is not None
            index = int(rng.integers(len(self._items)))
            prompt = self._items[index]
            where = f"prompts[{index}]"
        if self._check is not None:
            try:
                return self._check(prompt)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{where}: {error}") from error
        if not isinstance(prompt, str):
            raise TypeError(f"{where} is a {type(prompt).__name__}, not a str: {prompt!r}")
        return prompt


def imdb_prompts(
    count: int | None = None, words: int = 8, label: str | None = None, offset: int = 0
) -> list[str]:
    """Prompts from the first ``words`` words of IMDB reviews in the ``movie-reviews`` package.

    Args:
        count: how many prompts (default: all 25,000 IMDB reviews).
        words: words per prompt.
        label: keep only reviews with this label (``"positive"`` or ``"negative"``).
        offset: skip this many matching reviews first (for disjoint train/eval prompt sets).
    """
    prompts: list[str] = []
    for index, text in enumerate(movie_reviews("imdb", label)):
        if index < offset:
            continue
        prompt = " ".join(text.split()[:words])
        if prompt:
            prompts.append(prompt)
        if count is not None and len(prompts) == count:
            break
    return prompts


def balanced_imdb_prompts(count: int, words: int = 8, offset: int = 0) -> list[str]:
    """``count`` IMDB prompts alternating negative and positive reviews (the file holds all
    12,500 negative reviews first); ``offset`` skips that many reviews of each label."""
    half = (count + 1) // 2
    negative = imdb_prompts(half, words=words, label="negative", offset=offset)
    positive = imdb_prompts(half, words=words, label="positive", offset=offset)
    return [p for pair in zip(negative, positive, strict=False) for p in pair][:count]


def balanced_imdb_prompt_sets(sizes: Sequence[int], words: int = 8) -> list[list[str]]:
    """Disjoint sets of :func:`balanced_imdb_prompts` of the given ``sizes`` (e.g. training and
    held-out prompts), each starting at a negative review."""
    halves = [(size + 1) // 2 for size in sizes]
    prompts = balanced_imdb_prompts(2 * sum(halves), words=words)
    sets, offset = [], 0
    for size, half in zip(sizes, halves, strict=True):
        sets.append(prompts[offset : offset + size])
        offset += 2 * half
    return sets


#: Prompt-source names :func:`named_prompts` takes besides a text file's path.
PROMPT_SOURCES = ("imdb", "imdb-balanced")


def named_prompts(source: str, count: int, offset: int = 0, words: int = 8) -> list[str]:
    """Prompts by source name: ``"imdb"`` (review openings in file order), ``"imdb-balanced"``
    (alternating negative and positive reviews, ``offset`` per label), or a text file with one
    prompt per line (``offset``/``count`` select lines)."""
    if source == "imdb":
        return imdb_prompts(count=count, words=words, offset=offset)
    if source == "imdb-balanced":
        return balanced_imdb_prompts(count, words=words, offset=offset)
    if not Path(source).is_file():
        raise FileNotFoundError(
            f"prompt source {source!r} is neither one of {PROMPT_SOURCES} nor a text file"
        )
    return text_file_prompts(source)[offset : offset + count]


def text_file_prompts(path: str | Path) -> list[str]:
    """One prompt per non-blank line of a UTF-8 text file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts (every line is blank)")
    return prompts


def dataset_prompts(
    name_or_path: str | Path, column: str = "prompt", split: str = "train"
) -> Sequence[str]:
    """A column of a ``datasets`` dataset (hub name or local data file) as a prompt list."""
    dataset = load_dataset(name_or_path, split)
    if column not in dataset.column_names:
        raise ValueError(f"{name_or_path} has no column {column!r}; it has {dataset.column_names}")
    return dataset[column]
