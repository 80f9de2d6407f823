"""The demo's settings: one dataclass field per knob, each documented (the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rlhf_agents import LEARNING_AGENTS
from rlhf_env.config import VectorEnvConfig, check
from rlhf_env.config import option as _option
from rlhf_env.models.efficient import TRAINING_SETUP, TRAINING_SETUP_HELP
from rlhf_env.tasks import task_options, task_spec
from rlhf_env.tasks.cache import TINY_BACKBONE
from rlhf_env.tasks.positive_review import ENV_OPTIONS, RECIPE

#: The ready-made task the demo runs (:mod:`rlhf_env.tasks.positive_review`).
TASK = "PositiveReview"


@dataclass(kw_only=True)
class DemoConfig(VectorEnvConfig):
    """The whole pipeline of :func:`rlhf_pipeline.run_demo`, stage by stage.

    The defaults are the embedded offline demo on the ``rlhf_env/PositiveReview-v0`` task
    (SmolLM2-135M-Instruct; a MiniLM sentiment judge trained on labelled reviews as the gold
    labeller; a MiniLM reward model learned from the judge's labels; PPO on the top layers),
    sized to finish within 20 minutes on two CPU cores. The task's fields (stages 1-3) are
    its options of the same name (:meth:`task_arguments`), with the same defaults, so the demo
    reuses the judge and reward model the task cache already holds for the policy.
    :meth:`smoke` shrinks it to seconds on the task's tiny variant, for tests. The RL stage's
    environment takes every field of :class:`rlhf_env.config.VectorEnvConfig` (this class
    extends it; ``kl_coef`` is also the agent's initial beta). The fields it re-declares take
    their defaults from the task (``max_new_tokens``, ``max_prompt_tokens``, ``kl_coef``: its
    env options; ``learning_rate``, ``epochs``, ``minibatch_size``: its recipe), but for the
    rollout's size, the demo's own: 16 sub-envs.
    """

    out: str = _option("rlhf-demo", "Run folder: every stage's output, the report, the weights.")
    policy: str = _option(
        "smollm2-135m-instruct",
        f"Initial policy and frozen reference: hub name, local folder, a packaged asset name, "
        f"or {TINY_BACKBONE!r} (a random tiny GPT-2 built offline).",
    )
    seed: int = _option(
        0,
        "Seed of every stage: the task's splits, samples and trainings (another seed trains "
        "another judge and reward model), and RL.",
    )
    max_new_tokens: int = _option(
        ENV_OPTIONS["max_new_tokens"],
        "Tokens per response, in every stage (the reward model's sampled pairs too).",
    )
    max_prompt_tokens: int = _option(
        ENV_OPTIONS["max_prompt_tokens"], "Longest prompt in tokens (cut from the left)."
    )
    prompt_words: int = _option(8, "Words of a review that make a prompt.")

    # 1-3. the PositiveReview task: gold judge, preferences, reward model (cached)
    judge_backbone: str = _option(
        "all-minilm-l6-v2",
        f"Gold judge's backbone: hub name, local folder, asset name, or {TINY_BACKBONE!r}.",
    )
    judge_texts_per_label: int = _option(
        2000, "Labelled review texts per label the judge trains on (up to 400 more held out)."
    )
    judge_max_length: int = _option(64, "Tokens of a text the judge reads.")
    preference_prompts: int = _option(
        320, "Prompts whose sampled responses the judge labels (half from each review label)."
    )
    responses_per_prompt: int = _option(4, "Responses sampled per preference prompt.")
    reward_backbone: str = _option(
        "all-minilm-l6-v2",
        f"Reward-model backbone: hub name, local folder, asset name, or {TINY_BACKBONE!r}.",
    )

    # 5. RL fine-tuning
    agent: str = _option("ppo", "The learning agent.", choices=LEARNING_AGENTS)
    training_setup: str = _option("frozen:24", f"What trains: {TRAINING_SETUP_HELP}.")
    num_envs: int = _option(16, "Sub-environments: responses per rollout round.")
    total_timesteps: int = _option(12_288, "Generated tokens of RL training.")
    learning_rate: float = _option(RECIPE["learning_rate"], "RL learning rate.")
    epochs: int = _option(RECIPE["epochs"], "Passes over each rollout.")
    minibatch_size: int = _option(RECIPE["minibatch_size"], "Responses per optimiser step.")
    kl_coef: float = _option(
        ENV_OPTIONS["kl_coef"], "KL coefficient beta (the initial one with kl_target)."
    )
    kl_target: float | None = _option(
        None, "Adaptive KL control toward this many nats per response (None: fixed beta)."
    )
    kl_horizon: int = _option(
        64, "Adaptive KL horizon in responses: beta moves at most 20% x responses / horizon."
    )
    rl_seed: int | None = _option(
        None,
        "Seed of the RL stage alone (None: --seed): another RL run on the same judge, reward "
        "model and prompts, to see how much the result moves from run to run.",
    )
    train_prompts: int = _option(4096, "Training prompts of the task, drawn by RL.")
    checkpoint_every: int = _option(10, "RL updates between checkpoints (resume point).")
    budget_minutes: float | None = _option(
        None,
        "Wall-clock cap on the whole run: RL stops early (after the update in flight) once "
        "the elapsed time plus the final evaluation's estimate would pass it.",
    )

    # 4 and 6. evaluation
    eval_prompts: int = _option(128, "Held-out prompts of the task, evaluated before and after RL.")
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
                (self.judge_texts_per_label >= 1, "judge_texts_per_label must be >= 1"),
                (self.judge_max_length >= 1, "judge_max_length must be >= 1"),
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

    def task_arguments(self) -> dict[str, Any]:
        """The task's options: the fields of the same name, and ``max_new_tokens`` as the
        length of the reward model's sampled responses (``sample_tokens``)."""
        names = set(task_options(TASK)) - {"sample_tokens"}
        return {name: getattr(self, name) for name in names} | {
            "sample_tokens": self.max_new_tokens
        }

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoConfig:
        """Every stage in seconds on the task's tiny variant (tiny random models, a few prompts,
        :attr:`rlhf_env.tasks.TaskSpec.smoke_options`): plumbing, not learning."""
        task = dict(task_spec(TASK).smoke_options)
        task.pop("sample_tokens")  # the demo samples max_new_tokens
        settings: dict[str, Any] = {
            **task,
            "policy": TINY_BACKBONE,
            "training_setup": "full",
            "num_envs": 4,
            "total_timesteps": 48,
            "minibatch_size": 4,
            "checkpoint_every": 1,
            "report_samples": 3,
        }
        return cls(**{**settings, **overrides})

    def with_values(self, **values: Any) -> DemoConfig:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **values)
