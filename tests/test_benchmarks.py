"""Smoke runs of the benchmark scripts in a subprocess, on tiny settings.

Where a script's paths must compute the same thing (the env with and without KV caches, the
engines, a dialogue and its re-encoding, held and autoreset collection), the tests compare the
checksums the script writes per path (``benchmarks/checksums.py``): the same tokens, and sums
of their log-probs within :data:`LOGPROB_ATOL`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# make test-all: every benchmark script run in a subprocess on tiny settings
pytestmark = pytest.mark.long

ROOT = Path(__file__).resolve().parents[1]
#: Largest difference allowed between two paths' sums of log-probs (or KL, values) over a smoke
#: run, float32 on CPU. Measured (2026-12, 8 to 44 tokens per sum): at most 2.4e-6 between
#: different code paths (cached against re-encoded, dynamic against static engine), 0 between
#: runs of one engine; an off-by-one position, a wrong cache row or another row's token for
#: the reference (mutants tried on a scratch copy) moved a sum by 3e-2 or more.
LOGPROB_ATOL = 1e-4
#: The statistics every env path sums: the tokens' policy and reference log-probs and KL.
ENV_SUMS = ("logprob_sum", "ref_logprob_sum", "kl_sum")


def _run_process(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )


def _run(script: str, *args: str) -> str:
    result = _run_process(script, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_same_work(checksums: dict, paths: tuple[str, ...], sums: tuple[str, ...] = ENV_SUMS):
    """``paths`` chose the same tokens (a non-empty run) and their ``sums`` agree."""
    first, *others = paths
    assert checksums[first]["token_count"] > 0
    for path in others:
        assert checksums[path]["token_count"] == checksums[first]["token_count"], path
        assert checksums[path]["tokens"] == checksums[first]["tokens"], (
            f"{path} chose other tokens than {first}: {checksums[path]} vs {checksums[first]}"
        )
        for key in sums:
            difference = abs(checksums[path][key] - checksums[first][key])
            assert difference <= LOGPROB_ATOL, (
                f"{key} of {path} is {checksums[path][key]!r}, of {first} "
                f"{checksums[first][key]!r}: {difference:.2e} apart (allowed {LOGPROB_ATOL})"
            )


def test_rollout_throughput_paths_compute_the_same(tmp_path):
    """Every env row, the fused loop, the no-cache env and the SB3 path sample the same tokens
    (seeded Gumbel-max draws) and compute the same log-probs, KL included; the two ``generate``
    rows (their own sampler, no log-probs) the same tokens. 3 rows: the static engine's batch
    of 4 has a padding row; the prompts are ragged (left padding)."""
    out = tmp_path / "throughput.json"
    stdout = _run(
        "rollout_throughput.py", "--models", "tiny-gpt2", "--tokenizer", "tiny",
        "--prompts", "builtin", "--batches", "3", "--new", "4", "--repeats", "1",
        "--out", str(out),
    )  # fmt: skip
    assert "(a2) comp" in stdout and "(d2) gen-c" in stdout
    (result,) = json.loads(out.read_text())["results"]
    checksums = result["checksums"]
    cached_and_not = (
        "env_dynamic", "env_static", "env_compiled", "fused_loop", "naive_env", "sb3_path",
    )  # fmt: skip
    assert checksums["env_dynamic"]["token_count"] == 3 * 4
    assert_same_work(checksums, cached_and_not)
    assert_same_work(checksums, ("generate", "generate_compiled"), sums=())
    assert checksums["generate"]["token_count"] == 3 * 4
    for ratio in ("a1/a", "a2/a", "a2/b", "a/c", "a2/d2", "e/a"):
        assert ratio in result


def test_episode_collection_smoke(tmp_path):
    out = tmp_path / "collection.json"
    stdout = _run(
        "episode_collection.py", "--model", "tiny-gpt2", "--batch", "4", "--lengths", "2", "6",
        "--repeats", "2", "--out", str(out),
    )  # fmt: skip
    assert "held is" in stdout
    result = json.loads(out.read_text())
    assert result["tokens_per_collection"] == 2 + 3 + 5 + 6  # lengths spread over 2..6
    # Every sub-env's first episode: the same tokens and log-probs, held or autoreset.
    checksums = result["checksums"]
    assert checksums["held"]["token_count"] == 2 * result["tokens_per_collection"]  # 2 repeats
    assert_same_work(checksums, ("held", "autoreset"))


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
    # The whole assistant turns (at least two per conversation): the same tokens and log-probs
    # appended to the KV caches turn by turn as on the re-encoded conversations.
    checksums = result["checksums"]
    assert result["compared_turns"] >= 2 * 4
    assert checksums["dialogue"]["token_count"] == result["compared_turns"] * 4
    assert_same_work(checksums, ("dialogue", "re-encode", "re-encode (no cache)"))


def test_game_rollout_smoke(tmp_path):
    out = tmp_path / "game.json"
    stdout = _run(
        "game_rollout.py", "--model", "tiny-gpt2", "--batch", "3", "--turns", "3",
        "--turn-tokens", "4", "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert "speedup" in stdout
    result = json.loads(out.read_text())
    # Every game played its 3 turns of 4 agent tokens, in both variants, on the same contexts.
    assert result["tokens"] == dict.fromkeys(("token-level", "turn-level", "turn-level+"), 36)
    assert_same_work(result["checksums"], ("token-level", "turn-level", "turn-level+"))


@pytest.mark.parametrize(
    ("env", "num_envs", "steps", "min_episodes"),
    [("vector", 8, 1500, 400), ("single", 1, 3000, 90)],
)
def test_env_memory_soak(tmp_path, env, num_envs, steps, min_episodes):
    """Resident memory grows by at most the script's default 5% after a 500-step warm-up, over
    hundreds of resets (8 sub-envs ending at different times, or the single env reset by
    hand). Measured (2026-12, one thread): +0.0% to +0.2% at these settings, +0.5% at most up
    to 4,000 steps; an engine that kept a KV cache's worth of tensors (0.75 MiB) per started
    episode grew by 41% (vector) and 15% (single; 7% at 1,500 steps) at these settings."""
    out = tmp_path / "memory.json"
    result = _run_process(
        "vector_env_memory.py", "--env", env, "--steps", str(steps), "--warmup", "500",
        "--num-envs", str(num_envs), "--out", str(out),
    )  # fmt: skip
    soak = json.loads(out.read_text())
    assert soak["env"] == env and soak["limit_percent"] == 5.0  # the script's default limit
    assert soak["episodes"] >= min_episodes
    growth = (soak["rss_final_mib"] - soak["rss_after_warmup_mib"]) / soak["rss_after_warmup_mib"]
    assert growth <= 0.05, f"RSS grew {100 * growth:.1f}% after warm-up: {soak['samples']}"
    assert result.returncode == 0 and soak["passed"], result.stdout + result.stderr[-3000:]


def test_shared_compute_compares_like_with_like(tmp_path, monkeypatch):
    """Everything shared, the trunk alone and nothing, on the tiny Arithmetic variant: the same
    tokens and statistics in their first rollouts, one block shared by the first two, the
    prefix cache used by the first, a speed-up per phase and setting."""
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "shared.json"
    _run("shared_compute.py", "--model", "tiny", "--num-envs", "8", "--group-size", "4",
         "--minibatch-size", "8", "--iterations", "2", "--settings", "on", "trunk", "off",
         "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["shared_blocks"] == {"on": 1, "trunk": 1, "off": 0}
    assert_same_work(result["checksums"], ("on", "trunk", "off"), sums=("logprob_sum", "kl_sum"))
    assert result["prefix_cache"]["trunk"] is None and result["prefix_cache"]["off"] is None
    cache = result["prefix_cache"]["on"]  # the tiny task's prompts share a prefix; a group's
    assert cache["misses"] >= 4 and cache["copies"] >= 4  # copies of a prompt start once
    assert len(result["iterations"]) == 2
    speedups = result["median_speedups_after_warm_up"]
    assert len(speedups) == 6 and all(value > 0 for value in speedups.values())


def test_divergence_finds_each_episodes_first_different_draw(monkeypatch):
    """Two rollouts of the same prompts: where each episode's tokens first differ, the gap of
    the log-probs before it (not after), the two drawn tokens' log-probs; other prompts raise."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from checksums import divergence

    prompts = np.array([[1, 2], [1, 2], [3, 4]])
    first = SimpleNamespace(
        prompt_ids=prompts,
        continuation_ids=np.array([[5, 6, 7], [5, 6, 0], [8, 9, 9]]),
        action_mask=np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]]),
        logprobs=np.array([[-1.0, -2.0, -3.0], [-1.0, -2.0, 0.0], [-0.5, -0.5, -9.0]]),
    )
    second = SimpleNamespace(
        prompt_ids=prompts,
        continuation_ids=np.array([[5, 6, 7], [5, 6, 4], [8, 7, 9]]),
        action_mask=np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
        logprobs=np.array([[-1.0, -2.0, -3.0], [-1.0, -2.00003, -7.0], [-0.50001, -12.0, 0.0]]),
    )
    found = divergence(first, second)
    assert found["episodes"] == 3 and found["same_episodes"] == 1
    assert found["diverged"] == [
        {"episode": 1, "at": 2, "logprobs": [None, -7.0]},  # the first response ended there
        {"episode": 2, "at": 1, "logprobs": [-0.5, -12.0]},
    ]
    assert found["max_logprob_gap_before"] == pytest.approx(3e-5)  # after: -9 vs 0, not counted
    with pytest.raises(ValueError, match="different prompts"):
        divergence(first, SimpleNamespace(**{**vars(second), "prompt_ids": prompts[::-1]}))


