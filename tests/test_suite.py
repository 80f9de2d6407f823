"""The benchmark suite (rlhf_pipeline.suite, benchmarks/suite.py) on a tiny task registered here:
runs with curves and final metrics, the leaderboard's intervals and paired comparisons, one's
own agents, resuming, the CLI."""

from __future__ import annotations

import dataclasses
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
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.tasks import TASKS, SuiteBudget, Task, TaskContext, TaskSpec, register_task
from rlhf_pipeline.leaderboard import (
    format_leaderboard,
    leaderboard,
    leaderboard_table,
    plot_curves,
    run_scores,
    sample_table,
)
from rlhf_pipeline.statistics import difference, estimate, holm
from rlhf_pipeline.suite import DEFAULT_TIMESTEPS, RunResult, SuiteConfig, SuiteResult, run_suite
from rlhf_pipeline.suite import runner as suite_runner

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

#: The toy task with a recipe for rloo.
RECIPE_TASK = "SuiteToyRecipe"
RECIPE = {"group_size": 2, "learning_rate": 3e-3, "epochs": 1}


def build_toy_task_with_recipe(context: TaskContext, held_out: int = 4) -> Task:
    return make_tiny_task(RECIPE_TASK, context.tokenizer, held_out)


if RECIPE_TASK not in TASKS:
    spec = TaskSpec(RECIPE_TASK, "a tiny test task with a recipe", build_toy_task_with_recipe)
    register_task(dataclasses.replace(spec, recipes={"rloo": RECIPE}))


#: The toy task with a suite budget: its own tokens, training setup, response length and
#: answers per held-out prompt.
BUDGET_TASK = "SuiteToyBudget"
BUDGET = SuiteBudget(
    timesteps=6, training_setup="frozen:1", options={"max_new_tokens": 3}, eval_samples=2
)


def build_toy_task_with_budget(context: TaskContext, held_out: int = 4) -> Task:
    return make_tiny_task(BUDGET_TASK, context.tokenizer, held_out)


if BUDGET_TASK not in TASKS:
    spec = TaskSpec(BUDGET_TASK, "a tiny test task with a budget", build_toy_task_with_budget)
    register_task(dataclasses.replace(spec, budget=BUDGET))


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


# -- the leaderboard, on known numbers --------------------------------------------------------


def _run(agent: str, seed: int, golds: list[float], tokens: int = 32, **final: float) -> RunResult:
    """A run whose gold is ``golds`` per held-out response (and their mean)."""
    metrics = {"gold": float(np.mean(golds)), "kl": 0.1 * seed, **final}
    trained = agent != "reference"
    curve = [{"fraction": 0.0, "tokens": 0, "metrics": {"gold": 0.0}}] if trained else []
    curve.append({"fraction": float(trained), "tokens": tokens, "metrics": metrics})
    return RunResult(
        task="T", agent=agent, seed=seed, budget=32, tokens=tokens if trained else 0,
        curve=curve, final=metrics, per_response={"gold": list(golds)}, gold_name="g",
        trained=trained, seconds=1.0,
    )  # fmt: skip


#: 8 prompts answered twice each (eval_samples=2): a prompt's two answers are i and i + 8.
PROMPT_RATE = [0.0, 0.2, 0.4, 0.2, 0.0, 0.4, 0.2, 0.0]


def _answers(rng: np.random.Generator, gain: float) -> list[float]:
    rates = np.clip(np.array(PROMPT_RATE) + gain, 0, 1)
    return rng.binomial(1, np.tile(rates, 2)).astype(float).tolist()


