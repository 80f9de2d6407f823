"""The reward-function interface shared by every reward in the package.

A reward function is any callable ``reward_fn(prompts: list[str], responses: list[str])`` that
returns one finite number per response (a list, a numpy array or a 1-D tensor). Plain functions
and objects (a reward model, a classifier) plug in behind the same call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class RewardFunction(Protocol):
    """Scores a batch of responses to their prompts, one float per response."""

    def __call__(self, prompts: list[str], responses: list[str]) -> Sequence[float]: ...


class RewardError(ValueError):
    """A reward function returned something other than one finite number per response."""


def _to_array(raw: object) -> np.ndarray:
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().float().cpu().numpy()
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RewardError(
            f"reward_fn must return numbers, one per response; got {type(raw).__name__}: {raw!r}"
        ) from error


def score_responses(
    reward_fn: RewardFunction,
    prompts: list[str],
    responses: list[str],
    labels: Sequence[str] | None = None,
    not_applicable_ok: bool = False,
) -> np.ndarray:
    """Call ``reward_fn`` and check it returned one finite number per response.

    Args:
        reward_fn: the reward function.
        prompts: prompts, one per response.
        responses: decoded responses.
        labels: optional names of the rows for error messages (e.g. ``"sub-env 3"``).
        not_applicable_ok: let NaN through as "does not apply to this response" (a gold
            metric of a subset, as Arithmetic's exact match on negative answers, whose means
            leave it out); never for a training reward. Infinity is refused either way.

    Returns:
        ``(len(responses),)`` float64 array.

    Raises:
        RewardError: ``reward_fn`` raised, or returned the wrong count or shape, non-numbers,
            NaN or infinity (the message names the offending row and its prompt).
    """
    try:
        raw = reward_fn(prompts, responses)
    except Exception as error:
        raise RewardError(
            f"reward_fn raised {type(error).__name__}: {error} while scoring "
            f"{_failing_row(reward_fn, prompts, responses, labels)}; fix the reward function "
            "or the data it chokes on"
        ) from error
    scores = _to_array(raw)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != (len(responses),):
        raise RewardError(
            f"reward_fn returned an array of shape {scores.shape} for {len(responses)} "
            f"responses; it must return one number per response"
        )
    bad = np.flatnonzero(np.isinf(scores) if not_applicable_ok else ~np.isfinite(scores))
    if bad.size:
        row = int(bad[0])
        raise RewardError(
            f"reward_fn returned {scores[row]} for {_describe(row, prompts, responses, labels)}; "
            "rewards must be finite: fix or clip the reward function"
        )
    return scores


def _describe(
    row: int, prompts: list[str], responses: list[str], labels: Sequence[str] | None
) -> str:
    name = labels[row] if labels is not None else f"response {row}"
    return f"{name} (prompt {prompts[row]!r}, response {responses[row]!r})"


def _failing_row(
    reward_fn: RewardFunction,
    prompts: list[str],
    responses: list[str],
    labels: Sequence[str] | None,
) -> str:
    """The first row ``reward_fn`` raises on when called on it alone (found by scoring the rows
    one by one, only after a batch failed), or the batch when no single row fails."""
    if len(responses) > 1:
        for row in range(len(responses)):
            try:
                reward_fn([prompts[row]], [responses[row]])
            except Exception:
                return _describe(row, prompts, responses, labels)
    elif responses:
        return _describe(0, prompts, responses, labels)
    return f"a batch of {len(responses)} responses (no single one fails alone)"
