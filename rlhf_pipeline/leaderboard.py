"""The suite's leaderboard and learning curves: t-intervals over seeds, a ranked table per
task (plain or Markdown), and the gold score against training tokens (see
:mod:`rlhf_pipeline.suite`, which runs what these read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.extras import require
from rlhf_pipeline.suite import SuiteResult, as_float, rank_metric

#: Figures the leaderboard leaves out: a spread within one run and a count.
NOT_RANKED: tuple[str, ...] = ("score_std", "episodes")


# -- statistics --------------------------------------------------------------------------------


def _t_two_sided(t: float, dof: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``dof`` (Abramowitz & Stegun 26.7.3-4)."""
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
    while _t_two_sided(high, dof) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_two_sided(middle, dof) < confidence else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided t-interval (None with one value)."""

    mean: float
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        """``high - mean``, or None without an interval."""
        return None if self.high is None else self.high - self.mean


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval over ``values`` (NaNs left out): ``mean +- t_{n-1} * s / sqrt(n)``
    with the sample standard deviation ``s``; one value gives its mean and no interval.

    Example:
        >>> t_interval([1, 2, 3])  # mean 2, half-width 4.303 * 1 / sqrt(3)
        Interval(mean=2.0, n=3, low=-0.484..., high=4.484...)
    """
    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return Interval(math.nan, 0)
    mean = float(array.mean())
    if array.size == 1:
        return Interval(mean, 1)
    half = t_quantile(confidence, array.size - 1) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return Interval(mean, int(array.size), mean - half, mean + half)


# -- the leaderboard ---------------------------------------------------------------------------


@dataclass
class LeaderboardRow:
    """One agent on one task: every metric over its seeds, the tokens and seconds of a run."""

    agent: str
    seeds: int
    metrics: dict[str, Interval]
    tokens: float
    seconds: float


def leaderboard(result: SuiteResult, task: str, confidence: float = 0.95) -> list[LeaderboardRow]:
    """One row per agent of ``task``, best first by the mean gold score over seeds."""
    runs = result.runs_of(task)
    key = rank_metric(runs)
    rows = []
    for agent in dict.fromkeys(run.agent for run in runs):
        mine = result.runs_of(task, agent)
        names = list(dict.fromkeys(name for run in mine for name in run.final))
        rows.append(
            LeaderboardRow(
                agent=agent,
                seeds=len(mine),
                metrics={
                    name: t_interval([as_float(run.final.get(name)) for run in mine], confidence)
                    for name in names
                },
                tokens=float(np.mean([run.tokens for run in mine])),
                seconds=float(np.mean([run.seconds for run in mine])),
            )
        )

    def order(row: LeaderboardRow) -> float:
        mean = row.metrics.get(key, Interval(math.nan, 0)).mean
        return -mean if not math.isnan(mean) else math.inf

    return sorted(rows, key=order)


def _shown_metrics(rows: Sequence[LeaderboardRow], key: str, gold_name: str | None) -> list[str]:
    """The leaderboard's columns: the ranking metric, the other gold metrics, the learned
    reward, KL and return, then the rest in evaluation order; without :data:`NOT_RANKED`,
    ``gold/<first>`` (= ``gold``) and ``score`` (= ``learned``)."""
    names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    hidden = set(NOT_RANKED) | {f"gold/{gold_name}"}
    if "learned" in names:
        hidden.add("score")
    first = [key, *(n for n in names if n.startswith("gold/")), "learned", "kl", "return"]
    ordered = dict.fromkeys(n for n in [*first, *names] if n in names or n == key)
    return [name for name in ordered if name not in hidden or name == key]


def _decimals(value: float) -> int:
    return 1 if abs(value) >= 100 else 3