def test_leaderboard_pools_seeds_and_prompts_and_compares_paired(tmp_path):
    rng = np.random.default_rng(0)
    runs = [_run("low", s, _answers(rng, 0.0)) for s in range(3)]
    runs += [_run("high", s, _answers(rng, 0.6)) for s in range(3)]
    runs += [_run("reference", 0, _answers(rng, 0.0), perplexity=123.456)]
    result = SuiteResult({"timesteps": 32, "eval_samples": 2}, {"processor": "x86_64"}, runs)
    rows = leaderboard(result, "T")
    assert rows[0].agent == "high"

    def scores(agent: str) -> np.ndarray:  # (seeds, 8 prompts): the mean of the two answers
        golds = [np.reshape(run.per_response["gold"], (2, 8)).mean(0) for run in runs
                 if run.agent == agent]  # fmt: skip
        return np.stack(golds)

    by_agent = {row.agent: row for row in rows}
    assert by_agent["high"].metrics["gold"] == estimate(scores("high"))
    assert by_agent["high"].seed_means == [run.final["gold"] for run in runs[3:6]]
    # the comparisons: (high, reference), (low, reference), (low, high): one Holm family
    tested = {
        ("high", "reference"): difference(scores("high"), scores("reference")),
        ("low", "reference"): difference(scores("low"), scores("reference")),
        ("low", "high"): difference(scores("low"), scores("high")),
    }
    corrected = dict(zip(tested, holm([d.p_value for d in tested.values()]), strict=True))
    high, low, reference = by_agent["high"], by_agent["low"], by_agent["reference"]
    assert high.versus_reference.difference == tested["high", "reference"]
    assert high.versus_reference.p_holm == corrected["high", "reference"]
    assert high.versus_best is None and reference.versus_reference is None
    assert low.versus_best.difference == tested["low", "high"]
    assert low.versus_best.p_holm == corrected["low", "high"]
    # the reference row's "vs best" is the same test as the best row's "vs reference", turned
    flipped = reference.versus_best.difference
    assert flipped.mean == pytest.approx(-tested["high", "reference"].mean)
    assert reference.versus_best.p_holm == corrected["high", "reference"]
    assert corrected["high", "reference"] < 0.05  # +0.6 on every prompt: found
    # one seed: no seed part, but the prompts still give an interval
    assert reference.seeds == 1 and not math.isnan(reference.metrics["gold"].low)

    text = leaderboard_table(result, "T")
    lines = text.splitlines()
    assert lines[0] == "T: ranked by gold (g)"
    assert lines[1].split()[:8] == [
        "rank", "agent", "seeds", "tokens", "gold", "vs", "reference", "vs"
    ]  # fmt: skip
    gold = high.metrics["gold"]
    assert f"{gold.mean:.3f} [{gold.low:.3f}, {gold.high:.3f}]" in lines[2]
    assert f"p={corrected['high', 'reference']:.3f}" in lines[2] or "p=<0.001" in lines[2]
    assert "Holm-corrected" in text and "Above the reference: high (p=" in text
    # perplexity only in the reference's run: one value, the mean alone; "-" elsewhere
    assert "123.5" in next(line for line in lines if line.startswith("3 "))
    markdown = format_leaderboard(result, markdown=True)
    assert markdown.startswith("Settings: timesteps=32, eval_samples=2.")
    assert "A task's recipe" not in markdown  # these settings predate recipes
    with_recipes = SuiteResult({**result.settings, "recipes": True}, result.machine, runs)
    assert "A task's recipe (`rlhf-env tasks`) sets" in format_leaderboard(with_recipes, True)
    header = "| rank | agent | seeds | tokens | gold | vs reference | vs best | per seed |"
    assert header in markdown
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
    # Runs that logged their iterations get a training-reward panel under the gold's.
    image = pytest.importorskip("matplotlib.image")
    height = image.imread(tmp_path / "folder" / "T.png").shape[0]
    for number, run in enumerate(runs):
        run.history = [
            {"timesteps": 8 * (i + 1), "rollout/score": 0.1 * i * number} for i in range(3)
        ]
    (panel,) = plot_curves(SuiteResult({}, {}, runs), tmp_path / "with_history")
    assert image.imread(panel).shape[0] == 2 * height


