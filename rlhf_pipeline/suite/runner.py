"""Running the suite: every agent on every task and seed (:func:`run_suite`), one run at a time
(:func:`run_one`: a fresh env, training with the curve's evaluations, the final evaluation)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents import Agent, Evaluation, evaluate
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_env import assets
from rlhf_env.models import load_causal_lm, load_tokenizer
from rlhf_env.models.efficient import apply_training_setup
from rlhf_env.tasks import TASKS, Task, make_task_vector_env, smoke_arguments, task_spec
from rlhf_env.vector_env import TextGenerationVectorEnv
from rlhf_pipeline.suite.agents import FIXED_AGENTS, AgentFactory, agent_factory, agent_name
from rlhf_pipeline.suite.config import SuiteConfig
from rlhf_pipeline.suite.results import (
    RunResult,
    SuiteResult,
    as_float,
    differing_settings,
    machine_info,
    rank_metric,
)

#: Responses of the final evaluation kept in each run's results (``RunResult.samples``).
SAMPLES = 4
#: Characters kept of each sample's prompt (its end: the question, not a shared preamble).
SAMPLE_PROMPT_CHARS = 300


def run_suite(
    config: SuiteConfig | None = None,
    agents: Sequence[str] | Mapping[str, AgentFactory | str] | None = None,
    out: str | Path | None = None,
    fresh: bool = False,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> SuiteResult:
    """Run every agent on every task with every seed; returns (and, with ``out``, writes
    after every run) the results.

    Args:
        config: the settings; or give them as keyword arguments (``settings``: the fields of
            :class:`SuiteConfig`; with ``smoke=True`` the tiny budgets of
            :data:`SMOKE_SETTINGS` fill in the ones not given).
        agents: replaces ``config.agents``: names and ``module:Class`` specs, or a mapping of
            name to such a spec or to a factory ``factory(env, seed) -> Agent``.
        out: the JSON file. If it exists with the same :meth:`SuiteConfig.run_settings`, its
            finished runs are kept and skipped (an interrupted suite resumes); with other
            settings it is an error, unless ``fresh`` (start over, overwriting it).
        log: called with one line per finished run (e.g. ``print``).

    Example:
        >>> run_suite(tasks=["Arithmetic"], agents={"mine": lambda env, seed: MyAgent(env),
        ...           "reference": "reference"}, seeds=[0, 1], timesteps=8192)
    """
    if config is None:
        config = SuiteConfig.create(**settings)
    elif settings:
        config = dataclasses.replace(config, **settings)
    factories = _factories(config, agents)
    if agents is not None:
        config = dataclasses.replace(config, agents=tuple(factories))
    tasks = list(config.tasks) or list(TASKS)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown}; the registered tasks are {sorted(TASKS)}")
    stray = sorted({*config.task_options, *config.task_timesteps} - set(tasks))
    if stray:
        raise ValueError(
            f"task_options or task_timesteps name {stray}, which this suite does not run (its "
            f"tasks are {tasks}); check the spelling, or add them to tasks"
        )
    result = _start(config, out, fresh)
    done = {run.key for run in result.runs}
    plan = [(t, a, s) for t in tasks for s in config.seeds for a in factories]
    for number, (task, name, seed) in enumerate(plan, 1):
        if (task, name, seed) in done:
            continue
        run = run_one(task, name, factories[name], seed, config)
        result.runs.append(run)
        if out is not None:
            result.write(out)
        if log is not None:
            log(f"[{number}/{len(plan)}] {_summary(run)}")
    return result


def _factories(
    config: SuiteConfig, agents: Sequence[str] | Mapping[str, AgentFactory | str] | None
) -> dict[str, AgentFactory]:
    if agents is None:
        agents = config.agents
    if isinstance(agents, Mapping):
        return {
            name: agent_factory(f"{name}={value}", config) if isinstance(value, str) else value
            for name, value in agents.items()
        }
    return {agent_name(spec): agent_factory(spec, config) for spec in agents}


def _start(config: SuiteConfig, out: str | Path | None, fresh: bool) -> SuiteResult:
    """The results so far: those in ``out`` when it holds runs of the same settings."""
    settings = config.run_settings()
    if out is None or fresh or not Path(out).exists():
        return SuiteResult(settings, machine_info())
    previous = SuiteResult.read(out)
    differ = differing_settings(settings, previous.settings)
    if differ:
        raise ValueError(
            f"{out} holds runs of other settings (differing: {', '.join(differ)}); pass another "
            "--out, or --fresh to overwrite it"
        )
    previous.machine = machine_info()
    return previous


def run_one(
    task: str, name: str, factory: AgentFactory, seed: int, config: SuiteConfig
) -> RunResult:
    """One run: a fresh env of ``task``, ``factory``'s agent trained to the budget with the
    curve's evaluations, and the final evaluation on the held-out prompts."""
    start = time.perf_counter()
    _seed_everything(seed)
    env = _task_env(task, config, getattr(factory, "env_options", {}))
    spec = env.task
    assert spec is not None
    eval_env = _evaluation_env(env, spec, config.env_options(task))
    agent = factory(env, seed)
    if not isinstance(getattr(agent, "num_timesteps", None), int):
        raise TypeError(
            f"agent {name!r} ({type(agent).__name__}) has no num_timesteps: an agent counts the "
            "generated tokens it trained on there (rlhf_agents.Agent sets it to 0)"
        )
    answers = config.answers(task)
    final_prompts = spec.eval_prompts[: config.eval_prompts] * answers
    curve_prompts = final_prompts
    if config.curve_prompts is not None:
        curve_prompts = spec.eval_prompts[: config.curve_prompts] * answers

    def measure(prompts: list[str]) -> Any:
        return evaluate(agent, eval_env, prompts=prompts, seed=seed)

    trained = not isinstance(agent, FIXED_AGENTS)
    train_seconds = 0.0
    curve: list[dict[str, Any]] = []
    if trained:
        curve, train_seconds = _train(
            agent, config.budget(task), config.eval_points, lambda: measure(curve_prompts)
        )
    final = measure(final_prompts)
    metrics = _scalars(final.as_dict())
    # The curve's last point on the curve's prompts too, so that the curve compares like with like.
    last = metrics if curve_prompts == final_prompts else _scalars(measure(curve_prompts).as_dict())
    curve.append({"fraction": float(trained), "tokens": agent.num_timesteps, "metrics": last})
    per_response = getattr(final, "per_response", None) or {}
    run = RunResult(
        task=task,
        agent=name,
        seed=seed,
        budget=config.budget(task),
        tokens=int(agent.num_timesteps),
        curve=curve,
        final=metrics,
        per_response={k: np.asarray(v, dtype=float).tolist() for k, v in per_response.items()},
        sem=_scalars(getattr(final, "sem", None) or {}),
        gold_name=getattr(final, "gold_name", None) or spec.gold_name,
        trained=trained,
        train_seconds=train_seconds,
        device=str(env.device),
        samples=_samples(final),
        agent_settings=_agent_settings(agent),
        history=[_scalars(record) for record in getattr(agent, "history", [])],
        task_details=json.loads(json.dumps(spec.details, default=str)),
        training_setup=config.setup(task),
        options=json.loads(json.dumps(config.env_options(task), default=repr)),
        eval_samples=answers,
    )
    eval_env.close()
    env.close()
    run.seconds = time.perf_counter() - start
    return run


