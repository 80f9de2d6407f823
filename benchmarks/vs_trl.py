"""TRL's RLOO, GRPO and PPO trainers against our ``RLOOAgent`` and ``PPOAgent`` on equal work,
side by side.

Each setup runs in its own process (a clean peak) from the same initial policy, on the same
prompts, against the same reward, for ``--iterations`` iterations of the same size. One
iteration is one generation round and its updates:

- ``P x G`` responses (``--prompts-per-iteration P`` prompts, each answered ``--group-size G``
  times; PPO answers ``P x G`` prompts drawn from the same set once each), sampled at
  temperature 1 with no top-k / top-p, at most ``--new`` new tokens, ending at EOS;
- reward = ``--reward`` (``vader``, ``textblob`` or a reward-model folder) minus
  ``--kl-coef`` x the sampled per-response KL (``sum_t log pi - log pi_ref``, k1) to the frozen
  initial model;
- ``--epochs`` passes over the responses in minibatches of ``--minibatch`` responses, each
  one AdamW step (lr ``--learning-rate``, constant, betas 0.9/0.999, eps 1e-8, no weight
  decay, gradients clipped to norm 1), forwards of ``--minibatch / --accumulation``
  responses; clipped surrogate with epsilon 0.2, no entropy bonus;
- float32 on CPU, dropout off, every weight trained.

Setups:
    trl-rloo    trl.RLOOTrainer (trl 1.16), with HF ``generate`` (no vLLM)
    trl-grpo    trl.GRPOTrainer (trl 1.16), the same way
    trl-ppo     trl.PPOTrainer of trl 0.24 (TRL removed it later), run by ``--trl-ppo-python``:
                a virtual environment with trl==0.24.0, transformers<5 and this package
    rloo        agents.RLOOAgent in rlhf_env.TextGenerationVectorEnv
    grpo        rlhf_agents.RLOOAgent with baseline="grpo" (group mean and std) in the same env
    ppo         rlhf_agents.PPOAgent (shared value head, GAE, whitened advantages), the same env
    sb3-ppo     stable-baselines3's PPO on the same env (SB3VecEnv, LanguageModelPolicy):
                P x G sub-envs x --new steps a rollout, minibatches of --minibatch x --new
                transitions, --epochs, clip 0.2, gamma 1, GAE 0.95, its own value head
    initial     no training: the initial policy, evaluated like the others (the baseline)

How the TRL knobs map (trl/trainer/rloo_config.py, rloo_trainer.py of trl 1.16.0):
    num_generations = G; generation_batch_size = P x G (one generation round);
    per_device_train_batch_size = minibatch / accumulation, gradient_accumulation_steps =
    accumulation, so an optimizer step sees ``--minibatch`` responses; steps_per_generation =
    P x G / per_device_train_batch_size (the round is cut into that many micro-batches);
    num_iterations = epochs (TRL regenerates every steps_per_generation x num_iterations
    micro-steps), so a round is epochs x P x G / minibatch optimizer steps, as ours;
    max_steps = iterations x that; beta = kl_coef (TRL RLOO subtracts beta x the summed k1 KL
    from the reward, as our env does); epsilon = 0.2; normalize_advantages = False;
    max_completion_length = new; temperature = 1, top_p = 1, top_k = 0; lr_scheduler_type =
    constant, optim = adamw_torch, weight_decay = 0, max_grad_norm = 1; bf16 = False,
    gradient_checkpointing = False (TRL defaults to both), disable_dropout = True, use_cpu.

GRPO (trl/trainer/grpo_config.py, grpo_trainer.py of trl 1.16.0): the same mapping, with
    scale_rewards = "group" (advantage = (r - group mean) / group std, as baseline="grpo") and
    loss_type = "dapo" (per-token ratios and clipping, the loss a mean over the batch's tokens,
    as ours).

PPO (trl/trainer/ppo_config.py, ppo_trainer.py of trl 0.24.0): per_device_train_batch_size =
    P x G (one rollout, generated in one batch: local_rollout_forward_batch_size = P x G),
    gradient_accumulation_steps = 1, num_mini_batches = P x G / minibatch (so an optimizer step
    sees ``--minibatch`` responses; TRL's accumulation counter spans minibatches, hence
    ``--accumulation 1`` only), num_ppo_epochs = epochs, total_episodes = iterations x P x G,
    response_length = new, stop_token = "eos", kl_coef = beta with kl_estimator = "k1" (the
    per-token KL penalty in the reward, as our env pays it), gamma 1, lam 0.95, whitened
    advantages, cliprange 0.2, cliprange_value 0.2, vf_coef 0.1 (PPOConfig's defaults), no
    missing-EOS penalty, no sample generations. The reward: TRL 0.24 scores token ids with a
    reward *model* sharing the policy's tokenizer; ``TextReward`` decodes them and calls the
    same reward function as the other setups.

What is not the same:
    - the loss: TRL's importance ratio and clipping are per sequence (``exp(sum_t log-ratio)``)
      and the loss is a mean over sequences; ours are per token and the loss is a mean over
      tokens. Both use the RLOO leave-one-out advantage of the KL-penalised reward, without
      normalisation. Under Adam the gradient scale (about the response length apart) matters
      little, but the clipped region differs once the policy moves (epochs > 1).
    - TRL shuffles a round once and replays the same minibatches every epoch; we reshuffle per
      epoch. TRL draws prompts without replacement (a shuffled pass over the set); our agents
      draw with replacement. Random streams differ, so no two setups see the same samples.
    - TRL recomputes the rollout's log-probs with one extra teacher-forced forward of the policy
      and of the reference after ``generate``; the env records them while sampling (the
      reference steps beside the policy with its own KV cache).
    - GRPO: TRL's beta weights a k3 KL term in the loss; our env subtracts beta x the k1 KL
      from the reward (the KL in the table is the evaluation's, the same for all).
    - TRL's PPO keeps a separate value model (the policy's architecture with a fresh scalar
      head: a second full model with its own optimizer state) and computes its values, the
      old and the reference log-probs in teacher-forced passes after ``generate``; our PPO has
      a value head on the policy's trunk. With SmolLM2 the tokenizer's pad is its EOS, so TRL
      treats the EOS as padding: its reward and values attach to the token before it.
    - trl-ppo runs under transformers 4.57 (trl 0.24 predates transformers 5), the others
      under transformers 5.
    - peak memory includes each library's import footprint (TRL imports accelerate, datasets,
      pandas); ``rss_before_training_mib`` shows it apart.

Figures per setup:
    s/iter, rollout s, update s: wall seconds of an iteration and its split, the median after
        the first (warm-up) iteration. Ours from ``learn``'s callback; TRL's from a
        ``TrainerCallback``: a round runs from its first ``on_step_begin`` to its last
        ``on_step_end``, and its rollout (generation, the log-prob forwards, the reward) ends
        when its reward call returns.
    tok/s: generated tokens per second of iteration, the median per-iteration rate after the
        first; tokens are response tokens including an EOS, excluding padding: the env
        rollout's ``num_tokens`` for ours, the lengths of the ``completion_ids`` TRL hands its
        reward function (cut after the first EOS) for TRL.
    peak MiB: the setup process's peak resident set (``ru_maxrss``) at the end of training;
        ``rss_before_training_mib`` is the same after imports (trl included) and the policy
        load, so the difference is what training itself holds.
    gold, learned, KL: the same held-out evaluation for every setup, after training: one
        answer per held-out prompt (temperature 1, seeded) from the trained policy in a fresh
        vector env whose reference is the initial model reloaded (``evaluate_policy``): mean
        gold score (``--gold``, with its standard error), mean learned score (``--reward``) and
        mean per-response KL to the initial model (sampled k1, nats).
    In the JSON besides: ``train_seconds``, the whole training call, set-up included (the env
        or the trainer, with TRL loading its reference from disk); ``iterations``, one record
        per iteration (seconds and split, tokens, the rollout's mean score and mean
        per-response KL; TRL's from its logged per-token ``kl`` x tokens / responses); the
        first held-out samples.

    python benchmarks/vs_trl.py --model tiny --iterations 3  # seconds, a smoke test (needs trl)
    python benchmarks/vs_trl.py --model tiny --setups trl-ppo --trl-ppo-python ~/trl024/bin/python
    python benchmarks/vs_trl.py --model smollm2-135m-instruct --setups initial trl-rloo rloo ppo \\
        --prompts-per-iteration 8 --group-size 4 --new 24 --iterations 20 --epochs 2 \\
        --minibatch 8 --learning-rate 1e-5 --kl-coef 0.05 --reward vader --eval-prompts 128
    python benchmarks/vs_trl.py --model tiny --setups rloo ppo  # without trl installed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
SETUPS = ("initial", "trl-rloo", "trl-grpo", "trl-ppo", "rloo", "grpo", "ppo", "sb3-ppo")
TRL_SETUPS = ("trl-rloo", "trl-grpo", "trl-ppo")
RESULT_PREFIX = "VS_TRL_RESULT "

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


# -- the shared pieces: policy, prompts, reward, evaluation ----------------------------------------


def materialise_policy(model: str, folder: Path) -> str:
    """The policy's folder: ``tiny`` is built (2-layer GPT-2, seed 0) and saved to ``folder``;
    a packaged asset name is resolved (and converted once) here, before any setup is timed."""
    from rlhf_env.assets import resolve
    from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer

    if model != "tiny":
        return str(resolve(model))
    tokenizer = build_tiny_tokenizer()
    build_tiny_gpt2(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def load_policy(folder: str) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` from ``folder``: float32 on CPU, eval mode (dropout off).

    trl-ppo runs under transformers 4, which cannot name the tokenizer class that transformers
    5 writes into ``tokenizer_config.json``; the fast tokenizer itself loads in both."""
    from transformers import PreTrainedTokenizerFast

    from rlhf_env.models import load_causal_lm, load_tokenizer
    from rlhf_env.models.loading import ensure_pad_token

    model = load_causal_lm(folder, device="cpu", dtype=torch.float32)
    try:
        tokenizer = load_tokenizer(folder)
    except ValueError:
        tokenizer = ensure_pad_token(PreTrainedTokenizerFast.from_pretrained(folder))
    return model, tokenizer