def test_leaderboard_names_the_models_behind_the_scores_with_their_accuracies():
    """A learned gold's worth is its accuracy: the runs' task details give it under the table
    (the last epoch's where a list per epoch is kept)."""
    rng = np.random.default_rng(2)
    runs = [_run(agent, 0, _answers(rng, 0.0)) for agent in ("a", "reference")]
    result = SuiteResult({"eval_samples": 2}, {}, runs)
    assert "Held-out accuracy" not in leaderboard_table(result, "T")  # none recorded
    runs[0].task_details = {
        "gold_model": {"eval_accuracy": 0.65, "eval_pairs": 180},
        "reward_model": {"eval_accuracy": [0.55, 0.567], "eval_pairs": 180},
        "judge": {"held_out_accuracy": 0.8, "held_out_texts": 400},
        "train_conversations": 1500,
    }
    note = (
        "Held-out accuracy of the task's models: gold_model 0.650 (180 held out), "
        "reward_model 0.567 (180 held out), judge 0.800 (400 held out)."
    )
    assert note in leaderboard_table(result, "T")
    back = SuiteResult.from_json(result.to_json())
    assert back.runs[0].task_details == runs[0].task_details


def test_leaderboard_says_when_the_best_is_tied_and_refuses_unpaired_runs():
    rng = np.random.default_rng(1)
    runs = [_run(agent, s, _answers(rng, 0.0)) for agent in ("a", "b") for s in range(2)]
    result = SuiteResult({"eval_samples": 2}, {}, runs)
    text = leaderboard_table(result, "T")
    assert "Best: " in text and "tied with" in text  # the same distribution: no winner
    assert "Above the reference" not in text  # no reference agent ran
    # a pooled figure (no per-response values): its mean and the seeds' range
    for seed, run in enumerate(runs[:2]):
        run.final["distinct_2"] = 0.5 + 0.1 * seed
    assert "0.550 (seeds 0.500 to 0.600)" in leaderboard_table(result, "T")
    # perplexity: the runs' corpus figures, not the mean of heavy-tailed per-response values
    for seed, run in enumerate(runs[:2]):
        run.final["perplexity"] = 10.0 + 2 * seed
        run.per_response["perplexity"] = [5.0] * 15 + [500.0]
    (row,) = [row for row in leaderboard(result, "T") if row.agent == "a"]
    assert row.metrics["perplexity"].mean == pytest.approx(11.0)
    runs[1].per_response["gold"] = runs[1].per_response["gold"][:8]
    with pytest.raises(ValueError, match="not the same prompts in every run"):
        leaderboard(result, "T")
    runs[1].per_response["gold"] = runs[1].per_response["gold"][:7]
    with pytest.raises(ValueError, match="not a whole number of 2 answers"):
        leaderboard(result, "T")


# -- whole suites on the tiny task --------------------------------------------------------------


def test_a_tasks_recipe_sets_its_agents_unless_overridden_or_off():
    """The recipe over the suite's shared settings, ``agent_options`` over the recipe,
    ``recipes=False`` the suite's settings and the agent's own defaults; each run records the
    config its agent ran with."""
    tokenizer = build_tiny_tokenizer()
    options = {**TINY["options"], "policy": build_tiny_gpt2(tokenizer), "tokenizer": tokenizer}
    settings = {**TINY, "smoke": False, "options": options, "num_envs": 4, "eval_points": (1.0,)}

    def rloo_config(**extra):
        config = {**settings, **extra}
        (run,) = run_suite(tasks=[RECIPE_TASK], agents=["rloo"], seeds=[0], **config).runs
        return run.agent_settings

    found = rloo_config()
    assert {key: found[key] for key in RECIPE} == RECIPE
    assert found["minibatch_size"] == TINY["minibatch_size"]  # not in the recipe: the suite's
    overridden = rloo_config(agent_options={"rloo": {"learning_rate": 1e-3}})
    assert overridden["learning_rate"] == 1e-3 and overridden["group_size"] == 2
    off = rloo_config(recipes=False)
    assert off["learning_rate"] == SuiteConfig().learning_rate and off["epochs"] == 4
    assert off["group_size"] == 4  # the agent's own default
    with pytest.raises(ValueError, match="recipe for rloo answers each prompt 2 times"):
        rloo_config(num_envs=3)


