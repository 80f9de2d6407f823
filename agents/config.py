"""Configuration dataclasses of the learning agents: one field per knob, each documented."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_env.config import check
from rlhf_env.config import option as _option


@dataclass
class PolicyGradientConfig:
    """What every policy-gradient agent here shares: rollouts, optimisation, KL control,
    devices, logging and checkpoints."""

    learning_rate: float = _option(1e-5, "AdamW learning rate.")
    lr_schedule: str = _option(
        "constant",
        "'constant', or 'linear' decay to 0 at learn()'s total_timesteps.",
        choices=("constant", "linear"),
    )
    weight_decay: float = _option(0.0, "AdamW weight decay.")
    rollout_rounds: int = _option(
        1, "Rounds of num_envs episodes collected per update (responses = num_envs x rounds)."
    )
    epochs: int = _option(4, "Passes over each rollout.")
    minibatch_size: int = _option(8, "Episodes (responses) per optimiser step.")
    gradient_accumulation_steps: int = _option(
        1, "Micro-batches per minibatch: forwards of minibatch_size / this many episodes."
    )
    clip_range: float = _option(0.2, "PPO ratio clipping epsilon.")
    ent_coef: float = _option(0.0, "Entropy bonus coefficient.")
    max_grad_norm: float = _option(1.0, "Gradient clipping norm.")
    target_kl: float | None = _option(
        None, "Stop the epochs early once a minibatch's approx_kl exceeds 1.5 x this (None: off)."
    )
    whiten_advantages: bool = _option(True, "Normalise advantages to mean 0, std 1 per rollout.")
    kl_coef: float | None = _option(
        None, "Initial KL coefficient beta (None: keep the env's kl_coef)."
    )
    kl_target: float | None = _option(
        None,
        "Adaptive KL control (Ziegler et al.): steer the mean per-response KL toward this many "
        "nats (None: beta stays fixed).",
    )
    kl_horizon: int = _option(10_000, "Adaptive KL controller horizon, in responses.")
    bf16: bool = _option(True, "On CUDA, run forwards under bf16 autocast (ignored on CPU).")
    gradient_checkpointing: bool = _option(
        False,
        "Recompute the policy's layer activations in the backward pass of updates: less memory "
        "for long responses, about a third more update compute.",
    )
    share_trunk: bool = _option(
        True,
        "Under frozen:N, run the frozen bottom blocks once per rollout (no gradient reaches "
        "them) and start every update forward from their output: same gradients, less "
        "compute, their output kept in memory for the update (off: recompute it every forward).",
    )
    share_prefix: bool = _option(
        True,
        "Run the prompt prefix that a micro-batch's episodes share (16+ tokens) through the "
        "model once per forward, its keys and values broadcast to every episode: the same "
        "gradients, less compute (off: every episode runs its whole prompt; off as well "
        "with gradient_checkpointing, which cannot keep the prefix's cache).",
    )
    seed: int = _option(0, "Seed of action sampling, prompt draws and minibatch shuffling.")
    log_dir: str | None = _option(None, "TensorBoard log directory (None: no TensorBoard).")
    checkpoint_dir: str | None = _option(
        None, "Run directory for checkpoints (None: learn() writes none)."
    )
    checkpoint_every: int = _option(
        0, "Write a checkpoint every this many updates (0: only at the end of learn())."
    )
    keep_checkpoints: int = _option(2, "Checkpoints kept in checkpoint_dir (older are deleted).")
    progress_bar: bool = _option(True, "Show a progress bar with ETA during learn().")

    def __post_init__(self) -> None:
        problems = [
            (self.learning_rate > 0, "learning_rate must be > 0 (e.g. 1e-5)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.rollout_rounds >= 1, "rollout_rounds must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.minibatch_size >= 1, "minibatch_size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (
                self.minibatch_size % self.gradient_accumulation_steps == 0,
                f"minibatch_size ({self.minibatch_size}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})",
            ),
            (0 < self.clip_range < 1, "clip_range must be in (0, 1), e.g. 0.2"),
            (self.ent_coef >= 0, "ent_coef must be >= 0"),
            (self.max_grad_norm > 0, "max_grad_norm must be > 0"),
            (
                self.target_kl is None or self.target_kl > 0,
                "target_kl must be > 0 or None to disable early stopping",
            ),
            (self.kl_coef is None or self.kl_coef >= 0, "kl_coef must be >= 0 or None"),
            (
                self.kl_target is None or self.kl_target > 0,
                "kl_target must be > 0 nats or None for a fixed beta",
            ),
            (self.kl_horizon > 0, "kl_horizon must be > 0"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: at the end only)"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
        ]
        check(self, problems)


@dataclass
class PPOConfig(PolicyGradientConfig):
    """PPO with a value head and token-level GAE (Ouyang et al. 2022; Ziegler et al. 2019)."""

    vf_coef: float = _option(0.1, "Value-loss coefficient.")
    clip_range_value: float | None = _option(
        0.2, "Value clipping around the rollout's values (None: no clipping)."
    )
    gamma: float = _option(1.0, "Discount per token.")
    gae_lambda: float = _option(0.95, "GAE lambda.")
    critic: str = _option(
        "separate",
        "'separate': a value head on the critic's own copy of the model (under frozen:N it "
        "starts from the shared frozen blocks' output, so only the trainable blocks run "
        "twice); 'shared': a value head on the policy's trunk (less memory and compute, but "
        "each policy update moves the value head's input: on tiny Arithmetic its explained "
        "variance stays below 0 and 1 seed in 5 collapsed, benchmarks/RESULTS.md).",
        choices=("shared", "separate"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = [
            (self.vf_coef >= 0, "vf_coef must be >= 0"),
            (
                self.clip_range_value is None or self.clip_range_value > 0,
                "clip_range_value must be > 0 or None",
            ),
            (0 <= self.gamma <= 1, "gamma must be in [0, 1]"),
            (0 <= self.gae_lambda <= 1, "gae_lambda must be in [0, 1]"),
        ]
        check(self, problems)


@dataclass
class RLOOConfig(PolicyGradientConfig):
    """Critic-free policy gradient with a group baseline: each prompt is answered
    ``group_size`` times and each response is judged against the others."""

    group_size: int = _option(4, "Responses per prompt (num_envs must be a multiple).")
    baseline: str = _option(
        "rloo",
        "'rloo': leave-one-out mean; 'grpo': group mean and std (GRPO-style).",
        choices=("rloo", "grpo"),
    )
    whiten_advantages: bool = _option(False, "Normalise advantages to mean 0, std 1 per rollout.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, [(self.group_size >= 2, f"group_size must be >= 2, got {self.group_size}")])
