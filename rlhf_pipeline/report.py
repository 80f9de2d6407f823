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


def write_report(run: RunFolder, total_seconds: float) -> Path:
    """Write the plots, ``metrics.json`` and ``report.md`` of a finished run; returns the
    markdown file."""
    initial = run.read_json("eval_initial.json")
    final = run.read_json("eval_final.json")
    history = run.read_json("rl_history.json")
    metrics = summarize(run, initial["summary"], final["summary"], total_seconds)
    run.write_json("metrics.json", metrics)
    plot_history(history, initial["summary"], final["summary"], run.path)
    markdown = render_markdown(metrics, initial["samples"], final["samples"], run)
    return write_text_atomic(run.file("report.md"), markdown)


def summarize(
    run: RunFolder, initial: dict[str, float], final: dict[str, float], total_seconds: float
) -> dict[str, Any]:
    """The run's figures: before/after evaluation, reward-model accuracy, stage times, machine."""
    return {
        "initial": initial,
        "final": final,
        "gold_gain": final["gold_score"] - initial["gold_score"],
        "learned_gain": final["learned_score"] - initial["learned_score"],
        "reward_model": run.stage("reward_model"),
        "rl": run.stage("rl"),
        "stage_seconds": {name: stage["seconds"] for name, stage in run.record["stages"].items()},
        "this_call_seconds": round(total_seconds, 1),
        "machine": machine_description(),
        "config": run.record["config"],
    }


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

    # 1. learned and gold reward against training tokens
    figure, learned_axis = plt.subplots(figsize=(7, 4))
    gold_axis = learned_axis.twinx()
    _curve(learned_axis, steps, series["rollout/score"], "tab:blue", "learned reward (RM score)")
    _curve(gold_axis, steps, series["rollout/gold_score"], "tab:orange", "gold reward (oracle)")
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

    # 3. gold reward against KL: what the reward costs in distance from the reference
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
    axis.set_ylabel("gold reward")
    axis.set_title("Gold reward vs KL (dots: training rollouts; black: held-out)")
    axis.legend(loc="lower right")
    _save(figure, folder / PLOTS["gold_vs_kl"])


def _cell(text: str, limit: int = 140) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(
    metrics: dict[str, Any],
    initial_samples: list[dict[str, Any]],
    final_samples: list[dict[str, Any]],
    run: RunFolder,
) -> str:
    """The report's markdown."""
    config = metrics["config"]
    initial, final = metrics["initial"], metrics["final"]
    rm, rl = metrics["reward_model"], metrics["rl"]
    rows = [
        ("gold reward (oracle, mean)", "gold_score", "{:+.3f}"),
        ("learned reward (RM, mean)", "learned_score", "{:+.3f}"),
        ("KL to the reference (nats per response)", "kl", "{:.2f}"),
        ("response length (tokens)", "response_length", "{:.1f}"),
    ]
    lines = [
        "# RLHF demo report",
        "",
        f"Policy `{config['policy']}`, reward model on `{config['reward_backbone']}`, gold "
        f"labeller `{config['oracle']}`, {config['agent'].upper()} on "
        f"`{config['training_setup']}`.",
        "",
        f"## Held-out evaluation ({initial['responses']} prompts, one response each)",
        "",
        "| | initial policy | final policy | change |",
        "|---|---|---|---|",
    ]
    for label, key, form in rows:
        change = final[key] - initial[key]
        lines.append(
            f"| {label} | {form.format(initial[key])} | {form.format(final[key])} | {change:+.3f} |"
        )
    sem = np.hypot(initial["gold_score_sem"], final["gold_score_sem"])
    lines += [
        "",
        f"Gold gain **{metrics['gold_gain']:+.3f}** (standard error {sem:.3f}) at a mean KL "
        f"of **{final['kl']:.2f} nats** per response.",
        "",
        "## Stages",
        "",
        f"- Preferences: {run.stage('preferences')['responses']} responses to "
        f"{config['preference_prompts']} prompts, {run.stage('preferences')['pairs']} labelled "
        "pairs (`pairs.jsonl`).",
        f"- Reward model: held-out pairwise accuracy **{_format(rm.get('eval_accuracy'))}** "
        f"(before training {_format(rm.get('initial_eval_accuracy'))}) on {rm['eval_pairs']} "
        f"pairs; trained on {rm['train_pairs']} (`reward_model/`).",
        f"- RL: {rl['timesteps']} generated tokens in {rl['iterations']} updates"
        + (" (stopped by the time budget)" if rl.get("stopped_by_budget") else "")
        + f"; final beta {rl['final_beta']:.4f}. Weights in `policy/`, checkpoints in `rl/`, "
        "TensorBoard logs in `tensorboard/`.",
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
        "| prompt | initial policy (gold) | final policy (gold) |",
        "|---|---|---|",
    ]
    for before, after in list(zip(initial_samples, final_samples, strict=True))[
        : config["report_samples"]
    ]:
        lines.append(
            f"| {_cell(before['prompt'])} | {_cell(before['response'])} ({before['gold']:+.2f}) "
            f"| {_cell(after['response'])} ({after['gold']:+.2f}) |"
        )
    lines += ["", "Settings: `metrics.json` (`config`).", ""]
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