def test_sampling_times_every_method_against_the_agents(tmp_path):
    out = tmp_path / "sampling.json"
    _run("sampling.py", "--rows", "2", "4", "--vocab", "1000", "--repeats", "2", "--out", str(out))
    cases = json.loads(out.read_text())["cases"]
    assert [(case["rows"], case["vocab"]) for case in cases] == [(2, 1000), (4, 1000)]
    for case in cases:
        assert set(case["ms"]) == {"inverse_cdf", "multinomial", "race"}
        assert all(value > 0 for value in case["ms"].values())
        assert case["vs_inverse_cdf"]["inverse_cdf"] == 1.0


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


def test_ppo_stability_traces_every_iteration_of_each_setting(tmp_path):
    out = tmp_path / "stability.json"
    stdout = _run(
        "ppo_stability.py", "--seeds", "0", "--timesteps", "64", "--setting", "vf_coef=0.1",
        "--setting", "critic=shared,clip_range_value=none", "--out", str(out),
    )  # fmt: skip
    table = json.loads(out.read_text())
    assert table["settings"] == ["vf_coef=0.1", "critic=shared,clip_range_value=None"]
    for run in table["runs"]:
        assert len(run["trace"]) >= 1 and "rollout/kl" in run["trace"][0]
        assert "train/explained_variance" in run["trace"][0]
        assert isinstance(run["collapsed"], bool) and isinstance(run["value_learns"], bool)
    assert stdout.count("of 1 collapsed") == 2
    again = _run("ppo_stability.py", "--summarise", str(out), "--plot", str(tmp_path / "p.png"))
    assert again.count("of 1 collapsed") == 2 and (tmp_path / "p.png").stat().st_size > 0


