"""The embedded RLHF demo: the InstructGPT recipe end to end, offline, with a report.

It runs the ready-made task ``rlhf_env/PositiveReview-v0`` (:mod:`rlhf_env.tasks.positive_review`)
for the demo's policy:

1. the gold judge: a MiniLM sentiment model trained on labelled reviews (the stand-in for
   human labellers, and the measure of the true objective);
2. sample responses from the initial policy on preference prompts; label pairs of them with
   the judge;
3. train the reward model on the pairs (held-out pairwise accuracy);
4. evaluate the initial policy on the task's held-out prompts with the task's gold metrics
   (judge, judge x fluency, VADER), the learned reward, KL, perplexity and diversity (before
   any update: its KL is 0);
5. RL fine-tuning in the vector env on the task's training prompts, reward = the learned
   reward model - beta * KL;
6. evaluate the final policy on the same held-out prompts; write the report.

Stages 1-3 are the task's build: its judge and reward model are trained once and kept in the
task cache (:mod:`rlhf_env.tasks.cache`), keyed by their settings and the policy's weights,
and the run folder records their figures and folders. Every stage is marked done in
``run.json`` with its figures, and RL writes checkpoints, so running the same command again
resumes where a run stopped.

This module is an entry point (like the CLI that calls it): it imports the agents.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents import AGENTS, make_agent
from rlhf_agents.checkpoint import LATEST
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout
from rlhf_env.models import load_causal_lm, load_tokenizer, pick_device, save_policy
from rlhf_env.models.efficient import apply_training_setup
from rlhf_env.rewards.base import RewardFunction
from rlhf_env.tasks import Task, build_task, task_spec
from rlhf_env.tasks.cache import backbone_folder
from rlhf_env.vector_env import TextGenerationVectorEnv
from rlhf_pipeline.config import TASK, DemoConfig
from rlhf_pipeline.held_out import evaluate_policy
from rlhf_pipeline.report import write_report
from rlhf_pipeline.run_folder import RunFolder

STAGE_COUNT = 6
#: The task's details the run folder records (``task.details["judge"]`` and ``["reward_model"]``).
JUDGE_FIGURES = ("held_out_accuracy", "vader_held_out_accuracy", "held_out_texts", "folder")
REWARD_MODEL_FIGURES = (
    "initial_eval_accuracy", "train_pairs", "eval_pairs", "ppl_0", "initial_judge_mean", "folder"
)  # fmt: skip


def run_demo(config: DemoConfig, overwrite: bool = False) -> Path:
    """Run (or resume) the pipeline into ``config.out``; returns the report's path.

    Raises:
        ValueError: the run folder holds a run with other settings, or one whose task was
            built differently (and not ``overwrite``).
    """
    started = time.perf_counter()
    run = RunFolder(config, overwrite=overwrite)
    device = pick_device(config.device)
    _say(f"run folder {run.path}, device {device}")
    policy_path = backbone_folder(config.policy)
    tokenizer = load_tokenizer(policy_path)
    policy = load_causal_lm(policy_path, device=device, dtype=torch.float32)
    task = _task_stage(run, config, policy, tokenizer, device)

    # The RL env (the task's training prompts) and the evaluation env (its held-out prompts)
    # share the models. The training setup comes after the task's build: the task's reward
    # model is keyed by the untouched policy's weights.
    policy, reference = apply_training_setup(policy, config.training_setup)
    env = TextGenerationVectorEnv(
        policy, tokenizer, task.reward_fn, task.train_prompts, reference or task.reference,
        config=config.env_config(device=str(device)),
    )  # fmt: skip
    eval_env = TextGenerationVectorEnv(
        policy, tokenizer, task.reward_fn, task.eval_prompts, env.reference,
        config=config.env_config(
            device=str(device), num_envs=min(config.num_envs * 2, len(task.eval_prompts))
        ),
    )  # fmt: skip

    if not run.done("initial_eval"):
        _say(f"[4/{STAGE_COUNT}] evaluating the initial policy on {len(task.eval_prompts)} prompts")
        _evaluate_stage(run, "initial_eval", eval_env, task, config)
    agent = _make_agent(config, env, run)  # restored from the last checkpoint if there is one
    if not run.done("rl"):
        _say(f"[5/{STAGE_COUNT}] {config.agent.upper()} on {config.training_setup} for "
             f"{config.total_timesteps} tokens (from {agent.num_timesteps})")  # fmt: skip
        _reinforce(run, config, agent, task.gold[task.gold_name], started)
    if not run.done("final_eval"):
        _say(f"[6/{STAGE_COUNT}] evaluating the final policy and writing the report")
        _evaluate_stage(run, "final_eval", eval_env, task, config)
    report = write_report(run, total_seconds=time.perf_counter() - started)
    _say(f"report: {report}")
    return report


# -- the stages ----------------------------------------------------------------------------------


def _task_stage(
    run: RunFolder,
    config: DemoConfig,
    policy: torch.nn.Module,
    tokenizer: Any,
    device: torch.device,
) -> Task:
    """1-3. The task built for the policy: the judge and the reward model, trained (or read
    from the task cache). The first time, its figures and cache folders go into ``run.json``;
    on a resume, the task must be the one the run started with."""
    _say(f"[1-3/{STAGE_COUNT}] building {task_spec(TASK).env_id}: the gold judge, "
         f"{config.preference_prompts * config.responses_per_prompt} responses labelled by it, "
         "the reward model (cached once trained)")  # fmt: skip
    start = time.perf_counter()
    task, _, _ = build_task(
        TASK, policy, tokenizer, device=device, progress=config.progress_bar,
        **config.task_arguments(),
    )  # fmt: skip
    record = _task_record(task)
    if not run.done("task"):
        run.finish("task", time.perf_counter() - start, **record)
    _check_same_task(run, record)
    judge, reward_model = run.stage("task")["judge"], run.stage("task")["reward_model"]
    accuracy = reward_model["eval_accuracy"]
    shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
    _say(f"  judge held-out accuracy {judge['held_out_accuracy']:.3f} (VADER "
         f"{judge['vader_held_out_accuracy']:.3f}); reward model held-out pairwise accuracy "
         f"{shown} on {reward_model['eval_pairs']} pairs")  # fmt: skip
    return task


def _task_record(task: Task) -> dict[str, Any]:
    """What the run folder records of a built PositiveReview task: the judge's held-out
    accuracy and VADER's on the same texts, the reward model's held-out pairwise accuracy
    (before and after training), its pairs, the fluency threshold ``ppl_0``, the cache
    folders."""
    judge, reward_model = task.details["judge"], task.details["reward_model"]
    accuracies = reward_model["eval_accuracy"]  # one per epoch
    return {
        "task": task_spec(task.name).env_id,
        "judge": {key: judge[key] for key in JUDGE_FIGURES},
        "reward_model": {key: reward_model[key] for key in REWARD_MODEL_FIGURES}
        | {"eval_accuracy": accuracies[-1] if accuracies else None},
    }


def _check_same_task(run: RunFolder, record: dict[str, Any]) -> None:
    """Refuse to resume against a judge or reward model other than the recorded ones (same
    cache key: same settings and policy weights; the cache's root may move)."""
    recorded = run.stage("task")
    for part in ("judge", "reward_model"):
        before, now = Path(recorded[part]["folder"]).name, Path(record[part]["folder"]).name
        if before != now:
            raise ValueError(
                f"{run.path} was run with the task's {part} {before}, but the policy now builds "
                f"{now} (its weights or the task changed); pass --overwrite to start afresh"
            )


def _evaluate_stage(
    run: RunFolder, stage: str, env: TextGenerationVectorEnv, task: Task, config: DemoConfig
) -> None:
    """4 and 6. The env's current policy on the task's held-out prompts (same seed both
    times), with every gold metric of the task."""
    start = time.perf_counter()
    result = evaluate_policy(
        env, task.eval_prompts, seed=config.seed + 1, progress=config.progress_bar, gold=task.gold
    )
    run.write_json(f"eval_{stage.removesuffix('_eval')}.json", result)
    run.finish(stage, time.perf_counter() - start, **result["summary"])


def _reinforce(
    run: RunFolder,
    config: DemoConfig,
    agent: PolicyGradientAgent,
    gold: RewardFunction,
    started: float,
) -> None:
    """5. RL fine-tuning until ``total_timesteps`` or the time budget; the trained policy is
    saved to ``policy/``."""
    start = time.perf_counter()
    monitor = _Monitor(gold, started, config, run.stage("initial_eval")["seconds"])
    agent.learn(config.total_timesteps, callback=monitor)
    run.write_json("rl_history.json", agent.history)
    save_policy(agent.env.policy, agent.env.tokenizer, run.file("policy"))
    run.finish(
        "rl",
        time.perf_counter() - start,
        timesteps=agent.num_timesteps,
        iterations=agent.iterations,
        stopped_by_budget=monitor.stopped,
        final_beta=agent.env.kl_coef,
    )


# -- the agent ----------------------------------------------------------------------------------


def _make_agent(
    config: DemoConfig, env: TextGenerationVectorEnv, run: RunFolder
) -> PolicyGradientAgent:
    """The RL agent, restored from the run's last checkpoint when there is one."""
    options: dict[str, Any] = {
        "learning_rate": config.learning_rate,
        "epochs": config.epochs,
        "minibatch_size": config.minibatch_size,
        "kl_coef": config.kl_coef,
        "kl_target": config.kl_target,
        "kl_horizon": config.kl_horizon,
        "seed": config.seed if config.rl_seed is None else config.rl_seed,
        "checkpoint_dir": str(run.file("rl")),
        "checkpoint_every": config.checkpoint_every,
        "log_dir": str(run.file("tensorboard")),
        "progress_bar": config.progress_bar,
        # The env's switches for computing shared work once drive the update's as well.
        "share_trunk": config.share_trunk,
        "share_prefix": config.prefix_cache,
    }
    if (run.file("rl") / LATEST).is_file():
        runtime = {k: options[k] for k in ("checkpoint_dir", "log_dir", "progress_bar")}
        agent = AGENTS[config.agent].load(run.file("rl"), env, **runtime)
        _say(f"  resumed from {run.file('rl')} at {agent.num_timesteps} tokens")
        return agent  # type: ignore[return-value]
    return make_agent(config.agent, env, **options)  # type: ignore[return-value]


class _Monitor:
    """The RL callback: scores every rollout with the task's gold judge (for the report's
    curves) and stops training when the time budget would be passed."""

    def __init__(
        self, gold: RewardFunction, started: float, config: DemoConfig, eval_seconds: float
    ) -> None:
        self.gold = gold
        self.started = started
        self.budget = config.budget_minutes * 60 if config.budget_minutes else None
        self.reserve = 1.5 * eval_seconds + 10  # the final evaluation and the report
        self.stopped = False

    def __call__(
        self, agent: PolicyGradientAgent, rollout: Rollout, record: dict[str, float]
    ) -> bool:
        gold = self.gold(rollout.prompts, rollout.responses)
        record["rollout/gold_score"] = float(np.mean(gold))
        if self.budget is None:
            return True
        elapsed = time.perf_counter() - self.started
        next_update = record["perf/rollout_seconds"] + record["perf/update_seconds"]
        if elapsed + next_update + self.reserve > self.budget:
            self.stopped = True
            return False
        return True


def _say(message: str) -> None:
    print(message, flush=True)


__all__ = ["run_demo"]
