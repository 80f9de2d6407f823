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

Time to a result on the Arithmetic task (``--task arithmetic``): held-out exact match against
training wall-clock minutes, TRL's GRPOTrainer (or RLOOTrainer) against our RLOO / GRPO, each
with its own best setup, on the same policy, prompts, reward, threads and evaluation:
    - prompts: ``--train-prompts`` problems (default 1024) drawn once, seeded, with the task's
      own sampler (``rlhf_env.tasks.arithmetic``: 2 one-digit terms, chat prompts with 2 worked
      examples, no held-out question among them); the same list for every setup;
    - reward: the task's ``ArithmeticReward.exact_match`` (1 when the response's last
      ``<answer>`` tag holds the right integer, else 0): TRL's reward function, our env's;
    - a round: P = 4 problems x G = 8 answers (TRL: num_generations = 8), at most ``--new``
      tokens (default: the task's own, 32 for SmolLM2), temperature 1; one epoch in minibatches
      of 16 responses, two optimizer steps a round (the mapping above);
    - ours (rloo, grpo): the recipe that raised exact match in benchmarks/RESULTS.md
      ("Arithmetic: RL raises held-out exact match"): ``--training-setup frozen:24`` (the top 6
      of SmolLM2's 30 blocks train; the reference shares the frozen ones), lr 1e-4, beta 0.01;
    - TRL: full fine-tuning, or with ``--trl-lora R`` peft LoRA of rank R on every linear layer,
      alpha 32, no dropout (TRL's "LoRA Without Regret" guide); ``--trl-learning-rate``
      (default 1e-5 full, 1e-4 LoRA: 10x TRL's documented 1e-6 and 1e-5, GRPOConfig's default
      and the guide's, which are for runs of hundreds of steps; 20 minutes here are a few
      dozen optimizer steps, and 1e-5 is what this repo's own full fine-tuning probe used);
      ``--trl-beta`` (default 0, GRPOConfig's own: no KL term, no reference model); loss "dapo"
      with group-scaled rewards (GRPOConfig's defaults); float32 without gradient checkpointing
      (TRL's bf16 and checkpointing defaults are for GPUs; on a CPU they cost time);
    - the clock: a setup's training minutes run from the start of building the trainer (TRL) or
      the env and agent (ours) and stop while the policy is evaluated. At every round end (TRL:
      a ``TrainerCallback`` after the round's last optimizer step; ours: ``learn``'s callback)
      each ``--eval-at`` mark passed is evaluated (marks passed together share one evaluation),
      and training stops at the first round end past ``--minutes`` (TRL: ``--trl-minutes``),
      evaluated as a last mark;
    - the evaluation, one function for every setup (``evaluate_exact_match``): each of the
      task's ``--eval-prompts`` held-out problems (default 64) answered ``--eval-samples`` times
      (default 2) at temperature 1 by the current policy in a fresh vector env, with the same
      seed at every mark: mean exact match, its standard error (over the responses) and the
      split by the sign of the answer (negative answers against the others); with
      ``--eval-kl`` also the KL to the initial model (the reference's forward beside the
      policy's; without it the policy is its own reference: one forward a token, KL 0).
    The table: exact match at each mark, the final one split by the sign of the answer, and
    for ours the training minutes at which it first matched TRL's final exact match, with
    TRL's minutes over those (the issue's target: 3x). The JSON's rows hold each setup's
    ``curve`` (per evaluation: ``mark``, training ``minutes``, generated ``tokens`` so far,
    ``exact_match``, ``stderr``, the split, ``kl``, ``eval_seconds``) and its ``iterations``.

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
    - arithmetic, by design (each its own best setup): TRL trains every weight (or LoRA
      adapters) at its learning rate with no KL term (beta 0, TRL's default); ours trains the
      top 6 blocks at 1e-4 and pays beta 0.01 x the k1 KL in the reward, stepping a reference
      beside the policy (its frozen blocks shared); with ``--kl-coef 0`` ours keeps no
      reference model either (the env's reference is the policy itself: one forward a token).
      Our rloo's advantage is the leave-one-out one, not scaled; TRL GRPO (and our grpo)
      divide by the group's std.
    - arithmetic: marks are evaluated at round ends, so up to a round late, and a round of
      TRL's takes longer than ours: the curve records the training minutes at which each
      evaluation ran (``minutes``, besides its ``mark``), and "minutes to TRL's final" reads
      those. TRL's last evaluation is past ``--trl-minutes`` by up to a round, ours past
      ``--minutes`` by up to one of ours.
    - arithmetic: TRL passes over the prompt list in shuffled epochs; ours draws from it with
      replacement (the list has about 130 distinct problems many times over, so both see the
      task's distribution).
    - arithmetic: the standard error treats the ``--eval-samples`` answers to a problem as
      independent (they share the problem), so it is somewhat optimistic.

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
    python benchmarks/vs_trl.py --task arithmetic --model tiny --setups rloo --new 4 \\
        --minutes 0.1 --eval-at 0 0.05 0.1 --eval-prompts 8 --training-setup frozen:1  # smoke
    OMP_NUM_THREADS=2 python benchmarks/vs_trl.py --task arithmetic \\
        --model smollm2-135m-instruct --setups trl-grpo rloo grpo --trl-minutes 20 \\
        --minutes 8 --eval-at 0 1 2 3 4 5 6 8 10 15 20  # time to TRL's 20-minute result
    python benchmarks/vs_trl.py --summarise-seeds seed0.json seed1.json seed2.json  # (--seed N)
        # per seed, TRL's final against ours within a third of its minutes; the mean
        # difference over the seeds, paired by seed, with a t-interval and a verdict
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

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
SETUPS = ("initial", "trl-rloo", "trl-grpo", "trl-ppo", "rloo", "grpo", "ppo", "sb3-ppo")
TRL_SETUPS = ("trl-rloo", "trl-grpo", "trl-ppo")
#: The setups of ``--task arithmetic`` (time to a result).
TIMED_SETUPS = ("trl-rloo", "trl-grpo", "rloo", "grpo")
RESULT_PREFIX = "VS_TRL_RESULT "
#: The defaults that depend on ``--task``: the IMDB comparison's (equal work), and the recipe
#: that works on Arithmetic (``new`` None: the task's own ``max_new_tokens``).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "imdb": {
        "setups": ["trl-rloo", "rloo", "ppo"], "prompts_per_iteration": 4, "group_size": 4,
        "new": 16, "minibatch": 8, "learning_rate": 1e-5, "kl_coef": 0.05,
        "train_prompts": 256, "eval_prompts": 32,
    },
    "arithmetic": {
        "setups": ["trl-grpo", "rloo", "grpo"], "prompts_per_iteration": 4, "group_size": 8,
        "new": None, "minibatch": 16, "learning_rate": 1e-4, "kl_coef": 0.01,
        "train_prompts": 1024, "eval_prompts": 64, "training_setup": "frozen:24",
    },
}  # fmt: skip
#: TRL's learning rate under ``--task arithmetic``: full fine-tuning, and LoRA at 10x (TRL's
#: "LoRA Without Regret" guide); LoRA's alpha as the guide sets it.
TRL_LEARNING_RATE = {"full": 1e-5, "lora": 1e-4}
TRL_LORA_ALPHA = 32

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
    *,
    reference: torch.nn.Module | None = None,
    clock: TrainingClock | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` iterations of ``RLOOAgent`` (``baseline`` "rloo" or "grpo") or
    ``PPOAgent``; the trained policy and one record per iteration. With ``clock``, iterations
    until the clock says stop (it evaluates at its marks after each); ``reference``: the env's
    (None: a frozen copy of the policy)."""
    from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent, RLOOConfig

    env = make_env(
        policy, tokenizer, reward_fn, prompts, args, max_prompt_tokens, reference=reference
    )
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
        if clock is not None:
            return clock.tick(policy, agent.num_timesteps)
        return len(iterations) < args.iterations

    # At most num_envs x new tokens an iteration: the callback, not the budget, ends the run.
    budget = sys.maxsize if clock is not None else args.iterations * num_envs * args.new + 1
    agent.learn(budget, callback=record)
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
    *,
    peft_config: Any = None,
    clock: TrainingClock | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """``args.iterations`` generation rounds of ``trl.RLOOTrainer`` or ``trl.GRPOTrainer``; the
    trained policy and one record per round (timed by a ``TrainerCallback``, tokens counted in
    the reward call). With ``clock``, rounds until the clock says stop (it evaluates at its
    marks after each round, from a ``TrainerCallback``); ``peft_config``: TRL's LoRA."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer, RLOOTrainer

    responses = args.prompts_per_iteration * args.group_size
    steps_per_iteration = args.epochs * responses // args.minibatch
    iterations: list[dict[str, float]] = []
    round_state: dict[str, float] = {"generated": 0.0}

    def reward(
        prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        """Our reward function under TRL's signature; counts the round's tokens."""
        scores = [float(s) for s in reward_fn(prompts, completions)]
        round_state["tokens"] = float(sum(len(ids) for ids in completion_ids))
        round_state["generated"] += round_state["tokens"]
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

    class Marks(TrainerCallback):
        """At a round's end (after RoundTimer's record): the clock's marks and its stop."""

        def on_step_end(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if clock is None or state.global_step % steps_per_iteration:
                return
            if not clock.tick(kwargs.get("model", policy), round_state["generated"]):
                control.should_training_stop = True

    trainer_class = RLOOTrainer if setup == "trl-rloo" else GRPOTrainer
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as output_dir:
        trainer = trainer_class(
            model=policy,
            reward_funcs=reward,
            args=trl_config(setup, args, output_dir),
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[RoundTimer(), Marks()],
            peft_config=peft_config,
        )
        trainer.train()
    if clock is None and len(iterations) != args.iterations:
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


# -- the Arithmetic task: held-out exact match against training minutes (--task arithmetic) -------


def arithmetic_task(policy: torch.nn.Module, tokenizer: Any, args: argparse.Namespace) -> Any:
    """The Arithmetic task for ``policy``'s tokenizer (2 one-digit terms, 2 worked examples,
    none for ``tiny``, whose context is short), ``--eval-prompts`` held-out problems, as
    reasoning-gym draws them: the recorded comparison's problems, from before the task's
    default balanced the signs and mixed in longer problems (``negative_share=None,
    harder_share=0``), so that new runs compare with the recorded ones."""
    from rlhf_env.tasks.arithmetic import SPEC, build
    from rlhf_env.tasks.base import TaskContext

    options: dict[str, Any] = {
        "eval_size": args.eval_prompts, "negative_share": None, "harder_share": 0.0
    }  # fmt: skip
    if args.model == "tiny":
        options["demonstrations"] = SPEC.smoke_options["demonstrations"]
    return build(TaskContext(policy, tokenizer, torch.device("cpu"), progress=False), **options)


def draw_training_prompts(task: Any, count: int, seed: int) -> list[str]:
    """``count`` training prompts from the task's own sampler (fresh problems, never a held-out
    question), drawn with a generator seeded by ``seed``: the same list in every setup's
    process. The task's reward remembers their answers."""
    rng = np.random.default_rng(seed)
    return [task.train_prompts(rng) for _ in range(count)]


def evaluate_exact_match(
    policy: torch.nn.Module,
    tokenizer: Any,
    task: Any,
    args: argparse.Namespace,
    max_prompt_tokens: int,
    reference: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """The held-out evaluation of every setup, at every mark: each of the task's held-out
    problems answered ``args.eval_samples`` times by ``policy`` (temperature 1, the same seed
    each time) in a fresh vector env, scored by the task's exact match. ``reference``: the
    initial model, for the KL to it (None: the policy is its own reference, one forward a
    token, KL 0). The mean, its standard error, the split by the sign of the answer, the mean
    KL and length, the evaluation's seconds and the first responses."""
    from rlhf_pipeline.held_out import evaluate_policy

    started = time.perf_counter()
    exact_match = task.reward_fn.exact_match
    was_training = policy.training
    env = make_env(
        policy.eval(), tokenizer, exact_match, task.eval_prompts, args, max_prompt_tokens,
        reference=policy if reference is None else reference,
    )  # fmt: skip
    result = evaluate_policy(
        env, task.eval_prompts * args.eval_samples, gold={"exact_match": exact_match},
        seed=args.seed + 1, fluency=False,
    )  # fmt: skip
    env.close()
    policy.train(was_training)
    samples = result["samples"]
    answers = task.reward_fn.problems.answers([sample["prompt"] for sample in samples])
    by_sign: dict[str, list[float]] = {"negative": [], "non_negative": []}
    for (answer, _), sample in zip(answers, samples, strict=True):
        by_sign["negative" if answer < 0 else "non_negative"].append(sample["gold"])
    summary = result["summary"]
    return {
        "exact_match": summary["gold_score"],
        "stderr": summary["gold_score_sem"],
        **{
            f"exact_match_{sign}": statistics.fmean(values) if values else None
            for sign, values in by_sign.items()
        },
        **{f"responses_{sign}": len(values) for sign, values in by_sign.items()},
        "kl": summary["kl"],
        "response_length": summary["response_length"],
        "eval_seconds": round(time.perf_counter() - started, 2),
        "samples": [
            {"prompt": s["prompt"][-60:], "response": s["response"], "exact_match": s["gold"]}
            for s in samples[:4]
        ],
    }


class TrainingClock:
    """A setup's training wall-clock, stopped while the policy is evaluated.

    ``tick`` (at a round's end) evaluates the policy once when marks (minutes) have passed,
    records one curve point per mark passed, and says whether to train on: False once
    ``minutes`` have passed (``minutes`` is always a mark, so the last round is evaluated).

    Args:
        marks: minutes of training at which to evaluate (those past ``minutes`` are dropped).
        minutes: the training budget.
        evaluate: ``evaluate(policy) -> figures`` (``evaluate_exact_match``'s).
    """

    def __init__(
        self,
        marks: Sequence[float],
        minutes: float,
        evaluate: Callable[[torch.nn.Module], dict[str, Any]],
    ) -> None:
        self.minutes = minutes
        self.pending = sorted({mark for mark in marks if mark <= minutes} | {minutes})
        self.evaluate = evaluate
        self.curve: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}
        self.paused = 0.0
        self.started = time.perf_counter()

    def seconds(self) -> float:
        """Training seconds so far: wall seconds since the start, evaluations excluded."""
        return time.perf_counter() - self.started - self.paused

    def tick(self, policy: torch.nn.Module, tokens: float) -> bool:
        """Evaluate ``policy`` if marks have passed (``tokens``: generated so far, for the
        record); whether to train on."""
        elapsed = self.seconds()
        passed = [mark for mark in self.pending if mark * 60 <= elapsed]
        if passed:
            began = time.perf_counter()
            self.last = self.evaluate(policy)
            self.paused += time.perf_counter() - began
            figures = {key: value for key, value in self.last.items() if key != "samples"}
            for mark in passed:
                point = {"mark": mark, "minutes": round(elapsed / 60, 3), "tokens": float(tokens)}
                self.curve.append({**point, **figures})
            self.pending = self.pending[len(passed) :]
            print(
                f"  {elapsed / 60:.2f} min, {tokens:.0f} tokens: exact match "
                f"{figures['exact_match']:.3f} ± {figures['stderr']:.3f}",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        return elapsed < self.minutes * 60


def trl_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` as ``trl_config`` reads them for TRL under ``--task arithmetic``: TRL's own
    learning rate and beta, and no round limit (its clock stops it)."""
    learning_rate = args.trl_learning_rate
    if learning_rate is None:
        learning_rate = TRL_LEARNING_RATE["lora" if args.trl_lora else "full"]
    changed = {"learning_rate": learning_rate, "kl_coef": args.trl_beta, "iterations": 10**6}
    return argparse.Namespace(**{**vars(args), **changed})


def trl_peft_config(args: argparse.Namespace) -> Any:
    """``--trl-lora R``: peft LoRA of rank R on every linear layer, alpha 32, no dropout (TRL's
    "LoRA Without Regret" guide); None: full fine-tuning."""
    if not args.trl_lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=args.trl_lora, lora_alpha=TRL_LORA_ALPHA, lora_dropout=0.0,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )  # fmt: skip


def run_timed_setup(args: argparse.Namespace) -> dict[str, Any]:
    """One setup of ``--task arithmetic``: evaluate the initial policy (mark 0), train until its
    minutes have passed, evaluating at the marks, and return its curve."""
    from rlhf_env.models.efficient import apply_training_setup

    setup = args.child
    is_trl = setup in TRL_SETUPS
    torch.manual_seed(args.seed)
    policy, tokenizer = load_policy(args.policy_folder)
    task = arithmetic_task(policy, tokenizer, args)
    if args.new is None:
        args.new = int(task.env_options["max_new_tokens"])
    train_prompts = draw_training_prompts(task, args.train_prompts, args.seed)
    # Whole prompts on both sides: TRL never cuts a prompt, so the env must not either.
    prompts = train_prompts + task.eval_prompts
    max_prompt_tokens = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    reference = None
    if args.eval_kl:
        reference, _ = load_policy(args.policy_folder)
        reference.requires_grad_(False)
    if is_trl:
        import trl  # its trainer's modules now, outside the clock (see run_setup)

        getattr(trl, "RLOOTrainer" if setup == "trl-rloo" else "GRPOTrainer")
    rss_before = peak_rss_mib()

    def evaluate(model: torch.nn.Module) -> dict[str, Any]:
        return evaluate_exact_match(model, tokenizer, task, args, max_prompt_tokens, reference)

    clock = TrainingClock(args.eval_at, args.trl_minutes if is_trl else args.minutes, evaluate)
    clock.tick(policy, 0.0)  # mark 0: the initial policy
    reward_fn = task.reward_fn.exact_match
    if is_trl:
        trl_args = trl_arguments(args)
        policy, iterations = train_trl(
            setup, policy, tokenizer, reward_fn, train_prompts, trl_args,
            peft_config=trl_peft_config(args), clock=clock,
        )  # fmt: skip
        what_trains = f"lora:{args.trl_lora}" if args.trl_lora else "full"
        learning_rate, beta = trl_args.learning_rate, trl_args.kl_coef
    else:
        policy, training_reference = apply_training_setup(policy, args.training_setup)
        if args.kl_coef == 0:  # no KL term: no reference model either (as TRL at beta 0)
            training_reference = policy  # its own reference: one forward a token, KL 0
        policy, iterations = train_ours(
            setup, policy, tokenizer, reward_fn, train_prompts, args, max_prompt_tokens,
            reference=training_reference, clock=clock,
        )  # fmt: skip
        what_trains, learning_rate, beta = args.training_setup, args.learning_rate, args.kl_coef
    if clock.pending:
        raise RuntimeError(f"{setup} stopped before the marks {clock.pending} (minutes)")
    return {
        "setup": setup,
        "task": "arithmetic",
        "training_setup": what_trains,
        "learning_rate": learning_rate,
        "beta": beta,
        "max_new_tokens": args.new,
        "minutes_budget": clock.minutes,
        "training_minutes": round(clock.seconds() / 60, 3),
        "rss_before_training_mib": round(rss_before, 1),
        "peak_memory_mib": round(peak_rss_mib(), 1),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        **summarise(iterations),
        "final_exact_match": clock.curve[-1]["exact_match"],
        "curve": clock.curve,
        "iterations": iterations,
        "eval_samples": clock.last.get("samples", []),
    }


def minutes_to_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    """The training minutes of the first evaluation at or above ``target`` (None: never)."""
    return next((point["minutes"] for point in curve if point["exact_match"] >= target), None)


def reference_trl_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The TRL row the others are measured against: trl-grpo's, else trl-rloo's."""
    by_setup = {row["setup"]: row for row in rows}
    return by_setup.get("trl-grpo") or by_setup.get("trl-rloo")


def print_curve_table(rows: list[dict[str, Any]]) -> None:
    """A markdown table: exact match (± s.e.) at each mark, and the minutes to TRL's final."""
    marks = sorted({point["mark"] for row in rows for point in row["curve"]})
    trl = reference_trl_row(rows)
    print(
        "| setup | trains | s/iter | tok/s | "
        + " | ".join(f"{mark:g} min" for mark in marks)
        + " | final (min) | final: negative / other answers | min to TRL's final "
        "| TRL min / that |"
    )
    print("|---" * (len(marks) + 8) + "|")
    for row in rows:
        at = {point["mark"]: point for point in row["curve"]}
        cells = [
            f"{at[mark]['exact_match']:.3f} ± {at[mark]['stderr']:.3f}" if mark in at else "-"
            for mark in marks
        ]
        last = row["curve"][-1]
        reach, ratio = "-", "-"
        if trl is not None and row is not trl:
            minutes = minutes_to_reach(row["curve"], trl["final_exact_match"])
            if minutes is None:
                reach = "not reached"
            elif minutes == 0:
                reach = "0 (initial policy)"
            else:
                reach = f"{minutes:.2f}"
                ratio = f"{trl['curve'][-1]['minutes'] / minutes:.1f}x"
        seconds = row["seconds_per_iteration"]
        speed = row["tokens_per_second"]
        print(
            f"| {row['setup']} | {what_trains(row)} | "
            f"{'-' if seconds is None else f'{seconds:.1f}'} | "
            f"{'-' if speed is None else f'{speed:.1f}'} | "
            + " | ".join(cells)
            + f" | {last['exact_match']:.3f} ({last['minutes']:.2f}) | {by_sign(last)} "
            f"| {reach} | {ratio} |"
        )
    if trl is not None:
        print(
            f"\nTRL's final: {trl['final_exact_match']:.3f} after "
            f"{trl['curve'][-1]['minutes']:.2f} training minutes ({trl['setup']}); the target is "
            "to reach it in a third of TRL's minutes (TRL min / that >= 3x)."
        )


def summarise_seeds(paths: Sequence[Path], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Time to a result over several runs of ``--task arithmetic`` (one JSON per seed): per
    seed, TRL's final exact match and each of our setups' at the last evaluation within a third
    of TRL's training minutes; per setup, the difference (ours - TRL) paired by seed (the same
    training problems and evaluation draws), its mean and t-interval over the seeds. Prints a
    Markdown table and a verdict per setup; returns the table's rows."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    table = []
    for run in runs:
        trl = reference_trl_row(run["rows"])
        if trl is None:
            raise ValueError(f"{len(table)}: a file without a TRL row; run trl-grpo in each")
        third = trl["curve"][-1]["minutes"] / 3
        for row in (row for row in run["rows"] if row is not trl):
            within = [point for point in row["curve"] if point["minutes"] <= third]
            table.append({
                "seed": run["arguments"]["seed"], "setup": f"{row['setup']}, {what_trains(row)}",
                "trl": trl["final_exact_match"], "trl_minutes": trl["curve"][-1]["minutes"],
                "ours": within[-1]["exact_match"], "ours_minutes": within[-1]["minutes"],
                "reached": minutes_to_reach(row["curve"], trl["final_exact_match"]),
            })  # fmt: skip
    print(
        "| seed | ours | TRL's final (min) | ours within a third of that (min) | ours - TRL "
        "| ours: min to TRL's final |\n|---|---|---|---|---|---|"
    )
    for line in table:
        reached = "not reached" if line["reached"] is None else f"{line['reached']:.1f}"
        print(
            f"| {line['seed']} | {line['setup']} | {line['trl']:.3f} ({line['trl_minutes']:.1f}) "
            f"| {line['ours']:.3f} ({line['ours_minutes']:.1f}) "
            f"| {line['ours'] - line['trl']:+.3f} | {reached} |"
        )
    for setup in dict.fromkeys(line["setup"] for line in table):
        mine = [line for line in table if line["setup"] == setup]
        print(f"\n{setup}: " + seed_verdict(mine, confidence))
    return table


def seed_verdict(lines: Sequence[dict[str, Any]], confidence: float) -> str:
    """TRL's final and ours within a third of its minutes, averaged over the seeds, and their
    difference with a t-interval over the seeds (none for one seed)."""
    from rlhf_pipeline.statistics import t_quantile

    differences = np.array([line["ours"] - line["trl"] for line in lines])
    mean = float(differences.mean())
    text = (
        f"{len(lines)} seeds, TRL's final {np.mean([line['trl'] for line in lines]):.3f}, ours "
        f"within a third of its minutes {np.mean([line['ours'] for line in lines]):.3f}, "
        f"difference {mean:+.3f}"
    )
    if differences.size < 2:
        return text + " (one seed: no interval)"
    spread = differences.std(ddof=1) / np.sqrt(differences.size)
    half = t_quantile(confidence, differences.size - 1) * spread
    low, high = max(-1.0, mean - half), min(1.0, mean + half)
    if low > 0 or high < 0:
        verdict = "target met" if low > 0 else "target not met"
    else:
        verdict = f"within noise; the mean is {'at or above' if mean >= 0 else 'below'} TRL's"
    return text + f" [{low:+.3f}, {high:+.3f}] ({confidence:.0%} t over seeds): {verdict}"


def what_trains(row: dict[str, Any]) -> str:
    """A time-to-result row's training setup, learning rate and beta, e.g. ``full, lr 1e-05,
    beta 0``."""
    return f"{row['training_setup']}, lr {row['learning_rate']:g}, beta {row['beta']:g}"


def by_sign(point: dict[str, Any]) -> str:
    """An evaluation's exact match on problems with a negative answer / on the others."""
    values = (point["exact_match_negative"], point["exact_match_non_negative"])
    return " / ".join("-" if value is None else f"{value:.3f}" for value in values)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Held-out exact match (± s.e.) against training minutes, one line per setup; TRL's final
    value dashed, a third of its minutes dotted (the target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        points = {(p["minutes"], p["exact_match"], p["stderr"]) for p in row["curve"]}
        minutes, values, errors = zip(*sorted(points), strict=True)
        label = f"{row['setup']} ({what_trains(row)})"
        axes.errorbar(minutes, values, yerr=errors, marker="o", capsize=3, label=label,
                      linestyle="--" if row["setup"].startswith("trl") else "-")  # fmt: skip
    trl = reference_trl_row(rows)
    if trl is not None:
        axes.axhline(trl["final_exact_match"], color="gray", linestyle=":", linewidth=1)
        axes.axvline(trl["curve"][-1]["minutes"] / 3, color="gray", linestyle=":", linewidth=1)
    axes.set_xlabel("training minutes (evaluations excluded)")
    axes.set_ylabel("held-out exact match (± s.e.)")
    axes.set_title("Arithmetic: time to a result (dotted: TRL's final, a third of its time)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- the parent: one subprocess per setup, then the table ------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line; options left unset take ``--task``'s defaults (``TASK_DEFAULTS``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument

    def task_default(key: str) -> str:
        imdb, arithmetic = TASK_DEFAULTS["imdb"][key], TASK_DEFAULTS["arithmetic"][key]
        arithmetic = "the task's own" if arithmetic is None else arithmetic
        return f"(default {imdb}; arithmetic: {arithmetic})"

    add(
        "--task",
        choices=tuple(TASK_DEFAULTS),
        default="imdb",
        help="imdb: equal work on IMDB openings (the default); arithmetic: held-out exact match "
        "against training minutes",
    )
    add("--model", default="tiny", help="'tiny', a packaged asset name or a model folder")
    add(
        "--setups",
        nargs="+",
        choices=SETUPS,
        help=f"{task_default('setups')} arithmetic takes {', '.join(TIMED_SETUPS)}",
    )
    add(
        "--prompts-per-iteration",
        type=int,
        help=f"P: prompts per round {task_default('prompts_per_iteration')}",
    )
    add(
        "--group-size",
        type=int,
        help=f"G: answers per prompt (P x G responses) {task_default('group_size')}",
    )
    add("--new", type=int, help=f"max new tokens per response {task_default('new')}")
    add("--iterations", type=int, default=3, help="rounds of P x G responses and their updates")
    add("--epochs", type=int, default=1, help="passes over each round (TRL num_iterations)")
    add("--minibatch", type=int, help=f"responses per optimizer step {task_default('minibatch')}")
    add("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    add(
        "--learning-rate",
        type=float,
        help=f"ours, and TRL's under imdb {task_default('learning_rate')}",
    )
    add("--kl-coef", type=float, help=f"beta: KL penalty in the reward {task_default('kl_coef')}")
    add("--reward", default="vader", help="'vader', 'textblob' or a reward-model folder")
    add("--gold", default="vader", help="the gold oracle of the evaluation")
    add(
        "--train-prompts",
        type=int,
        help=f"size of the training prompt set {task_default('train_prompts')}",
    )
    add(
        "--eval-prompts",
        type=int,
        help=f"held-out prompts (arithmetic: problems) {task_default('eval_prompts')}",
    )
    add("--seed", type=int, default=0)
    add(
        "--out",
        type=Path,
        help="JSON file (default: benchmarks/results/vs_trl_MODEL.json; arithmetic: "
        "vs_trl_arithmetic_MODEL.json)",
    )
    add(
        "--trl-ppo-python",
        default=sys.executable,
        help="the Python of a virtual environment with trl 0.24 (PPOTrainer) for setup trl-ppo",
    )
    arithmetic = parser.add_argument_group("--task arithmetic (time to a result)")
    add = arithmetic.add_argument
    add("--minutes", type=float, default=10.0, help="our setups' training minutes")
    add("--trl-minutes", type=float, help="TRL's training minutes (default: --minutes)")
    add(
        "--eval-at",
        type=float,
        nargs="+",
        default=[0, 2.5, 5, 7.5, 10, 15, 20],
        help="training minutes at which to evaluate (and at each setup's last)",
    )
    add("--eval-samples", type=int, default=2, help="answers per held-out problem")
    add(
        "--eval-kl",
        action="store_true",
        help="also measure the KL to the initial model (a reference forward per token)",
    )
    add(
        "--training-setup",
        help="what of ours trains: 'full', 'frozen:N' or 'lora:R' (default frozen:24)",
    )
    add(
        "--trl-learning-rate",
        type=float,
        help=f"TRL's (default {TRL_LEARNING_RATE['full']:g}, with --trl-lora "
        f"{TRL_LEARNING_RATE['lora']:g})",
    )
    add(
        "--trl-lora",
        type=int,
        metavar="R",
        help=f"TRL trains peft LoRA of rank R (alpha {TRL_LORA_ALPHA}), not every weight",
    )
    add("--trl-beta", type=float, default=0.0, help="TRL's beta (default 0, GRPOConfig's)")
    add = parser.add_argument
    add("--replot", type=Path, help="print and plot the rows of an earlier JSON, run nothing")
    add(
        "--summarise-seeds",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="--task arithmetic JSONs, one per --seed: TRL's final against ours within a third "
        "of its minutes, seed by seed, and the mean difference with its interval; run nothing",
    )
    add("--child", help=argparse.SUPPRESS)
    add("--policy-folder", help=argparse.SUPPRESS)
    return parser


def parse_args() -> argparse.Namespace:
    """The command line with ``--task``'s defaults filled in; errors for sizes TRL or our agents
    cannot split evenly, and for options of the other task."""
    parser = build_parser()
    args = parser.parse_args()
    if args.replot or args.summarise_seeds:
        return args
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.trl_minutes is None:
        args.trl_minutes = args.minutes
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
    check_task_arguments(parser, args)
    return args


def check_task_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Errors for ``--task arithmetic``'s options under imdb, and for its impossible values."""
    if args.task != "arithmetic":
        given = [name for name in ("training_setup", "trl_lora") if getattr(args, name)]
        if given:
            parser.error(f"{given} apply to --task arithmetic only")
        return
    from rlhf_env.models.efficient import TRAINING_SETUP, TRAINING_SETUP_HELP

    others = sorted(set(args.setups) - set(TIMED_SETUPS))
    if others:
        parser.error(f"--task arithmetic runs {', '.join(TIMED_SETUPS)}, not {others}")
    if not TRAINING_SETUP.match(args.training_setup):
        parser.error(f"--training-setup must be {TRAINING_SETUP_HELP}")
    if min(args.minutes, args.trl_minutes) <= 0 or min(args.eval_at) < 0:
        parser.error("--minutes and --trl-minutes must be > 0, --eval-at marks >= 0")
    if args.eval_samples < 1 or (args.trl_lora is not None and args.trl_lora < 1):
        parser.error("--eval-samples and --trl-lora must be >= 1")


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


def report(rows: list[dict[str, Any]], path: Path) -> None:
    """Print the table and write the plot of either comparison (rows with a ``curve`` are
    ``--task arithmetic``'s)."""
    if rows and "curve" in rows[0]:
        print_curve_table(rows)
        plot_curves(rows, path)
    else:
        print_table(rows)
        plot(rows, path)


def main() -> None:
    """Parent: materialise the policy, run each setup in a subprocess, print and write."""
    args = parse_args()
    if args.summarise_seeds:
        summarise_seeds(args.summarise_seeds)
        return
    if args.replot:
        rows = json.loads(args.replot.read_text())["rows"]
        report(rows, args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.png')}")
        return
    if args.child:
        row = run_timed_setup(args) if args.task == "arithmetic" else run_setup(args)
        print(RESULT_PREFIX + json.dumps(row), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="vs_trl_policy_") as scratch:
        folder = materialise_policy(args.model, Path(scratch))
        rows = run_children(args, folder)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, cpu",
        "versions": package_versions(),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("child", "policy_folder")},
        "rows": rows,
    }
    task = "" if args.task == "imdb" else f"{args.task}_"
    out = args.out or RESULTS / f"vs_trl_{task}{Path(str(args.model)).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
