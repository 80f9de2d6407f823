"""The demo's settings: one dataclass field per knob, each documented (the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rlhf_agents import LEARNING_AGENTS
from rlhf_env.config import VectorEnvConfig, check
from rlhf_env.config import option as _option
from rlhf_env.models.efficient import TRAINING_SETUP, TRAINING_SETUP_HELP
from rlhf_env.rewards.model import POOLINGS
from rlhf_env.rewards.oracles import ORACLES

TINY_MODEL = "tiny-gpt2"


@dataclass(kw_only=True)
class DemoConfig(VectorEnvConfig):
    """The whole pipeline of :func:`rlhf_pipeline.run_demo`, stage by stage.

    The defaults are the embedded offline demo (SmolLM2-135M-Instruct, VADER as the labeller,
    a MiniLM reward model, PPO on the top layers), sized to finish within 20 minutes on two
    CPU cores. :meth:`smoke` shrinks it to seconds on tiny random models, for tests. The RL
    stage's environment takes every field of :class:`rlhf_env.config.VectorEnvConfig` (this
    class extends it; ``kl_coef`` is also the agent's initial beta).
    """

    out: str = _option("rlhf-demo", "Run folder: every stage's output, the report, the weights.")
    policy: str = _option(
        "smollm2-135m-instruct",
        f"Initial policy and frozen reference: hub name, local folder, a packaged asset name, "
        f"or {TINY_MODEL!r} (a random tiny GPT-2 built offline).",
    )
    reward_backbone: str = _option(
        "all-minilm-l6-v2",
        f"Reward-model backbone: hub name, local folder, asset name, or {TINY_MODEL!r}.",
    )
    oracle: str = _option("vader", "Gold labeller.", choices=ORACLES)
    seed: int = _option(0, "Seed of every stage (sampling, labels, splits, PPO).")
    device: str | None = _option(None, "'cpu', 'cuda', ... (None: CUDA when there is one).")
    max_new_tokens: int = _option(16, "Tokens per response, in every stage.")
    max_prompt_tokens: int = _option(48, "Longest prompt in tokens (cut from the left).")
    prompt_words: int = _option(8, "Words of a review that make a prompt.")

    # 1-2. preferences
    preference_prompts: int = _option(
        320, "Prompts whose sampled responses the oracle labels (half from each review label)."
    )
    responses_per_prompt: int = _option(4, "Responses sampled per preference prompt.")
    label_noise: float | None = _option(
        None,
        "Bradley-Terry label noise k: P(A > B) = sigmoid(k (s_A - s_B)), ties are coin flips "
        "(None: the higher gold score always wins, ties are dropped).",
    )

    # 3. reward model
    rm_epochs: int = _option(2, "Reward-model epochs.")
    rm_batch_size: int = _option(32, "Reward-model pairs per step.")
    rm_learning_rate: float = _option(1e-4, "Reward-model learning rate.")
    rm_pooling: str = _option(
        "sum",
        "'head' ([CLS] head), 'sum' or 'mean' of per-token scores (additive reward).",
        choices=POOLINGS,
    )
    rm_max_length: int = _option(48, "Reward-model tokens per response.")

    # 4. RL fine-tuning
    agent: str = _option("ppo", "The learning agent.", choices=LEARNING_AGENTS)
    training_setup: str = _option("frozen:24", f"What trains: {TRAINING_SETUP_HELP}.")
    num_envs: int = _option(16, "Sub-environments: responses per rollout round.")
    total_timesteps: int = _option(12_288, "Generated tokens of RL training.")
    learning_rate: float = _option(2e-4, "RL learning rate.")
    epochs: int = _option(2, "Passes over each rollout.")
    minibatch_size: int = _option(8, "Responses per optimiser step.")
    kl_coef: float = _option(0.2, "KL coefficient beta (the initial one with kl_target).")
    kl_target: float | None = _option(
        None, "Adaptive KL control toward this many nats per response (None: fixed beta)."
    )
    kl_horizon: int = _option(
        64, "Adaptive KL horizon in responses: beta moves at most 20% x responses / horizon."
    )
    train_prompts: int = _option(4096, "Prompts the RL stage draws from.")
    checkpoint_every: int = _option(10, "RL updates between checkpoints (resume point).")
    budget_minutes: float | None = _option(
        None,
        "Wall-clock cap on the whole run: RL stops early (after the update in flight) once "
        "the elapsed time plus the final evaluation's estimate would pass it.",
    )

    # 5. evaluation
    eval_prompts: int = _option(128, "Held-out prompts evaluated before and after RL.")
    report_samples: int = _option(8, "Continuations shown side by side in the report.")
    progress_bar: bool = _option(True, "Progress bars with ETA.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self,
            [
                (self.prompt_words >= 1, "prompt_words must be >= 1"),
                (self.preference_prompts >= 2, "preference_prompts must be >= 2"),
                (self.responses_per_prompt >= 2, "responses_per_prompt must be >= 2 (pairs)"),
                (
                    self.label_noise is None or self.label_noise > 0,
                    "label_noise must be > 0 or None",
                ),
                (
                    bool(TRAINING_SETUP.match(self.training_setup)),
                    f"training_setup must be {TRAINING_SETUP_HELP}, got {self.training_setup!r}",
                ),
                (self.total_timesteps >= 1, "total_timesteps must be >= 1"),
                (self.train_prompts >= 1, "train_prompts must be >= 1"),
                (self.eval_prompts >= 1, "eval_prompts must be >= 1"),
                (
                    self.budget_minutes is None or self.budget_minutes > 0,
                    "budget_minutes must be > 0 or None",
                ),
            ],
        )

    def env_config(self, **overrides: Any) -> VectorEnvConfig:
        """The RL stage's environment settings (those of this config), with ``overrides``."""
        values = {name: getattr(self, name) for name in VectorEnvConfig.__dataclass_fields__}
        return VectorEnvConfig(**(values | overrides))

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoConfig:
        """Every stage in seconds on tiny random models: plumbing, not learning."""
        settings: dict[str, Any] = {
            "policy": TINY_MODEL,
            "reward_backbone": TINY_MODEL,
            "max_new_tokens": 6,
            "preference_prompts": 16,
            "responses_per_prompt": 2,
            "label_noise": 5.0,  # random tiny models' responses mostly tie at 0
            "rm_epochs": 1,
            "rm_batch_size": 8,
            "rm_max_length": 16,
            "training_setup": "full",
            "num_envs": 4,
            "total_timesteps": 48,
            "minibatch_size": 4,
            "train_prompts": 16,
            "checkpoint_every": 1,
            "eval_prompts": 8,
            "report_samples": 3,
        }
        return cls(**{**settings, **overrides})

    def with_values(self, **values: Any) -> DemoConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **values)
