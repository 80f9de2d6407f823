"""The demo's report: ``report.md``, PNG plots and ``metrics.json`` in the run folder."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_env.extras import require
from rlhf_pipeline.run_folder import RunFolder, write_text_atomic

PLOTS = {
    "reward": "plots/reward_vs_step.png",
    "kl": "plots/kl_beta_vs_step.png",
    "gold_vs_kl": "plots/gold_vs_kl.png",
}

#: The before/after table's rows: summary key, label, number format.
ROWS = (
    ("gold/judge", "gold: judge score (0 to 1)", "{:.3f}"),
    ("gold/judge_fluent", "gold: judge x fluency", "{:.3f}"),
    ("gold/vader", "VADER compound", "{:+.3f}"),
    ("learned_score", "learned reward (reward model)", "{:+.3f}"),
    ("kl", "KL to the reference (nats per response)", "{:.2f}"),
    ("perplexity", "perplexity (under the reference)", "{:.1f}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("repetition", "repetition (seq-rep-3)", "{:.3f}"),
    ("response_length", "response length (tokens)", "{:.1f}"),
)
#: What the table's figures are, under it.
LEGEND = (
    "The judge's score is the sigmoid of its standardised output (above 0.5: positive); judge "
    "x fluency multiplies it by min(1, ppl_0 / the response's perplexity under the initial "
    "policy); VADER is the lexicon judge (easy to game with positive words). Perplexity: of the "
    "responses under the frozen reference (lower: more fluent to it); distinct-n: distinct word "
    "n-grams / n-grams over all responses; repetition: the mean share of a response's word "
    "3-grams that repeat an earlier one. ± is the standard error over prompts; a change's is "
    "sqrt(s.e. initial^2 + s.e. final^2)."
)


def write_report(run: RunFolder, total_seconds: float) -> Path:
    """Write the plots, ``metrics.json`` and ``report.md`` of a finished run; returns the
    markdown file."""
    initial = run.read_json("eval_initial.json")
    final = run.read_json("eval_final.json")
    history = run.read_json("rl_history.json")
    metrics = summarize(run, initial, final, total_seconds)
    run.write_json("metrics.json", metrics)
    plot_history(history, initial["summary"], final["summary"], run.path)
    markdown = render_markdown(metrics, initial["samples"], final["samples"])
    return write_text_atomic(run.file("report.md"), markdown)


def summarize(
    run: RunFolder, initial: dict[str, Any], final: dict[str, Any], total_seconds: float
) -> dict[str, Any]:
    """The run's figures: the before/after evaluations (``initial``, ``final``: results of
    :func:`rlhf_pipeline.held_out.evaluate_policy`) and their comparison, the task's figures,
    RL's, stage times, machine."""
    before, after = initial["summary"], final["summary"]
    return {
        "initial": before,
        "final": after,
        "comparison": compare(initial, final),
        "gold_gain": after["gold_score"] - before["gold_score"],
        "learned_gain": after["learned_score"] - before["learned_score"],
        "task": run.stage("task"),
        "rl": run.stage("rl"),
        "stage_seconds": {name: stage["seconds"] for name, stage in run.record["stages"].items()},
        "this_call_seconds": round(total_seconds, 1),
        "machine": machine_description(),
        "config": run.record["config"],
    }


