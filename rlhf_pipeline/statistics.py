"""How sure a suite figure is: intervals that pool seeds and held-out prompts, paired
differences between agents, and Holm's correction for the comparisons a table makes.

Every run of a task answers the same held-out prompts, so a figure has two sources of
uncertainty: the seed (another training run lands elsewhere) and the prompts (another held-out
set scores differently). The two are *crossed*, not nested: every seed answers every prompt.
For one agent's scores ``y[s, p]`` (seed ``s`` of ``S``, prompt ``p`` of ``P``; each a mean over
that prompt's answers) the figure is ``m``, the mean over seeds of each seed's mean over
prompts, and its variance has a part from each factor:

- seeds: the variance of the seed means over ``S`` (``S - 1`` degrees of freedom);
- prompts: the variance of the prompt means (over seeds) over ``P`` (``P - 1``).

Their sum counts the residual seed x prompt noise twice (once in each), so the interval errs
wide, never narrow. The interval is ``m +- t * sqrt(variance)`` with Student's t at the
Welch-Satterthwaite degrees of freedom of the sum, rounded down (with 3 seeds and seeds
dominating, about 2: t = 4.3, not 1.96). The interval is clipped to the values seen (a mean
cannot leave them), so it never leaves the metric's range.

A *difference* between two agents is paired on the prompts: its prompt part is the variance of
the per-prompt differences, in which a prompt that every agent finds hard cancels; the two
agents' seed parts add (seed 0 of one agent has nothing to do with seed 0 of another). Its
p-value is the two-sided t test's; :func:`holm` corrects a family of them.

Why not a bootstrap over seeds and prompts: with 3 seeds a resampled mean of seed means can
never spread further than the seeds themselves, while the seeds' true spread is estimated
from 3 values (t with 2 degrees of freedom is 2.2x the normal quantile). Simulated with seed
effects that dominate, a seeds-and-prompts bootstrap rejected a true null 14-19% of the time
at a nominal 5% (3 seeds) and 6-13% (5 seeds); this test stays at or under 5%
(``tests/test_statistics.py`` checks both).

Example:
    >>> import numpy as np
    >>> ppo = np.array([[1, 0, 1, 1], [1, 1, 1, 0]])  # exact match: 2 seeds x 4 prompts
    >>> reference = np.array([[0, 0, 1, 0], [1, 0, 0, 0]])
    >>> estimate(ppo).mean, difference(ppo, reference).mean
    (0.75, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds (each a mean over prompts) and its two-sided interval (NaN bounds
    where the values do not spread: a single one, or all alike, as 0 correct of 20, whose
    true rate a zero-width interval would overstate)."""

    mean: float
    low: float
    high: float
    seeds: int
    prompts: int


@dataclass(frozen=True)
class Difference:
    """``mean(first) - mean(second)`` on the same prompts, its interval and its two-sided
    p-value (uncorrected: see :func:`holm`)."""

    mean: float
    low: float
    high: float
    p_value: float