def test_a_tasks_suite_budget_sets_its_runs_unless_overridden_or_off():
    """The budget gives a run its tokens, training setup, env options and answers per held-out
    prompt; ``timesteps``, ``task_timesteps``, ``training_setup``, ``options`` and
    ``eval_samples`` override each part, ``budgets=False`` drops it; each run records what it
    ran with."""
    tokenizer = build_tiny_tokenizer()
    models = {"policy": build_tiny_gpt2(tokenizer), "tokenizer": tokenizer}
    base = {**TINY, "smoke": False, "timesteps": None, "options": models, "eval_points": (1.0,)}

    def config(**extra) -> SuiteConfig:
        return SuiteConfig.create(**{**base, "tasks": (BUDGET_TASK,), **extra})

    def env_of(settings: SuiteConfig):
        env = suite_runner._task_env(BUDGET_TASK, settings, {})
        blocks = env.policy.transformer.h
        trains = [any(p.requires_grad for p in block.parameters()) for block in blocks]
        return env.max_new_tokens, trains

    declared = config()
    assert declared.budget(BUDGET_TASK) == 6 and declared.setup(BUDGET_TASK) == "frozen:1"
    assert env_of(declared) == (3, [False, True])
    (run,) = run_suite(declared, agents=["ppo"], seeds=[0]).runs
    assert run.budget == 6 and run.tokens >= 6 and run.training_setup == "frozen:1"
    assert run.options["max_new_tokens"] == 3
    assert run.eval_samples == 2 and len(run.per_response["gold"]) == 2 * TINY["eval_prompts"]
    # the leaderboard averages a prompt's two answers: 4 prompts per seed
    assert run_scores(SuiteResult({}, {}, [run]), [run], "gold").shape == (1, 4)
    table = leaderboard_table(SuiteResult({}, {}, [run]), BUDGET_TASK)
    assert "Held out: 4 prompts, each answered 2 times per run." in table

    assert config(eval_samples=1).answers(BUDGET_TASK) == 1
    assert config(timesteps=4).budget(BUDGET_TASK) == 4
    assert config(timesteps=4, task_timesteps={BUDGET_TASK: 5}).budget(BUDGET_TASK) == 5
    overridden = config(training_setup="full", options={**models, "max_new_tokens": 2})
    assert env_of(overridden) == (2, [True, True])
    assert env_of(config(task_options={BUDGET_TASK: {"max_new_tokens": 1}}))[0] == 1

    off = config(budgets=False)
    assert off.budget(BUDGET_TASK) == DEFAULT_TIMESTEPS and off.setup(BUDGET_TASK) == "full"
    assert off.answers(BUDGET_TASK) == 1
    assert env_of(off)[1] == [True, True] and "max_new_tokens" not in off.env_options(BUDGET_TASK)
    assert config(smoke=True).task_budget(BUDGET_TASK) is None  # smoke runs are plumbing
    with pytest.raises(ValueError, match="timesteps must be >= 1"):
        SuiteBudget(timesteps=0)
    with pytest.raises(ValueError, match="training setup must be"):
        SuiteBudget(timesteps=8, training_setup="frozen")
    with pytest.raises(ValueError, match="eval_samples must be >= 1"):
        SuiteBudget(timesteps=8, eval_samples=0)
    # A task without a budget gets the suite's defaults.
    assert config().budget(TASK) == DEFAULT_TIMESTEPS and config().setup(TASK) == "full"


