"""The embedded RLHF demo: the InstructGPT recipe end to end, offline, with a report.

1. sample responses from the initial policy on preference prompts;
2. label pairs of them with the gold oracle (VADER: the stand-in for human labellers);
3. train the reward model on the pairs (held-out pairwise accuracy);
4. evaluate the initial policy on held-out prompts (before any update: its KL is 0);
5. RL fine-tuning in the vector env, reward = the learned reward model - beta * KL;
6. evaluate the final policy on the same held-out prompts; write the report.

Every stage writes its output to the run folder and is marked done in ``run.json``, and RL
writes checkpoints, so running the same command again resumes where a run stopped.

This module is an entry point (like the CLI that calls it): it imports the agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents import AGENTS, make_agent
from rlhf_agents.checkpoint import LATEST
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout
from rlhf_env import assets
from rlhf_env.data.preferences import load_pairs, write_jsonl_pairs
from rlhf_env.data.prompts import balanced_imdb_prompt_sets
from rlhf_env.data.synthetic import label_pairs, sample_responses
from rlhf_env.models import (
    build_tiny_gpt2,
    build_tiny_tokenizer,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    save_policy,
)
from rlhf_env.models.efficient import apply_training_setup
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.oracles import make_oracle
from rlhf_env.rewards.training import RewardTrainingConfig, train_reward_model
from rlhf_env.vector_env import TextGenerationVectorEnv
from rlhf_pipeline.config import TINY_MODEL, DemoConfig
from rlhf_pipeline.held_out import evaluate_policy
from rlhf_pipeline.report import write_report
from rlhf_pipeline.run_folder import RunFolder

Oracle = Callable[[list[str], list[str]], Sequence[float]]
STAGE_COUNT = 6


@dataclass
class PromptSplits:
    """Disjoint prompt sets, each half from negative and half from positive reviews."""

    preference: list[str]
    train: list[str]
    evaluation: list[str]


def run_demo(config: DemoConfig, overwrite: bool = False) -> Path:
    """Run (or resume) the pipeline into ``config.out``; returns the report's path.

    Raises:
        ValueError: the run folder holds a run with other settings (and not ``overwrite``).
    """
    started = time.perf_counter()
    run = RunFolder(config, overwrite=overwrite)
    device = pick_device(config.device)
    _say(f"run folder {run.path}, device {device}")
    policy_path = _model_folder(config.policy, run.path)
    tokenizer = load_tokenizer(policy_path)
    splits = prompt_splits(config)
    oracle = make_oracle(config.oracle)

    if not run.done("preferences"):
        _make_preferences(run, config, policy_path, tokenizer, splits.preference, oracle, device)
    _say(f"  {run.stage('preferences')['pairs']} pairs in {run.file('pairs.jsonl')}")
    if not run.done("reward_model"):
        _train_reward_model(run, config, device)
    reward_model = RewardModel.from_pretrained(run.file("reward_model"), device=device)
    _say(f"  held-out pairwise accuracy {run.stage('reward_model')['eval_accuracy']:.3f}")

    # The RL env (train prompts) and the evaluation env (held-out prompts) share the models.
    policy, reference = apply_training_setup(
        load_causal_lm(policy_path, device=device, dtype=torch.float32), config.training_setup
    )
    env = TextGenerationVectorEnv(
        policy, tokenizer, reward_model, splits.train, reference,
        config=config.env_config(device=str(device)),
    )  # fmt: skip
    eval_env = TextGenerationVectorEnv(
        policy, tokenizer, reward_model, splits.evaluation, env.reference,
        config=config.env_config(
            device=str(device), num_envs=min(config.num_envs * 2, len(splits.evaluation))
        ),
    )  # fmt: skip

    if not run.done("initial_eval"):
        _say(f"[4/{STAGE_COUNT}] evaluating the initial policy on {len(splits.evaluation)} prompts")
        _evaluate_stage(run, "initial_eval", eval_env, splits.evaluation, oracle, config)
    agent = _make_agent(config, env, run)  # restored from the last checkpoint if there is one
    if not run.done("rl"):
        _say(f"[5/{STAGE_COUNT}] {config.agent.upper()} on {config.training_setup} for "
             f"{config.total_timesteps} tokens (from {agent.num_timesteps})")  # fmt: skip
        _reinforce(run, config, agent, oracle, started)
    if not run.done("final_eval"):
        _say(f"[6/{STAGE_COUNT}] evaluating the final policy and writing the report")
        _evaluate_stage(run, "final_eval", eval_env, splits.evaluation, oracle, config)
    report = write_report(run, total_seconds=time.perf_counter() - started)
    _say(f"report: {report}")
    return report


# -- the stages ----------------------------------------------------------------------------------


def _make_preferences(
    run: RunFolder,
    config: DemoConfig,
    policy_path: Path | str,
    tokenizer: Any,
    prompts: list[str],
    oracle: Oracle,
    device: torch.device,
) -> None:
    """1-2. Sample responses from the initial policy; label pairs of them with the oracle."""
    _say(f"[1-2/{STAGE_COUNT}] sampling responses and labelling pairs with {config.oracle}")
    start = time.perf_counter()
    policy = load_causal_lm(policy_path, device=device, dtype=torch.float32)
    responses = sample_responses(
        policy, tokenizer, prompts, config.responses_per_prompt, config.max_new_tokens,
        seed=config.seed, progress=config.progress_bar,
    )  # fmt: skip
    pairs = label_pairs(prompts, responses, oracle, noise_k=config.label_noise, seed=config.seed)
    if not pairs:
        raise ValueError(
            f"the {config.oracle} oracle scored every pair of sampled responses the same, so "
            "there is no preference to learn; sample more or longer responses, or set "
            "label_noise to break ties at random"
        )
    write_jsonl_pairs(pairs, run.file("pairs.jsonl"))
    flat = [response for group in responses for response in group]
    gold = np.asarray(oracle([""] * len(flat), flat), dtype=np.float64)
    run.finish(
        "preferences",
        time.perf_counter() - start,
        responses=len(flat),
        pairs=len(pairs),
        gold_mean=float(gold.mean()),
    )


def _train_reward_model(run: RunFolder, config: DemoConfig, device: torch.device) -> None:
    """3. A reward model on the pairs, saved to ``reward_model/`` with its metrics."""
    _say(f"[3/{STAGE_COUNT}] training the reward model on {config.reward_backbone}")
    start = time.perf_counter()
    reward_model = RewardModel.from_backbone(
        _model_folder(config.reward_backbone, run.path),
        device=device,
        max_length=config.rm_max_length,
        seed=config.seed,
        include_prompt=False,  # the oracle scores the response alone
        pooling=config.rm_pooling,
    )
    training = RewardTrainingConfig(
        epochs=config.rm_epochs,
        batch_size=config.rm_batch_size,
        learning_rate=config.rm_learning_rate,
        seed=config.seed,
    )
    pairs = load_pairs(run.file("pairs.jsonl"))
    metrics = train_reward_model(reward_model, pairs, training, config.progress_bar)
    reward_model.save_pretrained(run.file("reward_model"))
    run.write_json("reward_model/metrics.json", metrics)
    run.finish(
        "reward_model",
        time.perf_counter() - start,
        eval_accuracy=metrics["eval_accuracy"][-1] if metrics["eval_accuracy"] else None,
        initial_eval_accuracy=metrics.get("initial_eval_accuracy"),
        train_pairs=metrics["train_pairs"],
        eval_pairs=metrics["eval_pairs"],
    )


def _evaluate_stage(
    run: RunFolder,
    stage: str,
    env: TextGenerationVectorEnv,
    prompts: list[str],
    oracle: Oracle,
    config: DemoConfig,
) -> None:
    """4 and 6. The env's current policy on the held-out prompts (same seed both times)."""
    start = time.perf_counter()
    result = evaluate_policy(env, prompts, oracle, config.seed + 1, config.progress_bar)
    run.write_json(f"eval_{stage.removesuffix('_eval')}.json", result)
    run.finish(stage, time.perf_counter() - start, **result["summary"])