def per_prompt(values: Sequence[float | None], prompts: int) -> np.ndarray:
    """A run's per-response values as per-prompt means ``(prompts,)``.

    The suite evaluates ``prompts`` held-out prompts ``k`` times each as one list, the prompts
    in order and then again: response ``i`` answers prompt ``i % prompts``. None and NaN (a
    response without the value) are left out of its prompt's mean; a prompt with none is NaN.
    """
    array = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if prompts < 1 or array.size % prompts:
        raise ValueError(
            f"{array.size} responses are not a whole number of answers to each of {prompts} "
            "prompts: pass the number of distinct held-out prompts evaluated"
        )
    return _nan_mean(array.reshape(array.size // prompts, prompts), axis=0)


def estimate(scores: np.ndarray | Sequence[Sequence[float]], confidence: float = 0.95) -> Estimate:
    """The mean of ``scores`` ``(seeds, prompts)`` and its interval (module docstring)."""
    array = _scores(scores)
    seed_means = _nan_mean(array, axis=1)
    prompt_means = _nan_mean(array, axis=0)
    mean = float(np.nanmean(seed_means))
    parts = [_part(seed_means), _part(prompt_means)]
    low, high = _interval(mean, parts, confidence, _finite(array))
    return Estimate(mean, low, high, *array.shape)


def difference(
    first: np.ndarray | Sequence[Sequence[float]],
    second: np.ndarray | Sequence[Sequence[float]],
    confidence: float = 0.95,
) -> Difference:
    """``first - second``, paired on the prompts: both ``(seeds, prompts)`` with the same
    prompts in the same order (the seeds need not match in number)."""
    a, b = _scores(first), _scores(second)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the two agents answered {a.shape[1]} and {b.shape[1]} prompts: a paired "
            "difference needs the same held-out prompts"
        )
    mean = float(np.nanmean(_nan_mean(a, axis=1)) - np.nanmean(_nan_mean(b, axis=1)))
    per_prompt_difference = _nan_mean(a, axis=0) - _nan_mean(b, axis=0)
    parts = [
        _part(_nan_mean(a, axis=1)),
        _part(_nan_mean(b, axis=1)),
        _part(per_prompt_difference),
    ]
    values_a, values_b = _finite(a), _finite(b)
    bounds = np.array([values_a.min() - values_b.max(), values_a.max() - values_b.min()])
    low, high = _interval(mean, parts, confidence, bounds)
    variance, dof = _combine(parts)
    if variance > 0:
        p_value = 1.0 - t_two_sided(abs(mean) / math.sqrt(variance), dof)
    else:  # no spread at all: equal means are no evidence, unequal ones are certain
        p_value = 1.0 if mean == 0 else 0.0
    return Difference(mean, low, high, max(0.0, min(1.0, p_value)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error): the ``k``-th smallest of ``m``
    p-values times ``m - k + 1``, made non-decreasing in that order and capped at 1; returned
    in the given order.

    Example:
        >>> holm([0.01, 0.04, 0.03, 0.005])
        [0.03, 0.06, 0.06, 0.02]
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def t_two_sided(t: float, dof: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``dof`` (Abramowitz & Stegun 26.7.3-4)."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    theta = math.atan(t / math.sqrt(dof))
    cos2 = math.cos(theta) ** 2
    if dof % 2 == 0:
        term = total = 1.0
        for k in range(0, dof // 2 - 1):
            term *= cos2 * (2 * k + 1) / (2 * k + 2)
            total += term
        return math.sin(theta) * total
    if dof == 1:
        return 2 * theta / math.pi
    term = total = math.cos(theta)
    for k in range(1, (dof - 1) // 2):
        term *= cos2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * total)


def t_quantile(confidence: float, dof: int) -> float:
    """The half-width multiplier of a two-sided ``confidence`` t-interval with ``dof`` degrees
    of freedom: ``t_{(1 + confidence) / 2, dof}`` (4.303 for 95% and 2 dof)."""
    if not 0 < confidence < 1 or dof < 1:
        raise ValueError(f"need 0 < confidence < 1 and dof >= 1, got {confidence}, {dof}")
    low, high = 0.0, 1.0
    while t_two_sided(high, dof) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided(middle, dof) < confidence else (low, middle)
    return (low + high) / 2


# -- the parts of a variance -------------------------------------------------------------------


def _scores(scores: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(scores, dtype=float)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"scores must be (seeds, prompts) with at least one of each, got shape {array.shape}"
        )
    if not np.isfinite(array).any():
        raise ValueError("scores hold no finite value")
    return array


def _nan_mean(array: np.ndarray, axis: int) -> np.ndarray:
    """The mean over ``axis`` of the non-NaN values (NaN where there are none)."""
    counted = (~np.isnan(array)).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, np.nansum(array, axis) / np.maximum(counted, 1), np.nan)


def _finite(array: np.ndarray) -> np.ndarray:
    return array[np.isfinite(array)]


def _part(means: np.ndarray) -> tuple[float, int]:
    """``(variance of the mean of means, degrees of freedom)``: (0, 0) for a single one."""
    means = means[~np.isnan(means)]
    if means.size < 2:
        return 0.0, 0
    return float(means.var(ddof=1)) / means.size, means.size - 1


def _combine(parts: Sequence[tuple[float, int]]) -> tuple[float, int]:
    """The summed variance and its Welch-Satterthwaite degrees of freedom, rounded down."""
    variance = sum(v for v, _ in parts)
    spread = sum(v * v / dof for v, dof in parts if dof > 0 and v > 0)
    if variance <= 0 or spread <= 0:
        return variance, 0
    return variance, min(1000, max(1, int(variance * variance / spread)))


def _interval(
    mean: float, parts: Sequence[tuple[float, int]], confidence: float, values: np.ndarray
) -> tuple[float, float]:
    variance, dof = _combine(parts)
    if dof == 0:  # a single value, or values all alike: nothing to say how far off the mean is
        return math.nan, math.nan
    half = t_quantile(confidence, dof) * math.sqrt(variance)
    return max(mean - half, float(values.min())), min(mean + half, float(values.max()))