def prompt_sets(train: int, held_out: int) -> tuple[list[str], list[str]]:
    """Disjoint training and held-out IMDB review openings (8 words), alternating negative and
    positive reviews, as the demo splits them."""
    from rlhf_env.data.prompts import balanced_imdb_prompt_sets

    train_prompts, held_out_prompts = balanced_imdb_prompt_sets([train, held_out], words=8)
    return train_prompts, held_out_prompts


def make_env(
    policy: torch.nn.Module,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
    max_prompt_tokens: int,
    **options: Any,
) -> Any:
    """Our vector env for one iteration's work: ``P x G`` sub-envs, ``new`` tokens, ``beta``."""
    from rlhf_env import TextGenerationVectorEnv

    num_envs = args.prompts_per_iteration * args.group_size
    return TextGenerationVectorEnv(
        policy, tokenizer, reward_fn, prompts, num_envs=num_envs, max_new_tokens=args.new,
        max_prompt_tokens=max_prompt_tokens, kl_coef=args.kl_coef, device="cpu", **options,
    )  # fmt: skip


def evaluate_trained(
    policy: torch.nn.Module,
    tokenizer: Any,
    folder: str,
    reward_fn: RewardFn,
    oracle: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
    max_prompt_tokens: int,
) -> dict[str, Any]:
    """The same held-out evaluation for every setup: one answer per prompt from ``policy`` in
    a fresh vector env whose reference is the initial model, reloaded from ``folder``."""
    from rlhf_pipeline.held_out import evaluate_policy

    reference, _ = load_policy(folder)
    reference.requires_grad_(False)
    env = make_env(
        policy.eval(), tokenizer, reward_fn, prompts, args, max_prompt_tokens, reference=reference
    )
    result = evaluate_policy(env, prompts, oracle, seed=args.seed + 1)
    env.close()
    return result


