"""The demo pipeline (smoke mode: tiny random models): every stage, the report, resuming."""

from __future__ import annotations

import json

import pytest

from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_env.data.prompts import balanced_imdb_prompts
from rlhf_pipeline import DemoConfig, run_demo
from rlhf_pipeline.demo import prompt_splits

# make test-all: demo smokes (the whole pipeline on tiny models)
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    config = DemoConfig.smoke(out=str(tmp_path_factory.mktemp("demo")), progress_bar=False)
    return config, run_demo(config)


def test_smoke_demo_writes_the_report_plots_metrics_and_weights(finished_run):
    config, report = finished_run
    folder = report.parent
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["stage_seconds"]) == {
        "preferences", "reward_model", "initial_eval", "rl", "final_eval",
    }  # fmt: skip
    for when in ("initial", "final"):
        summary = metrics[when]
        assert summary["responses"] == config.eval_prompts
        assert -1 <= summary["gold_score"] <= 1
        assert 1 <= summary["response_length"] <= config.max_new_tokens
    assert metrics["initial"]["kl"] == pytest.approx(0.0, abs=1e-4)  # before any update
    assert metrics["gold_gain"] == pytest.approx(
        metrics["final"]["gold_score"] - metrics["initial"]["gold_score"]
    )
    assert metrics["rl"]["timesteps"] >= config.total_timesteps
    history = json.loads((folder / "rl_history.json").read_text())
    assert all("rollout/gold_score" in record for record in history)
    for name in ("reward_vs_step", "kl_beta_vs_step", "gold_vs_kl"):
        png = folder / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in report.read_text()
    assert (folder / "policy" / "model.safetensors").is_file()
    assert (folder / "reward_model" / "model.safetensors").is_file()
    text = report.read_text()
    assert "| gold reward (oracle, mean) |" in text and "held-out pairwise accuracy" in text


def test_samples_compare_the_same_held_out_prompts(finished_run):
    config, report = finished_run
    initial = json.loads((report.parent / "eval_initial.json").read_text())["samples"]
    final = json.loads((report.parent / "eval_final.json").read_text())["samples"]
    assert [s["prompt"] for s in initial] == [s["prompt"] for s in final]
    assert [s["prompt"] for s in initial] == prompt_splits(config).evaluation


def test_prompt_splits_are_disjoint_and_balanced():
    config = DemoConfig.smoke(preference_prompts=10, train_prompts=20, eval_prompts=6)
    splits = prompt_splits(config)
    sets = [set(splits.preference), set(splits.train), set(splits.evaluation)]
    assert [len(s) for s in sets] == [10, 20, 6]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    negative_first = balanced_imdb_prompts(4)
    assert splits.preference[:4] == negative_first


def test_a_rerun_of_a_finished_demo_redoes_no_stage(finished_run):
    config, report = finished_run
    before = json.loads((report.parent / "run.json").read_text())["stages"]
    mtime = (report.parent / "reward_model" / "model.safetensors").stat().st_mtime_ns
    run_demo(config)
    assert json.loads((report.parent / "run.json").read_text())["stages"] == before
    assert (report.parent / "reward_model" / "model.safetensors").stat().st_mtime_ns == mtime


def test_other_settings_in_the_same_folder_are_refused(finished_run):
    config, _ = finished_run
    with pytest.raises(ValueError, match=r"learning_rate: 0.0002 -> 0.001.*--overwrite"):
        run_demo(config.with_values(learning_rate=1e-3))


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
    assert "reward_model" in record["stages"] and "rl" not in record["stages"]
    assert (tmp_path / "run" / "rl" / "checkpoint-000002").is_dir()

    monkeypatch.setattr(PolicyGradientAgent, "update", update)
    calls["n"] = 0
    report = run_demo(config)
    history = json.loads((report.parent / "rl_history.json").read_text())
    assert [round(r["timesteps"]) for r in history] == [24, 48, 72]  # 2 restored + 1 new
    assert json.loads((report.parent / "metrics.json").read_text())["rl"]["iterations"] == 3


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
        ("budget_minutes", 0.0, "budget_minutes must be > 0"),
    ],
)
def test_demo_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(**{field: value})