def test_ppo_critic_cost_times_both_critics_on_one_rollout(tmp_path):
    out = tmp_path / "critic.json"
    stdout = _run(
        "ppo_critic_cost.py", "--model", "tiny", "--training-setup", "frozen:1", "--repeats",
        "2", "--out", str(out),
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert all(len(result["update_seconds"][critic]) == 2 for critic in ("shared", "separate"))
    assert result["separate_over_shared"] > 0 and "separate" in stdout
    # the value head alone, against the critic's own blocks (the frozen bottom shared)
    memory = result["added_parameter_mib"]
    assert 0 < memory["shared"] < memory["separate"]


def test_sb3_rollout_smoke(tmp_path):
    out = tmp_path / "sb3.json"
    stdout = _run(
        "sb3_rollout.py", "--models", "tiny-gpt2", "--tokenizer", "tiny", "--batch", "2",
        "--new", "4", "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert "ratio" in stdout
    (result,) = json.loads(out.read_text())["results"]
    # With and without the policy's KV cache: the same actions, log-probs, values and rewards.
    checksums = result["checksums"]
    assert checksums["cache"]["token_count"] == 2 * 4
    assert checksums["cache"]["value_sum"] != 0  # the value head is not the zero it starts as
    assert_same_work(checksums, ("cache", "no_cache"), ("logprob_sum", "value_sum", "reward_sum"))


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


@pytest.mark.parametrize(
    ("setup", "kl_coef", "trains"),
    [
        ("frozen:1", "0.01", "frozen:1, lr 0.0001, beta 0.01"),
        ("full", "0", "full, lr 0.0001, beta 0"),  # no reference model: KL 0 throughout
    ],
)
def test_vs_trl_arithmetic_time_to_result_smoke_of_ours(tmp_path, setup, kl_coef, trains):
    """--task arithmetic: our RLOO on the tiny policy, evaluated at every mark asked (the
    clock's last one at --minutes), by exact match on the task's held-out problems."""
    out = tmp_path / "vs_trl_arithmetic.json"
    stdout = _run(
        "vs_trl.py", "--task", "arithmetic", "--model", "tiny", "--setups", "rloo",
        "--new", "4", "--minutes", "0.05", "--eval-at", "0", "0.02", "0.05", "1",
        "--eval-prompts", "8", "--eval-samples", "2", "--training-setup", setup,
        "--kl-coef", kl_coef, "--out", str(out),
    )  # fmt: skip
    assert f"| rloo | {trains} |" in stdout and "| 0.02 min |" in stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["setup"] == "rloo" and row["task"] == "arithmetic"
    curve = row["curve"]
    assert [point["mark"] for point in curve] == [0, 0.02, 0.05]  # 1 is past --minutes
    assert curve[0]["minutes"] == 0 and curve[0]["tokens"] == 0
    for point in curve:
        assert 0 <= point["exact_match"] <= 1 and point["stderr"] >= 0
        assert point["minutes"] >= point["mark"]
        assert point["responses_negative"] + point["responses_non_negative"] == 8 * 2
    assert [point["minutes"] for point in curve] == sorted(point["minutes"] for point in curve)
    assert curve[-1]["tokens"] > curve[0]["tokens"]
    assert row["training_minutes"] >= 0.05 and len(row["iterations"]) >= 1
    assert row["final_exact_match"] == curve[-1]["exact_match"]
    assert out.with_suffix(".png").exists()
    if kl_coef == "0":  # the policy is its own reference, through updates that move it
        kls = [iteration["kl"] for iteration in row["iterations"]]
        assert len(kls) >= 2 and kls == [0.0] * len(kls)


def test_vs_trl_summarises_time_to_result_over_seeds(tmp_path):
    """--summarise-seeds: per seed, ours within a third of TRL's minutes against TRL's final;
    per setup, the paired mean difference and a verdict (on a recorded run and a copy of it
    with TRL's final lowered by 0.1: the difference moves by exactly that)."""
    recorded = ROOT / "benchmarks" / "results" / "vs_trl_arithmetic_smollm2-135m-instruct.json"
    document = json.loads(recorded.read_text())
    document["arguments"]["seed"] = 1
    trl = next(row for row in document["rows"] if row["setup"] == "trl-grpo")
    trl["final_exact_match"] -= 0.1
    copy = tmp_path / "seed1.json"
    copy.write_text(json.dumps(document))
    stdout = _run("vs_trl.py", "--summarise-seeds", str(recorded), str(copy))
    lines = [line for line in stdout.splitlines() if line.startswith("| 0 | rloo, full")]
    assert lines and "| 0.828 (21.9) | 0.766 (6.0) | -0.062 | not reached |" in lines[0]
    assert (
        "| 1 | rloo, full, lr 1e-05, beta 0 | 0.728 (21.9) | 0.766 (6.0) | +0.037 | 4.1 |" in stdout
    )
    assert "rloo, full, lr 1e-05, beta 0: 2 seeds, TRL's final 0.778" in stdout
    assert "difference -0.013 [" in stdout and "within noise" in stdout


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


def test_engine_step_engines_compute_the_same(tmp_path):
    """The dynamic and static engines step the same tokens, with a 2-token turn appended to
    every other row halfway (a ragged append), to the same KL and log-probs."""
    out = tmp_path / "engine_step.json"
    stdout = _run(
        "engine_step.py", "--models", "tiny-gpt2", "--batches", "3", "--cache", "12",
        "--prompt", "4", "--turn", "2", "--repeats", "1", "--engines", "dynamic", "static",
        "--out", str(out),
    )  # fmt: skip
    assert "stat/dyn" in stdout
    (result,) = json.loads(out.read_text())["results"]
    assert result["steps"] == 12 - 4 - 1 - 2
    assert result["checksums"]["dynamic"]["token_count"] == 3 * result["steps"]
    assert_same_work(result["checksums"], ("dynamic", "static"))


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


def test_overoptimization_smoke_on_harmless(tmp_path, monkeypatch):
    """The curve on Harmless: its gold is the probe, apart from the learned (training) reward."""
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "overoptimization.json"
    stdout = _run(
        "overoptimization.py", "--smoke", "--task", "Harmless", "--training-setup", "full",
        "--num-envs", "4", "--minibatch", "4", "--total-timesteps", "24", "--eval-every", "1",
        "--eval-prompts", "4", "--option", "max_new_tokens=4", "--out", str(out),
    )  # fmt: skip
    assert "| learned | gold_model | perplexity |" in stdout
    result = json.loads(out.read_text())
    assert result["task"]["gold_model"]["eval_pairs"] > 0
    for point in result["points"]:
        assert point["gold/gold_model"] != pytest.approx(point["learned_score"])
        assert point["samples"] and {"prompt", "response"} <= set(point["samples"][0])


@pytest.mark.parametrize(
    "setup, shared_layers, share",
    [("frozen:1", 1, True), ("frozen:1", 1, False), ("full", 0, True)],
)
def test_time_breakdown_files_every_block_under_its_part(
    tmp_path, monkeypatch, setup, shared_layers, share
):
    """The tiny Arithmetic variant (2 blocks): under ``frozen:1`` the bottom block is the one
    policy and reference share; the rollout runs it once per prefill and step with the shared
    trunk, once per model (twice as often as each model's own block) without; the update not
    at all with it (it starts from the output the env kept), once without (one epoch; prefix
    cache off: one prefill a start); the blocks' seconds fit in each phase."""
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "breakdown.json"
    stdout = _run(
        "time_breakdown.py", "--model", "tiny", "--training-setup", setup, "--num-envs", "8",
        "--group-size", "4", "--minibatch-size", "8", "--iterations", "1", "--out", str(out),
        "--share-trunk" if share else "--no-share-trunk", "--no-prefix-cache",
    )  # fmt: skip
    assert "rollout:" in stdout and "update:" in stdout
    result = json.loads(out.read_text())
    assert result["layers"] == {"shared": shared_layers, "policy_own": 2 - shared_layers,
                                "reference_own": 2 - shared_layers}  # fmt: skip
    (iteration,) = result["iterations"]
    rollout, update = iteration["rollout"], iteration["update"]
    width = iteration["shape"]["rows"][1]  # max_new_tokens
    steps = rollout["calls_per_layer"]["step/policy_own"]
    assert 1 <= steps <= width  # one call per token step (rows that ended hold)
    assert rollout["calls_per_layer"]["step/reference_own"] == steps
    if shared_layers:
        runs = 1 if share else 2
        assert rollout["calls_per_layer"]["step/shared"] == runs * steps
        assert rollout["calls_per_layer"]["prefill/shared"] == runs
        # Shared: the update starts from the trunk output the env kept (no frozen block runs).
        frozen = {} if share else {"forward/shared": 1}
        assert update["calls_per_layer"] == {**frozen, "forward/policy_own": 1}
    else:
        assert not any(key.endswith("/shared") for key in rollout["calls_per_layer"])
    for phase in (rollout, update):
        assert all(seconds > 0 for seconds in phase["blocks"].values())
        assert 0 <= phase["rest"] < phase["seconds"]


def test_held_out_strata_splits_the_gold_by_the_problems_answers(monkeypatch, tmp_path):
    """The strata script rebuilds the runs' held-out chain sums from their options: the
    reference answering only the negative ones and an agent only the others show up as such
    in each stratum, and the script prints both tables."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from held_out_strata import held_out_problems, strata_rows, stratum

    from rlhf_pipeline.suite import RunResult, SuiteResult

    options = {"dataset_options": {"min_terms": 2, "max_terms": 3, "max_digits": 1},
               "eval_problems": 16}  # fmt: skip
    run = RunResult("ReasoningGym", "x", 0, 1, 1, [], {}, options=options, eval_samples=2)
    problems = held_out_problems(run)
    negative = np.array([int(p["answer"]) < 0 for p in problems])
    assert 0 < negative.sum() < 16 and len({p["question"] for p in problems}) == 16

    def make(agent: str, seed: int, right: np.ndarray) -> RunResult:
        gold = np.tile(right.astype(float), 2).tolist()  # both answers to each problem alike
        return RunResult("ReasoningGym", agent, seed, 1, 1, [], {}, per_response={"gold": gold},
                         options=options, eval_samples=2)  # fmt: skip

    runs = [make(agent, seed, right) for agent, right in (("reference", negative),
            ("rloo", ~negative)) for seed in (0, 1)]  # fmt: skip
    result = SuiteResult({}, {}, runs)
    rows = {(row["stratum"], row["agent"]): row for row in strata_rows(result, "sign")}
    assert rows["negative", "rloo"]["gold"].mean == 0.0
    assert rows["negative", "rloo"]["versus_reference"].mean == -1.0
    assert rows["non-negative", "rloo"]["versus_reference"].mean == 1.0
    assert rows["negative", "reference"]["prompts"] == negative.sum()
    assert {row["stratum"] for row in strata_rows(result, "num_terms")} <= {"2", "3"}
    assert stratum({"answer": "x"}, "sign") == "not an integer"
    # Arithmetic, one configuration of ReasoningGym: its balanced held-out sums, half negative
    arithmetic_run = RunResult("Arithmetic", "x", 0, 1, 1, [], {}, options={"eval_size": 16})
    balanced = held_out_problems(arithmetic_run)
    assert len(balanced) == 16 and sum(int(p["answer"]) < 0 for p in balanced) == 8
    with pytest.raises(KeyError, match="use sign or one of"):
        stratum(problems[0], "colour")
    path = tmp_path / "suite.json"
    result.write(path)
    printed = _run("held_out_strata.py", str(path), "--by", "sign", "num_terms")
    assert "| negative |" in printed and "| num_terms |" in printed