def _reinforce(
    run: RunFolder,
    config: DemoConfig,
    agent: PolicyGradientAgent,
    oracle: Oracle,
    started: float,
) -> None:
    """5. RL fine-tuning until ``total_timesteps`` or the time budget; the trained policy is
    saved to ``policy/``."""
    start = time.perf_counter()
    monitor = _Monitor(oracle, started, config, run.stage("initial_eval")["seconds"])
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


# -- models, data, the agent ----------------------------------------------------------------------


def _model_folder(name: str, run_dir: Path) -> Path | str:
    """A local folder for a model name: packaged assets resolve (converting SmolLM2 once), the
    tiny test model is built and saved in the run folder, anything else is left alone."""
    if name != TINY_MODEL:
        return assets.resolve(name)
    folder = run_dir / TINY_MODEL
    if not (folder / "config.json").is_file():
        tokenizer = build_tiny_tokenizer()
        build_tiny_gpt2(tokenizer, n_layer=2, n_embd=64, seed=0).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def prompt_splits(config: DemoConfig) -> PromptSplits:
    """IMDB review openings alternating negative and positive reviews, in three disjoint sets:
    preference prompts, RL training prompts, held-out evaluation prompts."""
    sizes = [config.preference_prompts, config.train_prompts, config.eval_prompts]
    return PromptSplits(*balanced_imdb_prompt_sets(sizes, words=config.prompt_words))


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
        "seed": config.seed,
        "checkpoint_dir": str(run.file("rl")),
        "checkpoint_every": config.checkpoint_every,
        "log_dir": str(run.file("tensorboard")),
        "progress_bar": config.progress_bar,
    }
    if (run.file("rl") / LATEST).is_file():
        runtime = {k: options[k] for k in ("checkpoint_dir", "log_dir", "progress_bar")}
        agent = AGENTS[config.agent].load(run.file("rl"), env, **runtime)
        _say(f"  resumed from {run.file('rl')} at {agent.num_timesteps} tokens")
        return agent  # type: ignore[return-value]
    return make_agent(config.agent, env, **options)  # type: ignore[return-value]


class _Monitor:
    """The RL callback: scores every rollout with the gold oracle (for the report's curves) and
    stops training when the time budget would be passed."""

    def __init__(
        self, oracle: Oracle, started: float, config: DemoConfig, eval_seconds: float
    ) -> None:
        self.oracle = oracle
        self.started = started
        self.budget = config.budget_minutes * 60 if config.budget_minutes else None
        self.reserve = 1.5 * eval_seconds + 10  # the final evaluation and the report
        self.stopped = False

    def __call__(
        self, agent: PolicyGradientAgent, rollout: Rollout, record: dict[str, float]
    ) -> bool:
        gold = self.oracle(rollout.prompts, rollout.responses)
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


__all__ = ["PromptSplits", "prompt_splits", "run_demo"]
