"""The demo pipeline (smoke mode: the PositiveReview task's tiny variant): every stage, the
report, resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_env.data.prompts import balanced_imdb_prompt_sets
from rlhf_env.tasks import task_options, task_spec
from rlhf_pipeline import DemoConfig, run_demo
from rlhf_pipeline.config import TASK
from rlhf_pipeline.report import ROWS

# make test-all: demo smokes (the whole pipeline on tiny models)
pytestmark = pytest.mark.long


@pytest.fixture(scope="module", autouse=True)
def task_cache(tmp_path_factory):
    """The task's judge and reward model go to a temporary task cache, shared by the module
    (so the tiny parts are built once)."""
    root = tmp_path_factory.mktemp("task-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHF_ENV_TASK_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    config = DemoConfig.smoke(out=str(tmp_path_factory.mktemp("demo")), progress_bar=False)
    return config, run_demo(config)


def test_smoke_demo_writes_the_report_plots_metrics_and_weights(finished_run):
    config, report = finished_run
    folder = report.parent
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["stage_seconds"]) == {"task", "initial_eval", "rl", "final_eval"}
    for when in ("initial", "final"):
        summary = metrics[when]
        assert summary["responses"] == config.eval_prompts
        # the judge is the gold score: the mean of its scores of every held-out sample
        samples = json.loads((folder / f"eval_{when}.json").read_text())["samples"]
        assert len(samples) == config.eval_prompts
        judged = [sample["gold/judge"] for sample in samples]
        assert summary["gold_score"] == summary["gold/judge"] == pytest.approx(np.mean(judged))
        assert 1 <= summary["response_length"] <= config.max_new_tokens
    assert metrics["initial"]["kl"] == pytest.approx(0.0, abs=1e-4)  # before any update
    assert metrics["gold_gain"] == pytest.approx(
        metrics["final"]["gold_score"] - metrics["initial"]["gold_score"]
    )
    assert metrics["rl"]["timesteps"] >= config.total_timesteps
    history = json.loads((folder / "rl_history.json").read_text())
    # the judge scored every training rollout (its mean moves from one rollout to the next)
    gold = [record["rollout/gold_score"] for record in history]
    assert len(gold) == metrics["rl"]["iterations"] and len(set(gold)) > 1
    for name in ("reward_vs_step", "kl_beta_vs_step", "gold_vs_kl"):
        png = folder / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in report.read_text()
    assert (folder / "policy" / "model.safetensors").is_file()


def test_the_report_compares_every_metric_before_and_after(finished_run):
    _, report = finished_run
    metrics = json.loads((report.parent / "metrics.json").read_text())
    text = report.read_text()
    assert "| metric | initial policy | final policy | change |" in text
    for key, label, _ in ROWS:
        row = metrics["comparison"][key]
        assert row["initial"] == metrics["initial"][key] and row["final"] == metrics["final"][key]
        assert row["change"] == pytest.approx(row["final"] - row["initial"])
        assert row["change_sem"] >= max(row["initial_sem"], row["final_sem"])
        assert f"| {label} | " in text
    assert {key for key, _, _ in ROWS} >= {
        "gold/judge", "gold/judge_fluent", "gold/vader", "learned_score", "kl", "perplexity",
        "distinct_1", "distinct_2", "repetition", "response_length",
    }  # fmt: skip
    assert "Gold gain (judge)" in text and "## Samples" in text


def test_the_tasks_details_are_recorded_and_reported(finished_run, task_cache):
    config, report = finished_run
    task = json.loads((report.parent / "run.json").read_text())["stages"]["task"]
    assert task["task"] == "rlhf_env/PositiveReview-v0"
    judge, reward_model = task["judge"], task["reward_model"]
    # the run records what the task's parts measured when they were built
    built = {name: json.loads((Path(task[name]["folder"]) / "metrics.json").read_text())
             for name in ("judge", "reward_model")}  # fmt: skip
    for key in ("held_out_accuracy", "vader_held_out_accuracy", "held_out_texts"):
        assert judge[key] == built["judge"][key]
    for key in ("train_pairs", "eval_pairs", "ppl_0"):
        assert reward_model[key] == built["reward_model"][key]
    assert reward_model["eval_accuracy"] == built["reward_model"]["eval_accuracy"][-1]
    assert judge["held_out_texts"] == 2 * min(400, config.judge_texts_per_label)
    assert judge["vader_held_out_accuracy"] > 0.6  # a real lexicon on real reviews
    pairs = reward_model["train_pairs"] + reward_model["eval_pairs"]
    assert 0 < pairs <= config.preference_prompts  # two responses per prompt: one pair each
    assert reward_model["ppl_0"] > 1
    for part, file in ((judge, "judge"), (reward_model, "reward_model")):
        folder = Path(part["folder"])
        assert folder.parent.parent == task_cache and (folder / file / "config.json").is_file()
    assert (Path(reward_model["folder"]) / "pairs.jsonl").is_file()
    text = report.read_text()
    assert f"held-out accuracy **{judge['held_out_accuracy']:.3f}**" in text
    assert f"VADER on the same texts: {judge['vader_held_out_accuracy']:.3f}" in text
    assert f"held-out pairwise accuracy **{reward_model['eval_accuracy']:.3f}**" in text
    assert f"into {pairs} pairs" in text and reward_model["folder"] in text


def test_samples_compare_the_tasks_held_out_prompts(finished_run):
    config, report = finished_run
    initial = json.loads((report.parent / "eval_initial.json").read_text())["samples"]
    final = json.loads((report.parent / "eval_final.json").read_text())["samples"]
    assert [s["prompt"] for s in initial] == [s["prompt"] for s in final]
    _, held_out = balanced_imdb_prompt_sets(
        [config.train_prompts, config.eval_prompts], words=config.prompt_words
    )
    assert len(initial) == len(held_out)
    for sample, prompt in zip(initial, held_out, strict=True):
        assert prompt.endswith(sample["prompt"])  # cut from the left to max_prompt_tokens
    assert all({"gold/judge", "gold/judge_fluent", "gold/vader"} <= set(s) for s in initial)


def test_the_demos_task_fields_are_the_tasks_options_with_its_defaults():
    # The same defaults: the demo reuses the judge and reward model the task cache holds.
    defaults = task_options(TASK)
    assert DemoConfig().task_arguments() == defaults
    smoke = task_spec(TASK).smoke_options
    tiny = {k: v for k, v in smoke.items() if k in defaults}
    sampled = {"sample_tokens": smoke["max_new_tokens"]}  # the demo samples max_new_tokens
    assert DemoConfig.smoke().task_arguments() == defaults | tiny | sampled


def test_a_rerun_of_a_finished_demo_redoes_no_stage(finished_run):
    config, report = finished_run
    before = json.loads((report.parent / "run.json").read_text())["stages"]
    reward_model = (
        Path(before["task"]["reward_model"]["folder"]) / "reward_model" / "model.safetensors"
    )
    mtimes = [
        path.stat().st_mtime_ns
        for path in (report.parent / "policy" / "model.safetensors", reward_model)
    ]
    run_demo(config)
    assert json.loads((report.parent / "run.json").read_text())["stages"] == before
    assert mtimes == [
        path.stat().st_mtime_ns
        for path in (report.parent / "policy" / "model.safetensors", reward_model)
    ]


def test_another_rl_seed_reruns_only_the_rl_on_the_same_task(finished_run, tmp_path):
    """``rl_seed``: the same judge and reward model (the task cache's folders), the same
    initial evaluation, another RL run."""
    config, report = finished_run
    other = run_demo(config.with_values(out=str(tmp_path / "other"), rl_seed=config.seed + 1))
    runs = [json.loads((r.parent / "run.json").read_text())["stages"] for r in (report, other)]
    for part in ("judge", "reward_model"):
        assert runs[0]["task"][part]["folder"] == runs[1]["task"][part]["folder"]
    initial = [json.loads((r.parent / "eval_initial.json").read_text()) for r in (report, other)]
    assert initial[0]["samples"] == initial[1]["samples"]
    scores = [  # the rollouts' scores (not the timings, which differ between any two runs)
        [
            record["rollout/score"]
            for record in json.loads((r.parent / "rl_history.json").read_text())
        ]
        for r in (report, other)
    ]
    assert len(scores[0]) == len(scores[1]) and scores[0] != scores[1]


def test_other_settings_in_the_same_folder_are_refused(finished_run):
    config, _ = finished_run
    with pytest.raises(ValueError, match=r"learning_rate: 0.0002 -> 0.001.*--overwrite"):
        run_demo(config.with_values(learning_rate=1e-3))


def test_a_resume_against_another_reward_model_is_refused(finished_run, tmp_path):
    config, report = finished_run
    copy = shutil.copytree(report.parent, tmp_path / "run")
    record = json.loads((copy / "run.json").read_text())
    record["stages"]["task"]["reward_model"]["folder"] += "-other"
    (copy / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"task's reward_model reward_model-.*-other.*--overwrite"):
        run_demo(config.with_values(out=str(copy)))


def test_an_interrupted_rl_stage_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    config = DemoConfig.smoke(out=str(tmp_path / "run"), progress_bar=False, total_timesteps=72)
    update = PolicyGradientAgent.update
    calls = {"n": 0}

    def crash_on_the_third_update(self, rollout):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return update(self, rollout)

    monkeypatch.setattr(PolicyGradientAgent, "update", crash_on_the_third_update)
    with pytest.raises(KeyboardInterrupt):
        run_demo(config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"task", "initial_eval"} <= set(record["stages"]) and "rl" not in record["stages"]
    assert (tmp_path / "run" / "rl" / "checkpoint-000002").is_dir()

    calls["n"] = 0

    def count_updates(self, rollout):
        calls["n"] += 1
        return update(self, rollout)

    monkeypatch.setattr(PolicyGradientAgent, "update", count_updates)
    report = run_demo(config)
    resumed = json.loads((report.parent / "run.json").read_text())["stages"]
    assert resumed["task"] == record["stages"]["task"]  # recorded once, the same parts read
    history = json.loads((report.parent / "rl_history.json").read_text())
    timesteps = [round(r["timesteps"]) for r in history]
    # 2 restored, then new ones (24 tokens each, fewer when a response ends early) up to 72.
    assert timesteps[:2] == [24, 48] and timesteps[-1] >= 72 > timesteps[-2]
    iterations = json.loads((report.parent / "metrics.json").read_text())["rl"]["iterations"]
    assert iterations == len(history) >= 3 and calls["n"] == len(history) - 2  # 2 restored


def test_time_budget_stops_rl_early(tmp_path):
    config = DemoConfig.smoke(
        out=str(tmp_path / "run"), progress_bar=False, total_timesteps=10_000, budget_minutes=0.01
    )
    report = run_demo(config)
    rl = json.loads((report.parent / "metrics.json").read_text())["rl"]
    assert rl["stopped_by_budget"] and rl["timesteps"] < 10_000
    assert "stopped by the time budget" in report.read_text()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("training_setup", "half", "training_setup must be"),
        ("agent", "dqn", "agent must be"),
        ("responses_per_prompt", 1, "responses_per_prompt must be >= 2"),
        ("judge_texts_per_label", 0, "judge_texts_per_label must be >= 1"),
        ("budget_minutes", 0.0, "budget_minutes must be > 0"),
    ],
)
def test_demo_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(**{field: value})
