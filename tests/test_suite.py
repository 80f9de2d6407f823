"""The benchmark suite (rlhf_pipeline.suite, benchmarks/suite.py) on a tiny task registered here:
runs with curves and final metrics, intervals over seeds, one's own agents, resuming, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_task, run_cli

from rlhf_agents import Agent
from rlhf_env.tasks import TASKS, Task, TaskContext, TaskSpec, register_task
from rlhf_pipeline.leaderboard import (
    Interval,
    format_leaderboard,
    leaderboard,
    leaderboard_table,
    plot_curves,
    sample_table,
    t_interval,
    t_quantile,
)
from rlhf_pipeline.suite import RunResult, SuiteConfig, SuiteResult, run_suite

ROOT = Path(__file__).resolve().parents[1]
TASK = "SuiteToy"
#: The smallest suite with a curve: two updates of 2 responses x 2 tokens, a point between.
TINY = {
    "smoke": True, "timesteps": 8, "num_envs": 2, "minibatch_size": 2, "curve_prompts": 2,
    "eval_prompts": 4, "eval_points": (0.0, 0.5, 1.0), "options": {"max_new_tokens": 2},
}  # fmt: skip


def build_toy_task(context: TaskContext, held_out: int = 4) -> Task:
    """Response length as the reward (dense: every update has a gradient); the share of
    word-start tokens as the gold score, the length a second gold column."""
    return make_tiny_task(TASK, context.tokenizer, held_out)


if TASK not in TASKS:  # registered on import: also in the subprocess that imports this module
    register_task(TaskSpec(name=TASK, description="a tiny test task", build=build_toy_task))


class GreedyAgent(Agent):
    """One's own agent, as ``test_suite:GreedyAgent``: the policy's argmax token; ``learn``
    only counts the budgets it is given. It asks for an env that resets in the same step."""

    env_options = {"autoreset_mode": "SameStep"}
    #: (label, the env's autoreset mode) of every instance
    made: list[tuple[str, str]] = []

    def __init__(self, env, seed: int = 0, label: str = "") -> None:
        super().__init__(env)
        self.seed = seed
        GreedyAgent.made.append((label, env.autoreset_mode.value))

    def predict(self, observation, deterministic=False):
        raise NotImplementedError

    def act(self, env, observation):
        return env.policy_logits.argmax(dim=-1).cpu().numpy()

    def learn(self, total_timesteps):
        self.num_timesteps = max(self.num_timesteps, total_timesteps)
        return self

    def save(self, path):
        raise NotImplementedError

    @classmethod
    def load(cls, path, env):
        raise NotImplementedError


# -- the interval and the leaderboard, on known numbers ---------------------------------------


def test_t_quantile_matches_the_tables():
    # scipy.stats.t.ppf(0.975, dof) and t.ppf(0.995, 4)
    assert t_quantile(0.95, 1) == pytest.approx(12.706204736174705, rel=1e-9)
    assert t_quantile(0.95, 2) == pytest.approx(4.302652729911275, rel=1e-9)
    assert t_quantile(0.95, 9) == pytest.approx(2.2621571627409915, rel=1e-9)
    assert t_quantile(0.95, 30) == pytest.approx(2.0422724563012373, rel=1e-9)
    assert t_quantile(0.99, 4) == pytest.approx(4.604094871415897, rel=1e-9)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


def test_t_interval_of_known_numbers():
    interval = t_interval([1.0, 2.0, 3.0])  # s = 1, n = 3
    half = 4.302652729911275 / math.sqrt(3)
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(2 - half) and interval.high == pytest.approx(2 + half)
    assert interval.half_width == pytest.approx(2.4841377118)
    two = t_interval([0.5, 1.5])  # s = sqrt(0.5), t = 12.706
    assert two.half_width == pytest.approx(12.706204736 * math.sqrt(0.5) / math.sqrt(2))
    assert t_interval([4.0, 4.0, 4.0]).half_width == 0.0
    # one value: its mean and no interval; NaN (a metric a run lacks) is left out
    assert t_interval([7.0]) == Interval(7.0, 1)
    assert t_interval([7.0, math.nan, None]) == Interval(7.0, 1)
    assert t_interval([]).n == 0


def _run(agent: str, seed: int, gold: float, tokens: int = 32, **final: float) -> RunResult:
    metrics = {"gold": gold, "kl": 0.1 * seed, **final}
    trained = agent != "reference"
    curve = [{"fraction": 0.0, "tokens": 0, "metrics": {"gold": 0.0}}] if trained else []
    curve.append({"fraction": float(trained), "tokens": tokens, "metrics": metrics})
    return RunResult(
        task="T", agent=agent, seed=seed, budget=32, tokens=tokens if trained else 0,
        curve=curve, final=metrics, gold_name="g", trained=trained, seconds=1.0,
    )  # fmt: skip


def test_leaderboard_ranks_by_gold_with_intervals_over_seeds(tmp_path):
    runs = [_run("low", s, g) for s, g in enumerate([1.0, 2.0, 3.0])]
    runs += [_run("high", s, g) for s, g in enumerate([4.0, 5.0, 6.0])]
    runs += [_run("reference", 0, 2.5, perplexity=123.456)]
    result = SuiteResult({"timesteps": 32}, {"processor": "x86_64"}, runs)
    rows = leaderboard(result, "T")
    assert [row.agent for row in rows] == ["high", "reference", "low"]
    low = rows[2].metrics["gold"]
    assert low.mean == 2.0 and low.high == pytest.approx(2 + 4.302652729911275 / math.sqrt(3))
    assert rows[1].seeds == 1 and rows[1].metrics["gold"] == Interval(2.5, 1)
    text = leaderboard_table(result, "T")
    lines = text.splitlines()
    assert "ranked by gold (g)" in lines[0]
    assert lines[1].split()[:5] == ["rank", "agent", "seeds", "tokens", "gold"]
    assert "5.000 ± 2.484" in lines[2] and "n=3" in lines[2]
    # one seed: the mean and n=1, no interval; perplexity only in that run: "-" elsewhere
    assert "2.500" in lines[3] and "n=1" in lines[3] and "123.5" in lines[3]
    assert "±" not in lines[3] and " - " in lines[2]
    markdown = format_leaderboard(result, markdown=True)
    assert markdown.startswith("Settings: timesteps=32.")
    assert "| rank | agent | seeds | tokens | gold |" in markdown
    assert "| 1 | high | n=3 | 32 | 5.000 ± 2.484 |" in markdown
    assert "Samples" not in markdown  # these runs kept none
    runs[0].samples = [{"prompt": "Q: 1 + 1 =", "response": "2 | `two`\nok"}]
    runs[3].samples = [{"prompt": "Q: 1 + 1 =", "response": "3"}]
    samples = sample_table(SuiteResult({}, {}, runs), "T")
    assert "the prompts end 1: `Q: 1 + 1 =`" in samples.splitlines()[0]
    assert "| low | `2 \\| 'two' ok` |" in samples and "| high | `3` |" in samples
    assert "| reference |" not in samples  # no samples kept: no row
    assert samples in format_leaderboard(SuiteResult({}, {}, runs), markdown=True)
    (figure,) = plot_curves(result, tmp_path / "curves.png")
    assert figure.stat().st_size > 0
    assert [p.name for p in plot_curves(result, tmp_path / "folder")] == ["T.png"]


# -- whole suites on the tiny task --------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """ppo and reference x 2 seeds, written to a JSON file."""
    out = tmp_path_factory.mktemp("suite") / "suite.json"
    lines: list[str] = []
    result = run_suite(
        tasks=[TASK], agents=["ppo", "reference"], seeds=[0, 1], out=out, log=lines.append,
        **TINY,
    )  # fmt: skip
    return result, out, lines


def test_runs_have_curves_and_final_metrics(suite):
    result, _, lines = suite
    assert [(r.agent, r.seed) for r in result.runs] == [
        ("ppo", 0), ("reference", 0), ("ppo", 1), ("reference", 1),
    ]  # fmt: skip
    assert len(lines) == 4 and lines[0].startswith(f"[1/4] {TASK} ppo seed 0: gold ")
    for run in result.runs:
        assert run.final["gold"] == pytest.approx(np.mean(run.per_response["gold"]))
        assert {"gold", "gold/length", "kl", "learned"} <= set(run.final)
        assert run.final["episodes"] == 4  # every held-out prompt once
        assert run.seconds > run.train_seconds >= 0 and run.gold_name == "word_starts"
        if run.agent == "ppo":
            assert run.trained and run.tokens >= 8 and run.budget == 8
            assert [p["fraction"] for p in run.curve] == [0.0, 0.5, 1.0]
            tokens = [p["tokens"] for p in run.curve]
            assert tokens[0] == 0 < tokens[1] < tokens[2] == run.tokens
            assert run.curve[0]["metrics"]["episodes"] == 2  # curve_prompts
            assert abs(run.curve[0]["metrics"]["kl"]) < 1e-4  # untrained: the reference
            assert run.curve[-1]["metrics"]["episodes"] == 2  # the curve's prompts to the end
        else:
            assert not run.trained and run.tokens == 0 and len(run.curve) == 1
            assert run.curve[0]["fraction"] == 0.0 and run.curve[0]["metrics"]["episodes"] == 2
            assert abs(run.final["kl"]) < 1e-4


def test_leaderboard_of_the_suite_has_t_intervals_over_the_seeds(suite):
    result, _, _ = suite
    rows = {row.agent: row for row in leaderboard(result, TASK)}
    for agent, row in rows.items():
        golds = [run.final["gold"] for run in result.runs_of(TASK, agent)]
        assert row.seeds == 2
        expected = t_interval(golds)
        assert row.metrics["gold"].mean == pytest.approx(np.mean(golds))
        assert row.metrics["gold"].half_width == pytest.approx(expected.half_width)
        assert expected.half_width == pytest.approx(
            12.706204736 * np.std(golds, ddof=1) / math.sqrt(2)
        )
    assert f"{TASK}: ranked by gold (word_starts)" in format_leaderboard(result)


def test_json_is_written_and_a_second_call_resumes(suite):
    result, out, _ = suite
    document = json.loads(out.read_text())
    assert document["settings"]["timesteps"] == 8 and document["settings"]["smoke"] is True
    assert "tasks" not in document["settings"] and document["machine"]["torch"]
    assert len(document["runs"]) == 4
    run = document["runs"][0]
    assert {"task", "agent", "seed", "budget", "tokens", "curve", "final", "seconds"} <= set(run)
    assert SuiteResult.read(out).runs[0].final == pytest.approx(result.runs[0].final)
    # the same settings: every run is finished, none runs again
    lines: list[str] = []
    again = run_suite(
        tasks=[TASK], agents=["ppo", "reference"], seeds=[0, 1], out=out, log=lines.append,
        **TINY,
    )  # fmt: skip
    assert lines == [] and len(again.runs) == 4
    assert again.runs[2].final == pytest.approx(result.runs[2].final)
    # other settings: refused, naming what differs
    with pytest.raises(ValueError, match="differing: timesteps"):
        run_suite(
            tasks=[TASK], agents=["reference"], seeds=[0], out=out, **{**TINY, "timesteps": 4}
        )


class Scribbler(GreedyAgent):
    """Acts greedily and "learns" by writing into the env's policy in place, as every agent
    here trains it: a later run that started from these weights would show it."""

    env_options: dict = {}

    def learn(self, total_timesteps):
        with torch.no_grad():
            self.env.policy.get_input_embeddings().weight.add_(1.0)
        return super().learn(total_timesteps)


def test_own_agents_as_a_class_spec_and_a_factory(tmp_path):
    """``module:Class`` with its options and its env options, and a Python factory; every run
    starts from the same initial weights (nothing leaks from one run's training into the next)."""
    initial: list[torch.Tensor] = []
    policies: list[torch.nn.Module] = []

    def factory(env, seed):
        initial.append(env.policy.get_input_embeddings().weight.detach().clone())
        policies.append(env.policy)
        return Scribbler(env, seed=seed)

    result = run_suite(
        tasks=[TASK], seeds=[0, 1], out=tmp_path / "own.json",
        agents={"greedy": "test_suite:GreedyAgent", "mine": factory},
        agent_options={"greedy": {"label": "hello"}}, **TINY,
    )  # fmt: skip
    assert [(r.agent, r.seed) for r in result.runs] == [
        ("greedy", 0), ("mine", 0), ("greedy", 1), ("mine", 1),
    ]  # fmt: skip
    assert GreedyAgent.made[-4::2] == [("hello", "SameStep")] * 2  # its options, its env
    for run in result.runs:
        assert run.trained and run.tokens == 8 and "gold" in run.final
        # trained in learn(point) steps: the curve's 0.5 point at 4 tokens
        assert [p["tokens"] for p in run.curve] == [0, 4, 8]
    assert torch.equal(initial[0], initial[1])  # each run its own fresh policy ...
    trained = policies[0].get_input_embeddings().weight
    assert torch.allclose(trained, initial[0] + 2.0)  # ... though learn(4), learn(8) wrote
    assert json.loads((tmp_path / "own.json").read_text())["runs"][1]["agent"] == "mine"


def test_agent_class_options_and_errors():
    config = SuiteConfig.create(smoke=True, agents=("test_suite:GreedyAgent",))
    assert config.agents == ("test_suite:GreedyAgent",)
    with pytest.raises(ValueError, match="unknown agent 'nope'"):
        run_suite(tasks=[TASK], agents=["nope"], smoke=True)
    with pytest.raises(ValueError, match="no class 'Missing'"):
        run_suite(tasks=[TASK], agents=["test_suite:Missing"], smoke=True)
    with pytest.raises(ValueError, match="unknown task"):
        run_suite(tasks=["NoSuchTask"], agents=["reference"], smoke=True)
    with pytest.raises(ValueError, match="name one twice"):
        SuiteConfig(agents=("ppo", "ppo"))
    with pytest.raises(ValueError, match="eval_points"):
        SuiteConfig(eval_points=(0.5, 2.0))


def test_a_task_gets_its_own_budget_and_options(tmp_path):
    """``task_timesteps`` and ``task_options`` reach one task's runs (every agent of it alike)
    and lie over the shared ``timesteps`` and ``options``; a name the suite does not run is
    refused; files of suites without them still resume."""
    settings = {**TINY, "agents": ("greedy=test_suite:GreedyAgent", "reference"), "seeds": (0,)}
    result = run_suite(
        tasks=[TASK], task_timesteps={TASK: 6}, task_options={TASK: {"max_new_tokens": 1}},
        out=tmp_path / "own.json", **settings,
    )  # fmt: skip
    greedy, _ = result.runs
    assert greedy.budget == 6 and greedy.tokens == 6  # not TINY's 8
    assert [p["tokens"] for p in greedy.curve] == [0, 3, 6]
    for run in result.runs:  # the task's option over the shared max_new_tokens=2
        assert run.final["response_length"] == 1.0
    assert result.settings["task_timesteps"] == {TASK: 6}
    with pytest.raises(ValueError, match=r"task_options or task_timesteps name \['Elsewhere'\]"):
        run_suite(tasks=[TASK], task_timesteps={"Elsewhere": 4}, **settings)
    with pytest.raises(ValueError, match="task_timesteps must all be >= 1"):
        SuiteConfig(task_timesteps={TASK: 0})
    plain = SuiteConfig.create(**settings).run_settings()
    assert "task_options" not in plain and "task_timesteps" not in plain


def test_eval_samples_repeat_every_held_out_prompt(tmp_path):
    """``eval_samples=3``: every evaluation answers each held-out prompt three times (the
    curve's too); the setting is recorded only when it is not 1, so older files resume."""
    settings = {**TINY, "agents": ("reference",), "seeds": (0,), "eval_points": (0.0, 1.0)}
    (run,) = run_suite(tasks=[TASK], eval_samples=3, out=tmp_path / "s.json", **settings).runs
    assert run.final["episodes"] == 3 * TINY["eval_prompts"]
    assert len(run.per_response["gold"]) == 3 * TINY["eval_prompts"]
    assert SuiteConfig.create(eval_samples=3, **settings).run_settings()["eval_samples"] == 3
    assert "eval_samples" not in SuiteConfig.create(**settings).run_settings()
    with pytest.raises(ValueError, match="eval_samples must be >= 1"):
        SuiteConfig(eval_samples=0)


def test_cli_bench_suite_smoke(tmp_path):
    out, markdown, figure = tmp_path / "s.json", tmp_path / "s.md", tmp_path / "s.png"
    status, stdout, stderr = run_cli(
        "bench", "suite", "--smoke", "--tasks", TASK, "--agents", "reference", "random",
        "--agent", "test_suite:GreedyAgent", "--seeds", "0", "--timesteps", "8",
        "--eval-points", "0", "1", "--agent-option", "GreedyAgent.label=x",
        "--option", "max_new_tokens=3", "--task-option", f"{TASK}.max_prompt_tokens=40",
        "--task-timesteps", f"{TASK}=6", "--out", str(out), "--markdown", str(markdown),
        "--plot", str(figure),
    )  # fmt: skip
    assert status == 0, stderr
    assert f"{TASK}: ranked by gold (word_starts)" in stdout
    for agent in ("reference", "random", "GreedyAgent"):
        assert f" {agent} " in stdout
    document = json.loads(out.read_text())
    assert document["settings"]["options"] == {"max_new_tokens": 3}
    assert document["settings"]["agent_options"] == {"GreedyAgent": {"label": "x"}}
    assert document["settings"]["task_options"] == {TASK: {"max_prompt_tokens": 40}}
    assert {run["budget"] for run in document["runs"]} == {6}
    assert {run["final"]["response_length"] for run in document["runs"]} <= {1.0, 2.0, 3.0}
    assert "| rank | agent |" in markdown.read_text() and figure.stat().st_size > 0
    for run in document["runs"]:
        assert 1 <= len(run["samples"]) <= 4
        assert set(run["samples"][0]) == {"prompt", "response"}
    assert "Samples (" in markdown.read_text()


@pytest.mark.long
def test_suite_script_in_a_subprocess_with_sb3_ppo(tmp_path):
    """As a user runs it: the script, a task registered by --import, stable-baselines3's PPO
    beside ours."""
    out = tmp_path / "suite.json"
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--smoke", "--import",
         "test_suite", "--tasks", TASK, "--agents", "sb3-ppo", "grpo", "reference",
         "--seeds", "0", "--timesteps", "16", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {run["agent"]: run for run in json.loads(out.read_text())["runs"]}
    assert runs["sb3-ppo"]["tokens"] >= 16 and runs["grpo"]["tokens"] >= 16
    assert [p["fraction"] for p in runs["sb3-ppo"]["curve"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert "| sb3-ppo " in result.stdout or " sb3-ppo " in result.stdout
