"""Prompt sources for the environments: a list of strings, a ``datasets`` column, or a callable."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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

    Example:
        >>> source = PromptSource(["The movie was", "I think that"])
        >>> source.sample(np.random.default_rng(0)) in ("The movie was", "I think that")
        True
    """

    def __init__(self, prompts: PromptsLike) -> None:
        if isinstance(prompts, str):
            raise TypeError(
                "prompts is a single string; pass a list of prompts, e.g. prompts=[prompt]"
            )
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

    def sample(self, rng: np.random.Generator) -> str:
        """One prompt, drawn with ``rng``."""
        if self._function is not None:
            prompt = self._function(rng) if self._function_takes_rng else self._function()
            where = "the prompts callable"
        else:
            assert self._items is not None
            index = int(rng.integers(len(self._items)))
            prompt = self._items[index]
            where = f"prompts[{index}]"
        if not isinstance(prompt, str):
            raise TypeError(f"{where} is a {type(prompt).__name__}, not a str: {prompt!r}")
        return prompt