def _fixed(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` places, without a minus sign on a rounded zero."""
    return f"{round(value, decimals) or 0.0:.{decimals}f}"


def _cell(interval: Interval, seeds: int) -> str:
    """``mean ± half-width`` (both to the mean's decimals), the mean alone for one value, and
    the count where it differs from the row's (a metric missing in some runs)."""
    if interval.n == 0:
        return "-"
    decimals = _decimals(interval.mean) if not math.isnan(interval.mean) else 3
    text = _fixed(interval.mean, decimals)
    if interval.half_width is not None:
        text += f" ± {_fixed(interval.half_width, decimals)}"
    return text + (f" (n={interval.n})" if interval.n != seeds else "")


def leaderboard_table(
    result: SuiteResult, task: str, markdown: bool = False, confidence: float = 0.95
) -> str:
    """The leaderboard of ``task`` as text (aligned columns) or a Markdown table."""
    runs = result.runs_of(task)
    rows = leaderboard(result, task, confidence)
    key = rank_metric(runs)
    gold_name = next((run.gold_name for run in runs if run.gold_name), None)
    columns = _shown_metrics(rows, key, gold_name)
    header = ["rank", "agent", "seeds", "tokens", *columns, "s/run"]
    body = [
        [
            str(rank), row.agent, f"n={row.seeds}", f"{row.tokens:.0f}",
            *(_cell(row.metrics.get(name, Interval(math.nan, 0)), row.seeds) for name in columns),
            f"{row.seconds:.1f}",
        ]
        for rank, row in enumerate(rows, 1)
    ]  # fmt: skip
    ranked_by = f"{key} ({gold_name})" if key == "gold" and gold_name else key
    title = (
        f"{task}: ranked by {ranked_by}; mean ± {confidence:.0%} t-interval half-width over "
        "seeds (n=1: the mean alone)"
    )
    if markdown:
        lines = [f"**{title}**", "", _markdown_row(header), _markdown_row(["---"] * len(header))]
        return "\n".join(lines + [_markdown_row(line) for line in body])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *body]
    ]
    return "\n".join([title, *(line.rstrip() for line in table)])


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_leaderboard(result: SuiteResult, markdown: bool = False) -> str:
    """Every task's leaderboard; the Markdown version opens with the settings and machine
    (for ``benchmarks/RESULTS.md``)."""
    if not markdown:
        return "\n\n".join(leaderboard_table(result, task) for task in result.tasks())
    tables = []
    for task in result.tasks():
        tables.append(leaderboard_table(result, task, markdown=True))
        samples = sample_table(result, task)
        if samples:
            tables.append(samples)
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items() if v not in ({}, None))
    machine = result.machine
    where = f"{machine.get('cuda') or machine.get('processor')}, torch {machine.get('torch')}"
    return "\n\n".join([f"Settings: {settings}. Machine: {where}.", *tables]) + "\n"


def sample_table(result: SuiteResult, task: str, count: int = 2, width: int = 100) -> str:
    """A Markdown table of each agent's responses (its lowest seed's run) to the first
    ``count`` held-out prompts of ``task``, each cut to ``width`` characters; empty when the
    runs kept no samples."""
    runs = {}
    for run in sorted(result.runs_of(task), key=lambda run: run.seed):
        runs.setdefault(run.agent, run)
    kept = {agent: run.samples[:count] for agent, run in runs.items() if run.samples}
    if not kept:
        return ""
    shown = min(len(samples) for samples in kept.values())
    # The header names the prompts by their ends, from the first agent's samples.
    prompt_ends = [
        _one_line(sample["prompt"][-60:], 60, table_cell=False)
        for sample in next(iter(kept.values()))[:shown]
    ]
    header = ["agent", *(f"response {i + 1}" for i in range(shown))]
    lines = [
        f"Samples ({task}, each agent's lowest seed; the prompts end "
        + "; ".join(f"{i + 1}: `{end}`" for i, end in enumerate(prompt_ends))
        + ")",
        "",
        _markdown_row(header),
        _markdown_row(["---"] * len(header)),
    ]
    for agent, samples in kept.items():
        cells = [_one_line(sample["response"], width) for sample in samples[:shown]]
        lines.append(_markdown_row([agent, *(f"`{cell}`" for cell in cells)]))
    return "\n".join(lines)


def _one_line(text: str, width: int, table_cell: bool = True) -> str:
    """``text`` on one line, cut to ``width`` characters, without backticks, for inline code;
    pipes escaped in a table cell."""
    text = " ".join(text.split())[:width].replace("`", "'")
    return text.replace("|", "\\|") if table_cell else text


# -- learning curves ---------------------------------------------------------------------------


def plot_curves(result: SuiteResult, path: str | Path) -> list[Path]:
    """Gold score against training tokens per task, one line per agent (the mean over seeds,
    a band from the seeds' min to max; baselines dashed, flat). ``path`` ending in ``.png``
    (``.pdf``, ``.svg``) gets one figure with a panel per task; any other path is a folder
    that gets ``<task>.png`` each. Needs matplotlib (the ``demo`` extra)."""
    matplotlib = require("matplotlib", "demo", "the suite's learning-curve plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    tasks = result.tasks()
    if path.suffix.lower() in (".png", ".pdf", ".svg"):
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = min(3, len(tasks))
        rows = -(-len(tasks) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
        for axis, task in zip(axes.flat, tasks, strict=False):
            _draw_task(axis, result, task)
        for axis in list(axes.flat)[len(tasks) :]:
            axis.set_visible(False)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return [path]
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        _draw_task(axis, result, task)
        figure.tight_layout()
        written.append(path / f"{task}.png")
        figure.savefig(written[-1], dpi=120)
        plt.close(figure)
    return written


def _draw_task(axis: Any, result: SuiteResult, task: str) -> None:
    runs = result.runs_of(task)
    key = rank_metric(runs)
    gold_name = next((run.gold_name for run in runs if run.gold_name), None)
    flat: list[tuple[str, np.ndarray, str]] = []
    colours = _colours()
    for index, agent in enumerate(dict.fromkeys(run.agent for run in runs)):
        colour = colours[index % len(colours)]
        curves = [run.curve for run in result.runs_of(task, agent)]
        length = min(len(curve) for curve in curves)
        values = np.array(
            [[as_float(point["metrics"].get(key)) for point in c[:length]] for c in curves]
        )  # (seeds, points)
        if not any(run.trained for run in result.runs_of(task, agent)):  # one evaluation
            flat.append((agent, values[:, 0], colour))
            continue
        tokens = np.array([[point["tokens"] for point in c[:length]] for c in curves]).mean(0)
        mean = np.nanmean(values, 0)
        axis.plot(tokens, mean, "o-", color=colour, label=agent, markersize=3)
        if len(curves) > 1:
            low, high = np.nanmin(values, 0), np.nanmax(values, 0)
            axis.fill_between(tokens, low, high, color=colour, alpha=0.2, linewidth=0)
    for agent, values, colour in flat:
        axis.axhline(float(np.nanmean(values)), color=colour, linestyle="--", label=agent)
    axis.set_title(task)
    axis.set_xlabel("training tokens (generated)")
    axis.set_ylabel(f"{key} ({gold_name})" if key == "gold" and gold_name else key)
    axis.legend(fontsize=8)


def _colours() -> list[str]:
    """The colour cycle of the current style, so that every agent gets its own."""
    import matplotlib.pyplot as plt

    return list(plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"]))
