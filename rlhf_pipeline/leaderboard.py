"""The suite's leaderboard and learning curves: a ranked table per task (plain or Markdown)
whose intervals pool seeds and held-out prompts and whose comparisons are paired on the prompts
and Holm-corrected (:mod:`rlhf_pipeline.statistics`), and the gold score against training
tokens (see :mod:`rlhf_pipeline.suite`, which runs what these read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.extras import require
from rlhf_pipeline.statistics import Difference, Estimate, difference, estimate, holm, per_prompt
from rlhf_pipeline.suite import RunResult, SuiteResult, as_float, rank_metric

#: Figures the leaderboard leaves out: a spread within one run and a count.
NOT_RANKED: tuple[str, ...] = ("score_std", "episodes")
#: Figures whose per-response values an evaluation keeps under another name.
PER_RESPONSE_NAMES: dict[str, str] = {"score": "learned"}
#: Figures a run pools over its responses though it keeps per-response values too: a run's
#: perplexity is exp(NLL over all its response tokens), not the mean of the responses'
#: perplexities (a heavy-tailed figure); the table shows the runs' own values.
POOLED: frozenset[str] = frozenset({"perplexity"})


# -- the leaderboard ---------------------------------------------------------------------------


@dataclass
class Comparison:
    """A paired difference on the gold (``agent - other``) with its Holm-corrected p-value
    (corrected over every comparison of the task's table)."""

    other: str
    difference: Difference
    p_holm: float


@dataclass
class LeaderboardRow:
    """One agent on one task: every metric over its seeds and prompts, the ranking metric's
    seed means, its comparisons to the reference and to the best agent, and the tokens and
    seconds of a run."""

    agent: str
    seeds: int
    metrics: dict[str, Estimate]
    seed_means: list[float]
    tokens: float
    seconds: float
    versus_reference: Comparison | None = None
    versus_best: Comparison | None = None


def run_scores(result: SuiteResult, runs: Sequence[RunResult], name: str) -> np.ndarray | None:
    """``(seeds, prompts)``: each run's per-prompt means of metric ``name`` (its
    ``eval_samples`` answers per prompt averaged), or None when a run kept no per-response
    values of it, or the figure is pooled over a run's responses (``distinct_2``,
    ``perplexity``: :data:`POOLED`)."""
    name = PER_RESPONSE_NAMES.get(name, name)
    if not runs or name in POOLED or any(name not in run.per_response for run in runs):
        return None
    prompts: set[int] = set()
    for run in runs:
        answers = answers_per_prompt(result, run)
        values = len(run.per_response[name])
        if values % answers:
            raise ValueError(
                f"run {run.key} holds {values} values of {name}, not a whole number of "
                f"{answers} answers per held-out prompt; run it again into a fresh --out"
            )
        prompts.add(values // answers)
    if len(prompts) != 1:
        raise ValueError(
            f"the runs of {runs[0].task}/{runs[0].agent} answered {sorted(prompts)} held-out "
            "prompts: not the same prompts in every run; run them with the same settings (or "
            "into a fresh --out)"
        )
    count = prompts.pop()
    return np.stack([per_prompt(run.per_response[name], count) for run in runs])


def answers_per_prompt(result: SuiteResult, run: RunResult) -> int:
    """How many times ``run`` answered each held-out prompt: its own record, else (a file
    written before runs kept it) the suite's ``eval_samples`` setting."""
    if run.eval_samples is not None:
        return run.eval_samples
    return int(result.settings.get("eval_samples") or 1)


def leaderboard(
    result: SuiteResult, task: str, confidence: float = 0.95, reference: str = "reference"
) -> list[LeaderboardRow]:
    """One row per agent of ``task``, best first by the mean gold score; each agent compared
    with ``reference`` (the untrained policy's agent, where the suite ran it) and with the
    best agent, paired on the held-out prompts, p-values Holm-corrected over the table."""
    runs = result.runs_of(task)
    key = rank_metric(runs)
    agents = list(dict.fromkeys(run.agent for run in runs))
    rows: dict[str, LeaderboardRow] = {}
    gold: dict[str, np.ndarray] = {}
    for agent in agents:
        mine = result.runs_of(task, agent)
        names = list(dict.fromkeys(name for run in mine for name in run.final))
        metrics = {}
        for name in names:
            scores = run_scores(result, mine, name)
            if scores is not None:
                if not np.isfinite(scores).any():  # e.g. repetition of responses too short
                    continue
                metrics[name] = estimate(scores, confidence)
                if name == key:
                    gold[agent] = scores
                continue
            # a pooled figure (no per-response values): its mean and its seeds' range
            finals = np.asarray([as_float(run.final.get(name)) for run in mine], dtype=float)
            finals = finals[~np.isnan(finals)]
            if finals.size:
                spread = (finals.min(), finals.max()) if finals.size > 1 else (math.nan,) * 2
                metrics[name] = Estimate(float(finals.mean()), *spread, int(finals.size), 0)
        rows[agent] = LeaderboardRow(
            agent=agent,
            seeds=len(mine),
            metrics=metrics,
            seed_means=[as_float(run.final.get(key)) for run in mine],
            tokens=float(np.mean([run.tokens for run in mine])),
            seconds=float(np.mean([run.seconds for run in mine])),
        )

    def order(row: LeaderboardRow) -> float:
        mean = row.metrics[key].mean if key in row.metrics else math.nan
        return -mean if not math.isnan(mean) else math.inf

    ranked = sorted(rows.values(), key=order)
    _compare(ranked, gold, reference, confidence)
    return ranked


def _compare(
    rows: Sequence[LeaderboardRow],
    gold: dict[str, np.ndarray],
    reference: str,
    confidence: float,
) -> None:
    """Fill each row's comparisons: the pairs (agent, reference) and (agent, best), each
    unordered pair tested once, Holm-corrected together."""
    compared = [row for row in rows if row.agent in gold]
    if len(compared) < 2:
        return
    best = compared[0].agent
    tested: dict[frozenset[str], tuple[str, Difference]] = {}
    for row in compared:
        for other in (reference, best):
            pair = frozenset((row.agent, other))
            if other != row.agent and other in gold and pair not in tested:
                tested[pair] = row.agent, difference(gold[row.agent], gold[other], confidence)
    p_holm = dict(zip(tested, holm([d.p_value for _, d in tested.values()]), strict=True))

    def comparison(agent: str, other: str) -> Comparison | None:
        pair = frozenset((agent, other))
        if agent == other or pair not in tested:
            return None
        first, found = tested[pair]
        if first != agent:  # tested as other - agent: turn it round
            found = Difference(-found.mean, -found.high, -found.low, found.p_value)
        return Comparison(other, found, p_holm[pair])

    for row in compared:
        row.versus_reference = comparison(row.agent, reference)
        row.versus_best = comparison(row.agent, best)


def verdict(rows: Sequence[LeaderboardRow], alpha: float = 0.05) -> str:
    """What the comparisons say, in a sentence or two: which agents beat the reference and
    whether the best is ahead of the others or tied with some (Holm-corrected, at ``alpha``)."""
    compared = [row for row in rows if row.versus_best is not None or row.versus_reference]
    if not compared:
        return ""
    best = next(row.versus_best.other for row in compared if row.versus_best is not None)
    sentences = []
    ahead = [
        f"{row.agent} (p={_p(row.versus_reference.p_holm)})"
        for row in rows
        if row.versus_reference is not None
        and row.versus_reference.difference.mean > 0
        and row.versus_reference.p_holm < alpha
    ]
    if any(row.versus_reference is not None for row in rows):
        sentences.append(
            "Above the reference: " + (", ".join(ahead) if ahead else "no agent") + "."
        )
    tied = [
        f"{row.agent} (p={_p(row.versus_best.p_holm)})"
        for row in rows
        if row.versus_best is not None and row.versus_best.p_holm >= alpha
    ]
    sentences.append(
        f"Best: {best}, "
        + (f"tied with {', '.join(tied)}." if tied else "ahead of every other agent.")
    )
    return " ".join(sentences)


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


def _cell(value: Estimate | None, seeds: int) -> str:
    """``mean [low, high]`` (to the mean's decimals), the mean alone where the values do not
    spread, ``mean (seeds low to high)`` for a pooled figure (no per-response values, as
    ``distinct_2``), and the seed count where it differs from the row's (a metric some runs
    lack)."""
    if value is None or math.isnan(value.mean):
        return "-"
    decimals = _decimals(value.mean)
    text = _fixed(value.mean, decimals)
    if value.prompts == 0 and not math.isnan(value.low):  # a pooled figure: the seeds' range
        text += f" (seeds {_fixed(value.low, decimals)} to {_fixed(value.high, decimals)})"
    elif not math.isnan(value.low):
        text += f" [{_fixed(value.low, decimals)}, {_fixed(value.high, decimals)}]"
    return text + (f" (n={value.seeds})" if value.seeds != seeds else "")


def _p(p_value: float) -> str:
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _signed(value: float, decimals: int) -> str:
    text = _fixed(value, decimals)
    return text if text.startswith("-") else f"+{text}"


def _comparison_cell(comparison: Comparison | None, decimals: int) -> str:
    """``+difference [low, high] p=...`` (Holm-corrected), or "-"."""
    if comparison is None:
        return "-"
    found = comparison.difference
    text = _signed(found.mean, decimals)
    if not math.isnan(found.low):
        text += f" [{_signed(found.low, decimals)}, {_signed(found.high, decimals)}]"
    return f"{text} p={_p(comparison.p_holm)}"


def method_note(confidence: float = 0.95) -> str:
    """How to read the table: the header every leaderboard carries."""
    return (
        f"[low, high]: {confidence:.0%} interval pooling seeds and held-out prompts (a t-interval "
        "on the sum of the seeds' and the prompts' variance parts, Welch-Satterthwaite degrees of "
        "freedom; errs wide; clipped to the values seen); the mean alone where values do not "
        "spread; a figure pooled over a run's responses (distinct-n, perplexity) shows its seeds' "
        "range. "
        "vs reference / vs best: the gold difference paired on the same prompts, its "
        "interval and a two-sided t-test p-value, Holm-corrected over the table's comparisons. "
        "per seed: each seed's gold (the seeds' spread). Method: rlhf_pipeline/statistics.py."
    )


def held_out_note(result: SuiteResult, runs: Sequence[RunResult]) -> str:
    """How many held-out prompts each run answered, and how many times each (e.g. ``Held out:
    64 prompts, each answered 2 times per run.``); empty when no run kept per-response gold."""
    counts = {
        (len(run.per_response["gold"]), answers_per_prompt(result, run))
        for run in runs
        if run.per_response.get("gold")
    }
    if len(counts) != 1:
        return ""
    ((values, answers),) = counts
    prompts = values // answers
    times = "once" if answers == 1 else f"{answers} times"
    return f"Held out: {prompts} prompts, each answered {times} per run."


def models_note(runs: Sequence[RunResult]) -> str:
    """The models behind a task's scores with their held-out accuracies, from the runs'
    ``task_details`` (e.g. ``gold_model 0.650 (180 held out), reward_model 0.567 (...)``):
    what a gain on a learned gold or reward can be worth. Empty when none is recorded."""
    details = next((run.task_details for run in runs if run.task_details), {})
    parts = []
    for name, facts in details.items():
        if not isinstance(facts, dict):
            continue
        accuracy = facts.get("held_out_accuracy", facts.get("eval_accuracy"))
        if isinstance(accuracy, list):  # per epoch: the last
            accuracy = accuracy[-1] if accuracy else None
        if isinstance(accuracy, (int, float)):
            count = facts.get("eval_pairs") or facts.get("held_out_texts")
            parts.append(f"{name} {accuracy:.3f}" + (f" ({count} held out)" if count else ""))
    return f"Held-out accuracy of the task's models: {', '.join(parts)}." if parts else ""


def leaderboard_table(
    result: SuiteResult, task: str, markdown: bool = False, confidence: float = 0.95
) -> str:
    """The leaderboard of ``task`` as text (aligned columns) or a Markdown table, with the
    method's note and the verdict (:func:`verdict`) under it."""
    runs = result.runs_of(task)
    rows = leaderboard(result, task, confidence)
    key = rank_metric(runs)
    gold_name = next((run.gold_name for run in runs if run.gold_name), None)
    columns = _shown_metrics(rows, key, gold_name)
    compares = any(row.versus_best or row.versus_reference for row in rows)
    versus = ["vs reference", "vs best"] if compares else []
    header = [
        "rank", "agent", "seeds", "tokens", columns[0], *versus, "per seed", *columns[1:], "s/run"
    ]  # fmt: skip
    body = []
    for rank, row in enumerate(rows, 1):
        gold = row.metrics.get(key)
        decimals = _decimals(gold.mean) if gold is not None and not math.isnan(gold.mean) else 3
        versus_cells = [
            _comparison_cell(comparison, decimals)
            for comparison in (row.versus_reference, row.versus_best)
            if compares
        ]
        per_seed = ", ".join(_fixed(v, decimals) for v in row.seed_means) if row.seeds > 1 else "-"
        body.append([
            str(rank), row.agent, f"n={row.seeds}", f"{row.tokens:.0f}",
            _cell(gold, row.seeds), *versus_cells, per_seed,
            *(_cell(row.metrics.get(name), row.seeds) for name in columns[1:]),
            f"{row.seconds:.1f}",
        ])  # fmt: skip
    ranked_by = f"{key} ({gold_name})" if key == "gold" and gold_name else key
    title = f"{task}: ranked by {ranked_by}"
    notes = [method_note(confidence), held_out_note(result, runs), models_note(runs), verdict(rows)]
    if markdown:
        lines = [f"**{title}**", "", _markdown_row(header), _markdown_row(["---"] * len(header))]
        lines += [_markdown_row(line) for line in body]
        return "\n".join([*lines, "", *(note for note in notes if note)])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *body]
    ]
    return "\n".join([title, *(line.rstrip() for line in table), *(note for note in notes if note)])


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
    header = f"Settings: {settings}. Machine: {where}."
    if result.settings.get("recipes"):
        header += (
            " A task's recipe (`rlhf-env tasks`) sets the agents it names over learning_rate, "
            "epochs and minibatch_size; each run's `agent_settings` holds what ran."
        )
    if result.settings.get("budgets"):
        header += (
            " A task's suite budget (`rlhf-env tasks`) sets its runs' tokens, training setup, "
            "env options and answers per held-out prompt where the settings above do not; each "
            "run's `budget`, `training_setup`, `options` and `eval_samples` hold what ran."
        )
    return "\n\n".join([header, *tables]) + "\n"


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
    a band from the seeds' min to max; baselines dashed, flat) and, where the runs logged
    their iterations (``RunResult.history``), a panel under it of the training reward per
    iteration (one line per seed). ``path`` ending in ``.png`` (``.pdf``, ``.svg``) gets one
    figure with a column per task (three at most, then more rows); any other path is a
    folder that gets ``<task>.png`` each. Needs matplotlib (the ``demo`` extra)."""
    matplotlib = require("matplotlib", "demo", "the suite's learning-curve plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    tasks = result.tasks()
    panels = 2 if any(run.history for run in result.runs) else 1
    if path.suffix.lower() in (".png", ".pdf", ".svg"):
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = min(3, len(tasks))
        rows = -(-len(tasks) // columns) * panels
        figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
        for index, task in enumerate(tasks):
            row, column = index // columns * panels, index % columns
            _draw_panels(axes[row : row + panels, column], result, task)
        for index in range(len(tasks), rows // panels * columns):
            for panel in range(panels):
                axes[index // columns * panels + panel, index % columns].set_visible(False)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return [path]
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        figure, axes = plt.subplots(panels, 1, figsize=(7, 4.5 * panels), squeeze=False)
        _draw_panels(axes[:, 0], result, task)
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


def _draw_panels(axes: Sequence[Any], result: SuiteResult, task: str) -> None:
    """``task``'s gold panel, and under it its training-reward panel where ``axes`` has two."""
    _draw_task(axes[0], result, task)
    if len(axes) > 1:
        _draw_training(axes[1], result, task)


def _draw_training(axis: Any, result: SuiteResult, task: str) -> None:
    """The training reward (``rollout/score``, each iteration's mean) against training tokens,
    one line per trained run, coloured by agent as in the gold panel."""
    colours = _colours()
    for index, agent in enumerate(dict.fromkeys(run.agent for run in result.runs_of(task))):
        labelled = False
        for run in result.runs_of(task, agent):
            points = [
                (r["timesteps"], r["rollout/score"]) for r in run.history if "rollout/score" in r
            ]
            if not points:
                continue
            tokens, scores = zip(*points, strict=True)
            label = None if labelled else agent
            axis.plot(tokens, scores, color=colours[index % len(colours)], alpha=0.6, label=label)
            labelled = True
    axis.set_title(f"{task}: training reward per iteration (each seed)")
    axis.set_xlabel("training tokens (generated)")
    axis.set_ylabel("rollout/score")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)


def _colours() -> list[str]:
    """The colour cycle of the current style, so that every agent gets its own."""
    import matplotlib.pyplot as plt

    return list(plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"]))