def peak_rss_mib() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- our agents ------------------------------------------------------------------------------------


def train_ours(
    setup: str,
    policy: torch.nn.Module,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
    max_prompt_tokens: int,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` iterations of ``RLOOAgent`` (``baseline`` "rloo" or "grpo") or
    ``PPOAgent``; the trained policy and one record per iteration."""
    from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent, RLOOConfig

    env = make_env(policy, tokenizer, reward_fn, prompts, args, max_prompt_tokens)
    num_envs = env.num_envs
    shared = {
        "epochs": args.epochs,
        "minibatch_size": args.minibatch,
        "gradient_accumulation_steps": args.accumulation,
        "learning_rate": args.learning_rate,
        "kl_coef": args.kl_coef,
        "seed": args.seed,
        "progress_bar": False,
    }
    agent: RLOOAgent | PPOAgent
    if setup in ("rloo", "grpo"):
        config = RLOOConfig(group_size=args.group_size, baseline=setup, **shared)
        agent = RLOOAgent(env, config)
    else:
        agent = PPOAgent(env, PPOConfig(**shared))
    iterations: list[dict[str, float]] = []

    def record(_agent: Any, rollout: Any, metrics: dict[str, float]) -> bool:
        iterations.append(
            {
                "seconds": metrics["perf/rollout_seconds"] + metrics["perf/update_seconds"],
                "rollout_seconds": metrics["perf/rollout_seconds"],
                "update_seconds": metrics["perf/update_seconds"],
                "tokens": float(rollout.num_tokens),
                "score": float(rollout.scores.mean()),
                "kl": metrics["rollout/kl"],
            }
        )
        return len(iterations) < args.iterations

    # At most num_envs x new tokens an iteration: the callback, not the budget, ends the run.
    agent.learn(args.iterations * num_envs * args.new + 1, callback=record)
    env.close()
    return policy, iterations


# -- stable-baselines3 ----------------------------------------------------------------------------


def train_sb3(
    policy: torch.nn.Module,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
    max_prompt_tokens: int,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` rollouts and updates of stable-baselines3's own PPO on our env, with
    ``LanguageModelPolicy``: ``P x G`` sub-envs x ``new`` steps a rollout (SB3 resets a
    sub-env in the step its response ends, so a rollout is ``P x G x new`` tokens),
    ``epochs`` passes in minibatches of ``minibatch x new`` transitions."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv

    # SB3 resets a sub-env in the step its episode ends.
    env = make_env(
        policy, tokenizer, reward_fn, prompts, args, max_prompt_tokens, autoreset_mode="SameStep"
    )
    num_envs = env.num_envs
    iterations: list[dict[str, float]] = []

    class Timer(BaseCallback):
        """Times each rollout (collection) and the update that follows it."""

        def __init__(self) -> None:
            super().__init__()
            self.marks: list[tuple[float, float]] = []
            self.scores: list[float] = []

        def _on_rollout_start(self) -> None:
            self.started = time.perf_counter()
            self.scores = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "score" in info:
                    self.scores.append(float(info["score"]))
            return True

        def _on_rollout_end(self) -> None:
            self.marks.append((self.started, time.perf_counter()))
            iterations.append({"score": statistics.fmean(self.scores) if self.scores else 0.0})

    timer = Timer()
    model = PPO(
        LanguageModelPolicy, SB3VecEnv(env), policy_kwargs={"model": env.policy},
        learning_rate=args.learning_rate, n_steps=args.new, batch_size=args.minibatch * args.new,
        n_epochs=args.epochs, gamma=1.0, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0,
        max_grad_norm=1.0, seed=args.seed, device="cpu",
    )  # fmt: skip
    model.learn(total_timesteps=args.iterations * num_envs * args.new, callback=timer)
    ends = [start for start, _ in timer.marks[1:]] + [time.perf_counter()]
    for record, (start, collected), end in zip(iterations, timer.marks, ends, strict=True):
        record.update(
            seconds=end - start,
            rollout_seconds=collected - start,
            update_seconds=end - collected,
            tokens=float(num_envs * args.new),
        )
    env.close()
    return policy, iterations


# -- TRL: RLOOTrainer and GRPOTrainer (trl 1.16) --------------------------------------------------


def trl_config(setup: str, args: argparse.Namespace, output_dir: str) -> Any:
    """``trl.RLOOConfig`` or ``trl.GRPOConfig`` doing our iteration: see the module docstring."""
    from trl import GRPOConfig, RLOOConfig

    responses = args.prompts_per_iteration * args.group_size
    micro_batch = args.minibatch // args.accumulation
    steps_per_iteration = args.epochs * responses // args.minibatch
    if setup == "trl-rloo":
        # leave-one-out advantages of the KL-penalised reward, not normalised
        config_class, specific = RLOOConfig, {"normalize_advantages": False}
    else:
        # group mean and std; per-token ratios, loss a mean over the batch's tokens (as ours)
        config_class = GRPOConfig
        specific = {"scale_rewards": "group", "loss_type": "dapo"}
    return config_class(
        output_dir=output_dir,
        # one round: P x G responses, G per prompt, cut into micro-batches of minibatch / accum
        num_generations=args.group_size,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=args.accumulation,
        steps_per_generation=responses // micro_batch,
        num_iterations=args.epochs,
        max_steps=args.iterations * steps_per_iteration,
        # sampling: temperature 1, no top-k / top-p, at most `new` tokens
        max_completion_length=args.new,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        # objective: beta x KL (RLOO: in the reward; GRPO: a k3 loss term), clip 0.2
        beta=args.kl_coef,
        epsilon=0.2,
        **specific,
        disable_dropout=True,
        logging_steps=steps_per_iteration,  # once an iteration
        **trainer_arguments(args),
    )


def trainer_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """What every TRL setup shares: AdamW as ours (constant learning rate, no weight decay,
    gradients clipped to norm 1), float32 on the CPU without gradient checkpointing, and no
    checkpoints, trackers or progress bar."""
    return {
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "gradient_checkpointing": False,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": args.seed,
    }


def train_trl(
    setup: str,
    policy: torch.nn.Module,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` generation rounds of ``trl.RLOOTrainer`` or ``trl.GRPOTrainer``; the
    trained policy and one record per round (timed by a ``TrainerCallback``, tokens counted in
    the reward call)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer, RLOOTrainer

    responses = args.prompts_per_iteration * args.group_size
    steps_per_iteration = args.epochs * responses // args.minibatch
    iterations: list[dict[str, float]] = []
    round_state: dict[str, float] = {}

    def reward(
        prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        """Our reward function under TRL's signature; counts the round's tokens."""
        scores = [float(s) for s in reward_fn(prompts, completions)]
        round_state["tokens"] = float(sum(len(ids) for ids in completion_ids))
        round_state["score"] = sum(scores) / len(scores)
        round_state["rollout_end"] = time.perf_counter()
        return scores

    class RoundTimer(TrainerCallback):
        """Times each generation round: ``steps_per_iteration`` optimizer steps."""

        def on_step_begin(self, _args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step % steps_per_iteration == 0:
                round_state["start"] = time.perf_counter()

        def on_step_end(self, _args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.global_step % steps_per_iteration == 0:
                iterations.append(round_record(round_state))

        def on_log(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # Logged once a round (logging_steps): TRL's "kl" is a mean per completion token
            # (RLOO: k1; GRPO: its loss's k3).
            logs = kwargs.get("logs") or {}
            if "kl" in logs and iterations:
                tokens_per_response = iterations[-1]["tokens"] / responses
                iterations[-1]["kl"] = float(logs["kl"]) * tokens_per_response

    trainer_class = RLOOTrainer if setup == "trl-rloo" else GRPOTrainer
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as output_dir:
        trainer = trainer_class(
            model=policy,
            reward_funcs=reward,
            args=trl_config(setup, args, output_dir),
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[RoundTimer()],
        )
        trainer.train()
    if len(iterations) != args.iterations:
        raise RuntimeError(f"TRL ran {len(iterations)} rounds, expected {args.iterations}")
    return trainer.model, iterations


def round_record(round_state: dict[str, float]) -> dict[str, float]:
    """One TRL round's record, at its end: its seconds, their split, its tokens and score."""
    end = time.perf_counter()
    return {
        "seconds": end - round_state["start"],
        "rollout_seconds": round_state["rollout_end"] - round_state["start"],
        "update_seconds": end - round_state["rollout_end"],
        "tokens": round_state["tokens"],
        "score": round_state["score"],
    }


# -- TRL's PPOTrainer (trl 0.24, the last releases with it; run with --trl-ppo-python) -------------


def trl_ppo_config(args: argparse.Namespace, output_dir: str) -> Any:
    """``trl.PPOConfig`` (0.24) doing our PPO iteration: see the module docstring."""
    from trl import PPOConfig

    responses = args.prompts_per_iteration * args.group_size
    return PPOConfig(
        output_dir=output_dir,
        # one rollout of P x G responses, generated in one batch; each epoch cuts it into
        # minibatches of `minibatch` responses, one optimizer step each (no accumulation)
        per_device_train_batch_size=responses,
        gradient_accumulation_steps=1,
        num_mini_batches=responses // args.minibatch,
        num_ppo_epochs=args.epochs,
        local_rollout_forward_batch_size=responses,
        total_episodes=args.iterations * responses,
        # sampling: temperature 1 (TRL: no top-k / top-p), at most `new` tokens, stop at EOS
        response_length=args.new,
        temperature=1.0,
        stop_token="eos",
        missing_eos_penalty=None,
        # objective: score - beta x per-token k1 KL, GAE (gamma 1, lambda 0.95), whitened
        # advantages, clip 0.2, value clip 0.2, value-loss weight 0.1 (PPOConfig's defaults)
        kl_coef=args.kl_coef,
        kl_estimator="k1",
        whiten_rewards=False,
        gamma=1.0,
        lam=0.95,
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        num_sample_generations=0,
        logging_steps=1,  # once an update
        **trainer_arguments(args),
    )


class TextReward(torch.nn.Module):
    """Stands for a text reward where ``PPOTrainer`` wants a reward *model*: TRL 0.24 scores
    token ids with the policy's tokenizer through ``trl.trainer.utils.get_reward``, which
    ``train_trl_ppo`` routes here for this module (the value model keeps TRL's own path)."""

    def __init__(self, reward_fn: RewardFn, tokenizer: Any, round_state: dict[str, float]):
        super().__init__()
        self.reward_fn, self.tokenizer, self.round_state = reward_fn, tokenizer, round_state

    def score_ids(self, query_responses: torch.Tensor, context_length: int) -> torch.Tensor:
        """Decode prompt and response (up to its first EOS), score the texts, count tokens."""
        eos = self.tokenizer.eos_token_id
        prompts, completions, tokens = [], [], 0
        for row in query_responses.tolist():
            query, response = row[:context_length], row[context_length:]
            length = response.index(eos) + 1 if eos in response else len(response)
            tokens += length
            prompt_ids = [t for t in query if t != self.tokenizer.pad_token_id]
            prompts.append(self.tokenizer.decode(prompt_ids, skip_special_tokens=True))
            completions.append(self.tokenizer.decode(response[:length], skip_special_tokens=True))
        scores = [float(s) for s in self.reward_fn(prompts, completions)]
        self.round_state.update(
            tokens=float(tokens), score=sum(scores) / len(scores), rollout_end=time.perf_counter()
        )
        return torch.tensor(scores, device=query_responses.device)


def train_trl_ppo(
    policy: torch.nn.Module,
    tokenizer: Any,
    reward_fn: RewardFn,
    prompts: list[str],
    args: argparse.Namespace,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` rollouts and updates of ``trl.PPOTrainer`` (trl 0.24): its own
    reference copy and a separate value model (the policy's architecture with a fresh scalar
    head, as TRL's examples build it); one record per rollout."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import PPOTrainer
    from trl.trainer import ppo_trainer

    iterations: list[dict[str, float]] = []
    round_state: dict[str, float] = {"start": time.perf_counter()}
    text_reward = TextReward(reward_fn, tokenizer, round_state)
    original_get_reward = ppo_trainer.get_reward

    def get_reward(model: Any, query_responses: torch.Tensor, pad_id: int, context: int) -> Any:
        if model is text_reward:
            return None, text_reward.score_ids(query_responses, context), None
        return original_get_reward(model, query_responses, pad_id, context)

    class RoundTimer(TrainerCallback):
        """A rollout runs from the previous update's end to this one's; TRL logs once each."""

        def on_log(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            round_state["kl"] = float((kwargs.get("logs") or {})["objective/kl"])  # summed k1

        def on_step_end(self, _args: Any, state: Any, control: Any, **_: Any) -> None:
            iterations.append({**round_record(round_state), "kl": round_state["kl"]})
            round_state["start"] = time.perf_counter()

    ppo_trainer.get_reward = get_reward
    reference, _ = load_policy(args.policy_folder)
    value_model = AutoModelForSequenceClassification.from_pretrained(
        args.policy_folder, num_labels=1
    )
    tokenizer.padding_side = "left"  # TRL generates from left-padded queries
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as output_dir:
        trainer = PPOTrainer(
            args=trl_ppo_config(args, output_dir),
            processing_class=tokenizer,
            model=policy,
            ref_model=reference,
            reward_model=text_reward,
            train_dataset=dataset,
            value_model=value_model,
            callbacks=[RoundTimer()],
        )
        round_state["start"] = time.perf_counter()
        trainer.train()
    ppo_trainer.get_reward = original_get_reward
    if len(iterations) != args.iterations:
        raise RuntimeError(f"TRL PPO ran {len(iterations)} updates, expected {args.iterations}")
    return trainer.policy_model, iterations


# -- one setup in this process ---------------------------------------------------------------------


def run_setup(args: argparse.Namespace) -> dict[str, Any]:
    """Build, train (``args.child``), measure the peak, then evaluate on held-out prompts."""
    from rlhf_env.rewards.by_name import load_reward
    from rlhf_env.rewards.oracles import make_oracle

    setup = args.child
    torch.manual_seed(args.seed)
    policy, tokenizer = load_policy(args.policy_folder)
    reward_fn = load_reward(args.reward, device="cpu")
    oracle = make_oracle(args.gold)
    train_prompts, eval_prompts = prompt_sets(args.train_prompts, args.eval_prompts)
    # Whole prompts on both sides: TRL never cuts a prompt, so the env must not either.
    max_prompt_tokens = max(len(tokenizer(p)["input_ids"]) for p in train_prompts + eval_prompts)
    if setup in TRL_SETUPS:
        # trl imports lazily: load the trainer's modules now, so that their footprint is in
        # the baseline, not in training's share of the peak.
        import trl

        trainers = {"trl-rloo": "RLOOTrainer", "trl-grpo": "GRPOTrainer", "trl-ppo": "PPOTrainer"}
        getattr(trl, trainers[setup])
    rss_before = peak_rss_mib()

    start = time.perf_counter()
    iterations: list[dict[str, float]] = []
    if setup in ("trl-rloo", "trl-grpo"):
        policy, iterations = train_trl(setup, policy, tokenizer, reward_fn, train_prompts, args)
    elif setup == "trl-ppo":
        policy, iterations = train_trl_ppo(policy, tokenizer, reward_fn, train_prompts, args)
    elif setup == "sb3-ppo":
        policy, iterations = train_sb3(
            policy, tokenizer, reward_fn, train_prompts, args, max_prompt_tokens
        )
    elif setup in ("rloo", "grpo", "ppo"):
        policy, iterations = train_ours(
            setup, policy, tokenizer, reward_fn, train_prompts, args, max_prompt_tokens
        )
    train_seconds = time.perf_counter() - start
    peak = peak_rss_mib()

    evaluation = evaluate_trained(
        policy, tokenizer, args.policy_folder, reward_fn, oracle, eval_prompts, args,
        max_prompt_tokens,
    )  # fmt: skip
    return {
        "setup": setup,
        "rss_before_training_mib": round(rss_before, 1),
        "peak_memory_mib": round(peak, 1),
        "train_seconds": round(train_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        **summarise(iterations),
        **{f"eval_{k}": v for k, v in evaluation["summary"].items()},
        "iterations": iterations,
        "eval_samples": evaluation["samples"][:4],
    }


def summarise(iterations: list[dict[str, float]]) -> dict[str, float | None]:
    """Medians after the first (warm-up) iteration, or of the only one."""
    if not iterations:
        keys = ("seconds_per_iteration", "rollout_seconds", "update_seconds")
        return {key: None for key in (*keys, "tokens_per_second", "tokens_per_iteration")}
    timed = iterations[1:] or iterations
    return {
        "seconds_per_iteration": round(statistics.median(i["seconds"] for i in timed), 3),
        "rollout_seconds": round(statistics.median(i["rollout_seconds"] for i in timed), 3),
        "update_seconds": round(statistics.median(i["update_seconds"] for i in timed), 3),
        "tokens_per_second": round(statistics.median(i["tokens"] / i["seconds"] for i in timed), 1),
        "tokens_per_iteration": statistics.mean(i["tokens"] for i in iterations),
    }


# -- the parent: one subprocess per setup, then the table ------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line; errors for sizes TRL or our agents cannot split evenly."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", default="tiny", help="'tiny', a packaged asset name or a model folder")
    add("--setups", nargs="+", default=["trl-rloo", "rloo", "ppo"], choices=SETUPS)
    add("--prompts-per-iteration", type=int, default=4, help="P: prompts per round")
    add("--group-size", type=int, default=4, help="G: answers per prompt (P x G responses)")
    add("--new", type=int, default=16, help="max new tokens per response")
    add("--iterations", type=int, default=3, help="rounds of P x G responses and their updates")
    add("--epochs", type=int, default=1, help="passes over each round (TRL num_iterations)")
    add("--minibatch", type=int, default=8, help="responses per optimizer step")
    add("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    add("--learning-rate", type=float, default=1e-5)
    add("--kl-coef", type=float, default=0.05, help="beta: KL penalty in the reward")
    add("--reward", default="vader", help="'vader', 'textblob' or a reward-model folder")
    add("--gold", default="vader", help="the gold oracle of the evaluation")
    add("--train-prompts", type=int, default=256, help="size of the training prompt set")
    add("--eval-prompts", type=int, default=32, help="held-out prompts, one answer each")
    add("--seed", type=int, default=0)
    add("--out", type=Path, help="JSON file (default: benchmarks/results/vs_trl_MODEL.json)")
    add(
        "--trl-ppo-python",
        default=sys.executable,
        help="the Python of a virtual environment with trl 0.24 (PPOTrainer) for setup trl-ppo",
    )
    add("--replot", type=Path, help="print and plot the rows of an earlier JSON, run nothing")
    add("--child", help=argparse.SUPPRESS)
    add("--policy-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replot:
        return args
    responses = args.prompts_per_iteration * args.group_size
    if args.group_size < 2:
        parser.error("--group-size must be >= 2 (RLOO needs a leave-one-out baseline)")
    if args.minibatch % args.accumulation:
        parser.error(f"--minibatch {args.minibatch} must be a multiple of --accumulation")
    if responses % args.minibatch:
        parser.error(
            f"P x G = {responses} responses must be a multiple of --minibatch {args.minibatch}, "
            "so that TRL and our agents make the same optimizer steps per round"
        )
    if args.train_prompts < args.prompts_per_iteration:
        parser.error("--train-prompts must be at least --prompts-per-iteration")
    needs_trl = sorted(set(args.setups) & {"trl-rloo", "trl-grpo"})
    if needs_trl and importlib.util.find_spec("trl") is None:
        parser.error(f"setups {needs_trl} need trl (pip install trl==1.16.0), or leave them out")
    if "trl-ppo" in args.setups and args.accumulation != 1:
        parser.error("trl-ppo maps --minibatch to TRL PPO's minibatches: use --accumulation 1")
    return args


def run_children(args: argparse.Namespace, folder: str) -> list[dict[str, Any]]:
    """Each setup in its own Python process; its result row from the last marked line."""
    rows = []
    for setup in args.setups:
        python = args.trl_ppo_python if setup == "trl-ppo" else sys.executable
        command = [
            python, __file__, *sys.argv[1:], "--child", setup, "--policy-folder", folder,
        ]  # fmt: skip
        print(f"running {setup} ...", file=sys.stderr, flush=True)
        output = subprocess.run(command, capture_output=True, text=True)
        marked = [line for line in output.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if output.returncode or not marked:
            raise SystemExit(f"setup {setup} failed:\n{output.stderr[-3000:]}")
        rows.append(json.loads(marked[-1].removeprefix(RESULT_PREFIX)))
    return rows


def package_versions() -> dict[str, str | None]:
    """Python's, torch's, transformers' and trl's versions in this process."""
    versions: dict[str, str | None] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for package in ("transformers", "trl"):
        spec = importlib.util.find_spec(package)
        versions[package] = __import__(package).__version__ if spec else None
    return versions


def print_table(rows: list[dict[str, Any]]) -> None:
    """A markdown table; ratios are to TRL's row when there is one."""
    trl = next((row for row in rows if row["setup"] == "trl-rloo"), None)

    def ratio(row: dict[str, Any], key: str) -> str:
        if trl is None or row[key] is None or not trl[key]:
            return "-"
        return f"{row[key] / trl[key]:.2f}x"

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print(
        "| setup | s/iter | vs TRL | rollout s | update s | tok/s | vs TRL | peak MiB | vs TRL "
        "| gold | learned | KL |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        gold = f"{row['eval_gold_score']:+.3f} ± {row['eval_gold_score_sem']:.3f}"
        print(
            f"| {row['setup']} | {number(row['seconds_per_iteration'], 2)} "
            f"| {ratio(row, 'seconds_per_iteration')} | {number(row['rollout_seconds'], 2)} "
            f"| {number(row['update_seconds'], 2)} | {number(row['tokens_per_second'], 1)} "
            f"| {ratio(row, 'tokens_per_second')} | {row['peak_memory_mib']:.0f} "
            f"| {ratio(row, 'peak_memory_mib')} | {gold} | {row['eval_learned_score']:+.3f} "
            f"| {row['eval_kl']:.2f} |"
        )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels: tokens/s per setup, and held-out gold against KL (with standard errors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, quality) = plt.subplots(1, 2, figsize=(11, 4))
    trained = [row for row in rows if row["tokens_per_second"] is not None]
    colours = ["tab:gray" if row["setup"].startswith(("trl", "sb3")) else "tab:blue"
               for row in trained]  # fmt: skip
    speed.barh([row["setup"] for row in trained], [row["tokens_per_second"] for row in trained],
               color=colours)  # fmt: skip
    speed.invert_yaxis()
    speed.set_xlabel("generated tokens / s (training, median iteration)")
    speed.set_title("throughput on equal work (blue: ours)")
    for row in rows:
        quality.errorbar(row["eval_kl"], row["eval_gold_score"], yerr=row["eval_gold_score_sem"],
                         fmt="o", capsize=3)  # fmt: skip
        quality.annotate(row["setup"], (row["eval_kl"], row["eval_gold_score"]),
                         textcoords="offset points", xytext=(5, 4), fontsize=8)  # fmt: skip
    quality.set_xlabel("KL to the initial policy (nats / response, held-out)")
    quality.set_ylabel("held-out gold score (± s.e.)")
    quality.set_title("gold reward after the same budget")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    """Parent: materialise the policy, run each setup in a subprocess, print and write."""
    args = parse_args()
    if args.replot:
        rows = json.loads(args.replot.read_text())["rows"]
        print_table(rows)
        plot(rows, args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.png')}")
        return
    if args.child:
        print(RESULT_PREFIX + json.dumps(run_setup(args)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="vs_trl_policy_") as scratch:
        folder = materialise_policy(args.model, Path(scratch))
        rows = run_children(args, folder)
    print_table(rows)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, cpu",
        "versions": package_versions(),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("child", "policy_folder")},
        "rows": rows,
    }
    out = args.out or RESULTS / f"vs_trl_{Path(str(args.model)).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