def compare(initial: dict[str, Any], final: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every figure of :data:`ROWS` before and after, with its standard errors and its change;
    the change's standard error is ``sqrt(sem_initial^2 + sem_final^2)`` (two independent
    samples of responses)."""
    table: dict[str, dict[str, float]] = {}
    for key, _, _ in ROWS:
        first, last = initial["summary"][key], final["summary"][key]
        first_sem, last_sem = initial["sem"][key], final["sem"][key]
        table[key] = {
            "initial": first,
            "initial_sem": first_sem,
            "final": last,
            "final_sem": last_sem,
            "change": last - first,
            "change_sem": float(np.hypot(first_sem, last_sem)),
        }
    return table


def machine_description() -> dict[str, Any]:
    """What the run ran on."""
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _curve(
    axis: Any, steps: np.ndarray, values: np.ndarray, colour: str, label: str, raw: bool = True
) -> None:
    """One series against training tokens: faint raw values, and a moving average on top."""
    if raw:
        axis.plot(steps, values, color=colour, alpha=0.25)
    axis.plot(steps, _smooth(values, max(1, len(values) // 10)) if raw else values, color=colour)
    axis.set_ylabel(label, color=colour)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_history(
    history: list[dict[str, float]],
    initial: dict[str, float],
    final: dict[str, float],
    folder: Path,
) -> None:
    """The three report plots from the RL history (one point per update)."""
    matplotlib = require("matplotlib", "demo", "the report's plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir(exist_ok=True)
    steps = np.array([record["timesteps"] for record in history])
    series = {
        key: np.array([record.get(key, np.nan) for record in history])
        for key in ("rollout/score", "rollout/gold_score", "rollout/kl", "train/beta")
    }

    # 1. learned reward and gold score against training tokens
    figure, learned_axis = plt.subplots(figsize=(7, 4))
    gold_axis = learned_axis.twinx()
    _curve(learned_axis, steps, series["rollout/score"], "tab:blue", "learned reward (RM score)")
    _curve(gold_axis, steps, series["rollout/gold_score"], "tab:orange", "gold score (judge)")
    gold_axis.axhline(initial["gold_score"], color="tab:orange", linestyle=":", linewidth=1)
    learned_axis.set_title("Reward of the training rollouts (dotted: initial policy, gold)")
    learned_axis.set_xlabel("generated tokens")
    _save(figure, folder / PLOTS["reward"])

    # 2. KL to the reference and beta against training tokens
    figure, kl_axis = plt.subplots(figsize=(7, 4))
    beta_axis = kl_axis.twinx()
    _curve(kl_axis, steps, series["rollout/kl"], "tab:green", "KL per response (nats)")
    _curve(beta_axis, steps, series["train/beta"], "tab:red", "beta (KL coefficient)", raw=False)
    beta_axis.set_ylim(0, 1.25 * float(np.nanmax(series["train/beta"])) or 1.0)
    kl_axis.set_title("KL to the reference and the KL coefficient")
    kl_axis.set_xlabel("generated tokens")
    _save(figure, folder / PLOTS["kl"])

    # 3. gold score against KL: what the reward costs in distance from the reference
    figure, axis = plt.subplots(figsize=(6, 4))
    scatter = axis.scatter(
        series["rollout/kl"], series["rollout/gold_score"], c=steps, cmap="viridis", s=12
    )
    figure.colorbar(scatter, label="generated tokens")
    for summary, marker, label in ((initial, "s", "initial policy"), (final, "*", "final policy")):
        axis.scatter(
            summary["kl"], summary["gold_score"], marker=marker, s=120, color="black", label=label
        )
    axis.set_xlabel("KL per response to the reference (nats)")
    axis.set_ylabel("gold score (judge)")
    axis.set_title("Gold score vs KL (dots: training rollouts; black: held-out)")
    axis.legend(loc="lower right")
    _save(figure, folder / PLOTS["gold_vs_kl"])


def _cell(text: str, limit: int = 140) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(
    metrics: dict[str, Any],
    initial_samples: list[dict[str, Any]],
    final_samples: list[dict[str, Any]],
) -> str:
    """The report's markdown."""
    config, final = metrics["config"], metrics["final"]
    gold = metrics["comparison"]["gold/judge"]  # the gold score
    lines = [
        "# RLHF demo report",
        "",
        f"Task `{metrics['task']['task']}`: policy `{config['policy']}`, gold judge on "
        f"`{config['judge_backbone']}`, reward model on `{config['reward_backbone']}`, "
        f"{config['agent'].upper()} on `{config['training_setup']}`.",
        "",
        f"## Held-out evaluation ({final['responses']} prompts of the task, one response each)",
        "",
        *_comparison_table(metrics["comparison"]),
        "",
        f"Gold gain (judge) **{gold['change']:+.3f}** (standard error {gold['change_sem']:.3f}) "
        f"at a mean KL of **{final['kl']:.2f} nats** per response.",
        "",
        LEGEND,
        "",
        "## Stages",
        "",
        *_stage_lines(metrics, config),
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.0f} |" for name, seconds in metrics["stage_seconds"].items()),
        "",
        f"Machine: {metrics['machine']['platform']}, {metrics['machine']['cpu_cores']} cores, "
        f"GPU {metrics['machine']['gpu'] or 'none'}, torch {metrics['machine']['torch']}.",
        "",
        "## Plots",
        "",
        f"![reward]({PLOTS['reward']})",
        "",
        f"![kl]({PLOTS['kl']})",
        "",
        f"![gold vs kl]({PLOTS['gold_vs_kl']})",
        "",
        "## Samples: the same held-out prompts, before and after",
        "",
        "| prompt | initial policy (judge) | final policy (judge) |",
        "|---|---|---|",
    ]
    for before, after in list(zip(initial_samples, final_samples, strict=True))[
        : config["report_samples"]
    ]:
        lines.append(
            f"| {_cell(before['prompt'])} | {_cell(before['response'])} ({before['gold']:.2f}) "
            f"| {_cell(after['response'])} ({after['gold']:.2f}) |"
        )
    lines += ["", "Settings: `metrics.json` (`config`).", ""]
    return "\n".join(lines)


