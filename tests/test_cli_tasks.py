"""``rlhf-env tasks`` and ``rlhf-env eval --task``, on a tiny task registered by the test."""

from __future__ import annotations

import json

import pytest
from gymnasium.envs.registration import registry
from helpers import make_tiny_task, run_cli

from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.tasks import TASKS, Task, TaskContext, TaskSpec, register_task

NAME = "CliTinyTest"

#: Every figure ``eval`` prints for a task with two gold metrics.
FIGURES = (
    "learned_score", "kl", "response_length", "responses", "gold_score", "gold/word_start",
    "gold/length", "perplexity", "distinct_1", "distinct_2", "repetition",
)  # fmt: skip


def build_tiny_task(context: TaskContext, eval_prompts: int = 4, difficulty: int = 1) -> Task:
    """Length as the training reward, word starts as the gold score."""
    tokenizer = context.tokenizer
    return make_tiny_task(NAME, tokenizer, eval_prompts, "word_start", difficulty=difficulty)


def _save_tiny_policy(folder, seed: int):
    tokenizer = build_tiny_tokenizer()
    build_tiny_gpt2(tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """The tiny task, registered for this module only; its default policy a saved tiny GPT-2."""
    default_policy = _save_tiny_policy(tmp_path_factory.mktemp("default_policy"), seed=0)
    spec = register_task(
        TaskSpec(
            name=NAME,
            description="a tiny test task: long responses, gold = word starts",
            build=build_tiny_task,
            policy=str(default_policy),
            smoke_options={"eval_prompts": 3, "max_new_tokens": 3},
        )
    )
    yield spec
    TASKS.pop(NAME, None)
    registry.pop(spec.env_id, None)


def test_tasks_lists_each_task_with_its_options(tiny_task):
    status, out, err = run_cli("tasks")
    assert status == 0, err
    line = next(line for line in out.splitlines() if line.startswith(tiny_task.env_id))
    assert "a tiny test task" in line
    assert "options: eval_prompts=4, difficulty=1" in out and f"policy {tiny_task.policy}" in out
    # the recipes: Arithmetic's for ppo, rloo and grpo, each setting named
    recipes = [line.strip() for line in out.splitlines() if "recipe for" in line]
    for start in (
        "recipe for ppo: learning_rate=1e-05, epochs=1",
        "recipe for rloo: group_size=8, learning_rate=1e-05, epochs=1",
        "recipe for grpo: group_size=8",
    ):
        assert any(line.startswith(start) for line in recipes), start
    # the suite budgets, one per task that declares one
    budgets = [line.strip() for line in out.splitlines() if "suite budget:" in line]
    assert "suite budget: 4,096 tokens on frozen:24, max_prompt_tokens=128, max_new_tokens=24" in (
        budgets
    )
    assert "suite budget: 6,144 tokens on full, 2 answers per held-out prompt" in budgets
    assert len(budgets) == sum(spec.budget is not None for spec in TASKS.values())


def test_eval_task_smoke_prints_every_figure_and_writes_json(tiny_task, tmp_path):
    out_file = tmp_path / "eval.json"
    status, out, err = run_cli(
        "eval", "--task", NAME, "--smoke", "--num-envs", "2", "--out", str(out_file)
    )
    assert status == 0, err
    printed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(FIGURES) <= printed
    record = json.loads(out_file.read_text())
    assert record["task"] == tiny_task.env_id and record["smoke"] is True
    assert record["summary"]["responses"] == 3  # the smoke variant's held-out prompts
    assert [s["prompt"] for s in record["samples"]] == [f"Review {i}: the film" for i in range(3)]
    assert set(FIGURES) - {"responses"} <= set(record["sem"])
    assert record["summary"]["response_length"] <= 3  # the smoke variant's max_new_tokens


def test_eval_task_on_a_trained_policy_measures_kl_to_the_tasks_policy(tiny_task, tmp_path):
    trained = _save_tiny_policy(tmp_path / "trained", seed=7)  # other weights than the default
    out_file = tmp_path / "eval.json"
    status, out, err = run_cli(
        "eval", "--task", tiny_task.env_id, "--policy", str(trained), "--num-prompts", "2",
        "--max-new-tokens", "2", "--num-envs", "2", "--no-fluency", "--out", str(out_file),
    )  # fmt: skip
    assert status == 0, err
    summary = json.loads(out_file.read_text())["summary"]
    assert summary["responses"] == 2 and summary["response_length"] <= 2  # --max-new-tokens won
    assert summary["kl"] != 0.0  # against the task's default policy, not the policy itself
    assert "perplexity" not in summary and "perplexity" not in out

    status, out, err = run_cli("eval", "--task", NAME, "--agent", "random", "--num-prompts", "2")
    assert status == 0, err
    assert "gold_score" in out


def test_eval_task_rejects_what_the_task_brings_and_unknown_tasks(tiny_task):
    status, _, err = run_cli("eval", "--task", NAME, "--reward", "vader", "--gold", "vader")
    assert status == 1 and "--reward, --gold do(es) not apply with --task" in err
    status, _, err = run_cli("eval", "--task", "NoSuchTask")
    assert status == 1 and "unknown task 'NoSuchTask'" in err
    status, _, err = run_cli("eval", "--smoke")
    assert status == 1 and "--smoke applies to --task" in err
    status, out, _ = run_cli("tasks", "--help")
    assert status == 0 and "usage: rlhf-env tasks" in out