def _agent_settings(agent: Agent) -> dict[str, Any]:
    """The agent's ``config`` dataclass as JSON values (empty for an agent without one)."""
    config = getattr(agent, "config", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return {}
    return json.loads(json.dumps(dataclasses.asdict(config), default=repr))


def _samples(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The first :data:`SAMPLES` responses of ``evaluation`` with their prompts' ends; for a
    dialogue the whole conversation too (``conversation``), and as ``response`` its turns on
    one line (``"U: ... | A: ..."``)."""
    rollout = evaluation.rollout
    samples: list[dict[str, Any]] = []
    for i in range(min(SAMPLES, rollout.num_episodes)):
        sample: dict[str, Any] = {
            "prompt": rollout.prompts[i][-SAMPLE_PROMPT_CHARS:],
            "response": rollout.responses[i],
        }
        if rollout.conversations[i]:
            messages = rollout.conversations[i]
            sample["conversation"] = messages
            sample["response"] = " | ".join(
                f"{message['role'][0].upper()}: {message['content']}" for message in messages
            )
        samples.append(sample)
    return samples


def _train(
    agent: Agent, budget: int, eval_points: Sequence[float], measure: Callable[[], Any]
) -> tuple[list[dict[str, Any]], float]:
    """Train ``agent`` to the budget, evaluating at the curve's points below 1 (the final
    evaluation is the caller's); returns the curve so far and the training seconds.

    A policy-gradient agent trains in one ``learn`` call (its learning-rate schedule sees the
    whole budget) and is evaluated from its callback once an update crosses a point; any
    other agent is trained in ``learn(point)`` steps, which resume where the last stopped.
    """
    pending = [point for point in eval_points if point < 1.0]
    curve: list[dict[str, Any]] = []
    evaluating = 0.0

    def crossed() -> None:
        nonlocal evaluating
        started = time.perf_counter()
        evaluation = None
        while pending and agent.num_timesteps >= pending[0] * budget:
            # Points crossed by one update share its evaluation.
            evaluation = evaluation or _scalars(measure().as_dict())
            point = {"fraction": pending.pop(0), "tokens": agent.num_timesteps}
            curve.append({**point, "metrics": evaluation})
        evaluating += time.perf_counter() - started

    start = time.perf_counter()
    crossed()
    if isinstance(agent, PolicyGradientAgent):
        agent.learn(budget, callback=lambda *_: crossed())
    else:
        for point in list(pending):
            agent.learn(max(1, math.ceil(point * budget)))
            crossed()
        agent.learn(budget)
    return curve, time.perf_counter() - start - evaluating


def _task_env(
    task: str, config: SuiteConfig, agent_env_options: Mapping[str, Any]
) -> TextGenerationVectorEnv:
    """A fresh env of ``task``: the smoke variant's arguments (with ``smoke``), under the
    config's options, under the agent's env options; a policy given as a module is copied, so
    that no run trains another's."""
    arguments: dict[str, Any] = {"progress": False}
    if config.smoke:
        arguments.update(smoke_arguments(task))
    options = config.env_options(task)
    arguments.update(options)
    if isinstance(arguments.get("policy"), torch.nn.Module) and "policy" in options:
        arguments["policy"] = copy.deepcopy(arguments["policy"])
    setup = config.setup(task)
    if setup != "full":
        if not isinstance(arguments.get("policy"), torch.nn.Module):
            folder = assets.resolve(arguments.get("policy") or task_spec(task).policy)
            arguments["policy"] = load_causal_lm(folder, dtype=torch.float32)
            arguments.setdefault("tokenizer", load_tokenizer(folder))
        arguments["policy"], reference = apply_training_setup(arguments["policy"], setup)
        arguments.setdefault("reference", reference)
    arguments.update(agent_env_options)
    return make_task_vector_env(task, num_envs=config.num_envs, **arguments)


def _evaluation_env(
    env: TextGenerationVectorEnv, task: Task, options: Mapping[str, Any]
) -> TextGenerationVectorEnv:
    """An env over the training env's policy and reference (the same modules), on the
    held-out prompts, with the task's initial beta and the default autoreset."""
    settings = dataclasses.replace(env.config, autoreset_mode="NextStep")
    reward_fn = options.get("reward_fn", task.reward_fn)
    eval_env = TextGenerationVectorEnv(
        env.policy, env.tokenizer, reward_fn, task.eval_prompts, env.reference, config=settings
    )
    eval_env.task = task
    return eval_env


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """The scalar figures of a mapping, as floats."""
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    }


def _summary(run: RunResult) -> str:
    key = rank_metric([run])
    return (
        f"{run.task} {run.agent} seed {run.seed}: {key} {as_float(run.final.get(key)):.4g}, kl "
        f"{as_float(run.final.get('kl')):.3g}, {run.tokens} tokens in {run.seconds:.1f} s"
    )