def _comparison_table(comparison: dict[str, dict[str, float]]) -> list[str]:
    """The before/after table: one row per :data:`ROWS` entry."""
    lines = [
        "| metric | initial policy | final policy | change |",
        "|---|---|---|---|",
    ]
    for key, label, form in ROWS:
        row = comparison[key]
        plain = form.replace("+", "")  # the standard errors
        signed = plain.replace("{:", "{:+")  # the change
        lines.append(
            f"| {label} | {form.format(row['initial'])} ± {plain.format(row['initial_sem'])} "
            f"| {form.format(row['final'])} ± {plain.format(row['final_sem'])} "
            f"| {signed.format(row['change'])} ± {plain.format(row['change_sem'])} |"
        )
    return lines


def _stage_lines(metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The stages' figures: the task's judge, preferences and reward model, then RL."""
    task, rl = metrics["task"], metrics["rl"]
    judge, rm = task["judge"], task["reward_model"]
    responses = config["preference_prompts"] * config["responses_per_prompt"]
    return [
        f"- Gold judge (`{config['judge_backbone']}`, trained on "
        f"{config['judge_texts_per_label']} labelled review texts per label): held-out accuracy "
        f"**{judge['held_out_accuracy']:.3f}** on {judge['held_out_texts']} texts (VADER on the "
        f"same texts: {judge['vader_held_out_accuracy']:.3f}). Cached in `{judge['folder']}`.",
        f"- Preferences: {responses} responses of the initial policy to "
        f"{config['preference_prompts']} prompts, labelled by the judge into "
        f"{rm['train_pairs'] + rm['eval_pairs']} pairs (mean judge score of the responses "
        f"{rm['initial_judge_mean']:.3f}).",
        f"- Reward model (`{config['reward_backbone']}`): held-out pairwise accuracy "
        f"**{_format(rm['eval_accuracy'])}** (before training "
        f"{_format(rm['initial_eval_accuracy'])}) on {rm['eval_pairs']} pairs; trained on "
        f"{rm['train_pairs']}. Fluency threshold ppl_0 = {rm['ppl_0']:.1f} (the 90th "
        f"percentile of the initial policy's perplexity on its own responses). Cached, with "
        f"`pairs.jsonl`, in `{rm['folder']}`.",
        f"- RL: {rl['timesteps']} generated tokens in {rl['iterations']} updates"
        + (" (stopped by the time budget)" if rl.get("stopped_by_budget") else "")
        + f"; final beta {rl['final_beta']:.4f}. Weights in `policy/`, checkpoints in `rl/`, "
        "TensorBoard logs in `tensorboard/`.",
    ]


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