def test_the_curves_last_point_is_the_final_evaluation_unless_curve_prompts_differ(monkeypatch):
    """``curve_prompts=None`` evaluates the curve on the final evaluation's prompts, so the
    final evaluation is the curve's last point (no second one); fewer curve prompts cost one
    more evaluation at the end."""
    calls: list[int] = []
    real = suite_runner.evaluate

    def counting(agent, env, prompts, seed):
        calls.append(len(prompts))
        return real(agent, env, prompts=prompts, seed=seed)

    monkeypatch.setattr(suite_runner, "evaluate", counting)
    settings = {**TINY, "eval_points": (0.0, 1.0), "eval_prompts": 4}
    (run,) = run_suite(
        tasks=[TASK], agents=["ppo"], seeds=[0], **{**settings, "curve_prompts": None}
    ).runs
    assert calls == [4, 4]  # the point at 0, then the final one
    assert run.curve[-1]["metrics"] == run.final
    calls.clear()
    run_suite(tasks=[TASK], agents=["ppo"], seeds=[0], **{**settings, "curve_prompts": 2})
    assert calls == [2, 4, 2]


# -- whole suites on the tiny task (smoke) --------------------------------------------------------


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
            # every iteration's logged means, up to the last one's tokens
            assert run.history and run.history[-1]["timesteps"] == run.tokens
            assert {"rollout/kl", "train/explained_variance"} <= set(run.history[-1])
        else:
            assert not run.trained and run.tokens == 0 and len(run.curve) == 1
            assert run.history == []
            assert run.curve[0]["fraction"] == 0.0 and run.curve[0]["metrics"]["episodes"] == 2
            assert abs(run.final["kl"]) < 1e-4


def test_leaderboard_of_the_suite_pools_seeds_and_prompts(suite):
    result, _, _ = suite
    rows = {row.agent: row for row in leaderboard(result, TASK)}
    for agent, row in rows.items():
        mine = result.runs_of(TASK, agent)
        golds = [run.final["gold"] for run in mine]
        assert row.seeds == 2 and row.seed_means == golds
        expected = estimate(np.stack([run.per_response["gold"] for run in mine]))  # 1 answer each
        assert row.metrics["gold"] == expected
        assert row.metrics["gold"].mean == pytest.approx(np.mean(golds))
    assert rows["ppo"].versus_reference is not None or rows["reference"].versus_best is not None
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
    curve's too); the setting is recorded only when given (None: each task's), so older files
    resume."""
    settings = {**TINY, "agents": ("reference",), "seeds": (0,), "eval_points": (0.0, 1.0)}
    (run,) = run_suite(tasks=[TASK], eval_samples=3, out=tmp_path / "s.json", **settings).runs
    assert run.final["episodes"] == 3 * TINY["eval_prompts"]
    assert len(run.per_response["gold"]) == 3 * TINY["eval_prompts"] and run.eval_samples == 3
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


def test_the_parts_of_one_suite_merge_into_one_leaderboard(tmp_path):
    """One suite split by seed between two invocations (as two processes run it), merged by
    ``--results``: one leaderboard over both parts, and the merged JSON; parts of other
    settings, or holding one run twice, are refused."""
    common = [
        "bench", "suite", "--smoke", "--tasks", TASK, "--agents", "reference",
        "--agent", "test_suite:GreedyAgent", "--timesteps", "8", "--eval-points", "1",
    ]  # fmt: skip
    parts = [tmp_path / "a.json", tmp_path / "b.json"]
    for seed, part in zip(("0", "1"), parts, strict=True):
        status, _, stderr = run_cli(*common, "--seeds", seed, "--out", str(part))
        assert status == 0, stderr
    merged = tmp_path / "merged.json"
    status, stdout, stderr = run_cli(
        "bench", "suite", "--results", *map(str, parts), "--out", str(merged)
    )
    assert status == 0, stderr
    assert "n=2" in stdout  # both seeds in one table
    result = SuiteResult.read(merged)
    assert sorted(run.key for run in result.runs) == sorted(
        (TASK, agent, seed) for agent in ("GreedyAgent", "reference") for seed in (0, 1)
    )
    first, second = (SuiteResult.read(part) for part in parts)
    with pytest.raises(ValueError, match="more than one result"):
        SuiteResult.merge([first, first])
    second.settings = {**second.settings, "timesteps": 16}
    with pytest.raises(ValueError, match="differing: timesteps"):
        SuiteResult.merge([first, second])


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
