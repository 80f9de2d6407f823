"""Smoke runs of the benchmark scripts in a subprocess, on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# make test-all: every benchmark script run in a subprocess on tiny settings
pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_rollout_throughput_smoke(tmp_path):
    out = tmp_path / "throughput.json"
    stdout = _run(
        "rollout_throughput.py", "--models", "tiny-gpt2", "--tokenizer", "tiny",
        "--prompts", "builtin", "--batches", "2", "--new", "4", "--repeats", "1",
        "--out", str(out),
    )  # fmt: skip
    assert "(a2) comp" in stdout and "(d2) gen-c" in stdout
    (result,) = json.loads(out.read_text())["results"]
    rows = (
        "env_dynamic", "env_static", "env_compiled", "fused_loop", "naive_env", "generate",
        "generate_compiled", "sb3_path",
    )  # fmt: skip
    for row in rows:
        assert result[f"{row}_tok_s"] > 0
    for ratio in ("a1/a", "a2/a", "a2/b", "a/c", "a2/d2", "e/a"):
        assert result[ratio] > 0


def test_episode_collection_smoke(tmp_path):
    out = tmp_path / "collection.json"
    stdout = _run(
        "episode_collection.py", "--model", "tiny-gpt2", "--batch", "4", "--lengths", "2", "6",
        "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert "held is" in stdout
    result = json.loads(out.read_text())
    assert result["tokens_per_collection"] == 2 + 3 + 5 + 6  # lengths spread over 2..6
    assert result["held_s"] > 0 and result["autoreset_s"] > 0 and result["speedup"] > 0


def test_dialogue_rollout_smoke(tmp_path):
    out = tmp_path / "dialogue.json"
    stdout = _run(
        "dialogue_rollout.py", "--model", "tiny-gpt2", "--batch", "4", "--turn-tokens", "4",
        "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert "dialogue / single-turn tokens/s" in stdout
    result = json.loads(out.read_text())
    # User turns were inserted (the tiny tokenizer's are long: the budget may cut turn 3).
    assert result["inserted_tokens"] > 0
    assert result["continuation_tokens"] > result["inserted_tokens"] + 4 * 4
    for variant in ("dialogue", "single-turn", "re-encode"):
        assert result[f"{variant}_s"] > 0
    assert result["dialogue_vs_single"] > 0


@pytest.mark.parametrize("env", ["vector", "single"])
def test_env_memory_soak_smoke(tmp_path, env):
    out = tmp_path / "memory.json"
    stdout = _run(
        "vector_env_memory.py", "--env", env, "--steps", "1000", "--warmup", "500",
        "--num-envs", "2", "--limit", "100", "--out", str(out),
    )  # fmt: skip
    assert "growth" in stdout and "pass" in stdout
    result = json.loads(out.read_text())
    assert result["episodes"] > 0 and result["rss_final_mib"] > 0 and result["passed"]
    assert result["env"] == env


def test_ppo_training_smoke(tmp_path):
    out = tmp_path / "ppo.json"
    stdout = _run(
        "ppo_training.py", "--model", "tiny", "--setups", "full", "lora:4", "--num-envs", "4",
        "--new", "4", "--iterations", "2", "--minibatch", "4", "--out", str(out),
    )  # fmt: skip
    assert "peak MiB" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["setup"] for row in rows] == ["full", "lora:4"]
    assert rows[1]["trainable_parameters"] < rows[0]["trainable_parameters"]
    assert all(row["tokens_per_second"] > 0 for row in rows)


def test_sb3_rollout_smoke(tmp_path):
    out = tmp_path / "sb3.json"
    stdout = _run(
        "sb3_rollout.py", "--models", "tiny-gpt2", "--tokenizer", "tiny", "--batch", "2",
        "--new", "4", "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert "ratio" in stdout
    (result,) = json.loads(out.read_text())["results"]
    assert result["tokens_per_second_cache"] > 0 and result["tokens_per_second_no_cache"] > 0


def test_vs_trl_smoke_of_our_setups(tmp_path):
    out = tmp_path / "vs_trl.json"
    stdout = _run(
        "vs_trl.py", "--model", "tiny", "--setups", "initial", "rloo", "ppo", "sb3-ppo",
        "--prompts-per-iteration", "2", "--group-size", "2", "--minibatch", "4", "--new", "4",
        "--iterations", "2", "--train-prompts", "8", "--eval-prompts", "4", "--out", str(out),
    )  # fmt: skip
    assert "| rloo |" in stdout and "| ppo |" in stdout and "| sb3-ppo |" in stdout
    rows = {row["setup"]: row for row in json.loads(out.read_text())["rows"]}
    for setup in ("rloo", "ppo", "sb3-ppo"):
        assert len(rows[setup]["iterations"]) == 2
        assert rows[setup]["tokens_per_second"] > 0
        assert rows[setup]["eval_responses"] == 4
    assert abs(rows["initial"]["eval_kl"]) < 1e-4


def test_ddp_scaling_smoke(tmp_path):
    out = tmp_path / "ddp.json"
    stdout = _run(
        "ddp_scaling.py", "--model", "tiny", "--setups", "1x1", "2x1", "--num-envs", "2",
        "--new", "4", "--iterations", "2", "--out", str(out),
    )  # fmt: skip
    rows = {row["setup"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["2x1"]["processes"] == 2 and rows["1x1"]["processes"] == 1
    responses = {setup: row["global_responses_per_update"] for setup, row in rows.items()}
    assert responses["2x1"] == 2 * responses["1x1"]
    assert all(row["iterations"] == 2 and row["tokens_per_second"] > 0 for row in rows.values())
    assert "| 2x1 | 2 x 1 |" in stdout


def test_engine_step_smoke(tmp_path):
    out = tmp_path / "engine_step.json"
    stdout = _run(
        "engine_step.py", "--models", "tiny-gpt2", "--batches", "2", "--cache", "12",
        "--prompt", "4", "--repeats", "1", "--engines", "dynamic", "static", "--out", str(out),
    )  # fmt: skip
    assert "stat/dyn" in stdout
    (result,) = json.loads(out.read_text())["results"]
    assert result["steps"] == 7 and result["static_vs_dynamic"] > 0
    assert result["dynamic_step_ms"] > 0 and result["static_prefill_ms"] > 0


def test_overoptimization_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "overoptimization.json"
    stdout = _run(
        "overoptimization.py", "--smoke", "--training-setup", "full", "--num-envs", "4",
        "--minibatch", "4", "--total-timesteps", "48", "--eval-every", "1", "--eval-prompts", "4",
        "--out", str(out),
    )  # fmt: skip
    assert "| judge | judge_fluent | vader | perplexity |" in stdout
    points = json.loads(out.read_text())["points"]
    assert len(points) >= 3 and points[0]["timesteps"] == 0
    for point in points:
        assert 0 <= point["gold/judge_fluent"] <= point["gold/judge"] + 1e-9
    assert out.with_suffix(".png").is_file()
