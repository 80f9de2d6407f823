"""Gold metrics read from an episode's outcome, not from its text.

A turn-level env (a TextArena game, a reasoning-gym problem: :mod:`rlhf_env.dialogue.turn_level`)
reports what happened in its episode as named figures (``info["outcome"]``: ``{"win": 1.0,
"turns": 4.0}``). A task's gold metric that is one of those figures is an
:class:`EpisodeOutcome`: :func:`rlhf_agents.evaluate` reads it from each episode's outcome
where it calls other gold metrics on the prompt and response texts.

Example:
    >>> win = EpisodeOutcome("win")
    >>> win.values([{"win": 1.0, "turns": 3.0}, {}]).tolist()  # cut before the game's end
    [1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class EpisodeOutcome:
    """The gold metric ``key`` of each episode's outcome figures.

    Args:
        key: the figure (``"win"``, ``"correct"``, ``"reward"``).
        missing: the value of an episode whose outcome lacks ``key``, as one cut by the token
            env's turn or token limits before the game ended (default 0: not won, not
            solved); NaN leaves such episodes out of the mean.
    """

    def __init__(self, key: str, missing: float = 0.0) -> None:
        self.key = key
        self.missing = missing

    def values(self, outcomes: Sequence[Mapping[str, float]]) -> np.ndarray:
        """``(E,)``: the figure of each episode's outcome (``missing`` where it has none)."""
        return np.array([float(o.get(self.key, self.missing)) for o in outcomes], dtype=float)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Refused: the figure is not a function of the texts."""
        raise TypeError(
            f"the gold metric {self.key!r} is an episode's outcome, not a score of its text; "
            "evaluate it with rlhf_agents.evaluate, which reads each episode's outcome"
        )

    def __repr__(self) -> str:
        return f"EpisodeOutcome({self.key!r}, missing={self.missing})"


__all__ = ["EpisodeOutcome"]
