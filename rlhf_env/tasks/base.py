"""What a ready-made task is: its prompts, its training reward, its gold metrics, its defaults.

A :class:`Task` is the data a task bundles once it is built for a policy's tokenizer (chat
templates differ between policies, and a task's reward model may be learned from the policy's
own samples). A :class:`TaskSpec` is the registry's entry: the task's id, a one-line
description and the builder that makes the :class:`Task` from a :class:`TaskContext` and the
task's own options (difficulty, sizes, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlhf_env.data.prompts import PromptsLike
from rlhf_env.models.efficient import check_training_setup
from rlhf_env.rewards.base import RewardFunction


@dataclass
class Task:
    """A task built for one policy.

    Attributes:
        name: the task's id (``"PositiveReview"``: ``gym.make("rlhf_env/PositiveReview-v0")``).
        train_prompts: what RL draws its prompts from (a list, or a callable taking the env's
            generator: procedural tasks draw fresh problems).
        eval_prompts: the held-out prompts, disjoint from the training ones, in a fixed order
            (strings; conversation scripts for a dialogue task).
        reward_fn: the training reward ``reward_fn(prompts, responses) -> list[float]`` (a
            learned reward model, or a checkable score); None for a task of turn-level
            episodes, whose env pays each turn's reward (:mod:`rlhf_env.dialogue.turn_level`).
        gold: the task's gold metrics by name, each a reward function (higher is better); the
            first is *the* gold score, the others are second columns (e.g. ``"vader"``).
        env_options: the task's defaults for the env's settings (``max_new_tokens``, ...);
            arguments given to ``gym.make`` override them.
        details: facts about how the task was built (reward-model accuracy, sizes, the
            difficulty), for reports.
        reference: a frozen copy of the initial policy the task already holds (for a gold
            metric that reads it); the env uses it as its reference unless given another.
    """

    name: str
    train_prompts: PromptsLike
    eval_prompts: list[Any]
    reward_fn: RewardFunction | None
    gold: Mapping[str, RewardFunction]
    env_options: Mapping[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reference: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if not self.gold:
            raise ValueError(f"task {self.name!r} needs at least one gold metric")
        if not self.eval_prompts:
            raise ValueError(f"task {self.name!r} needs held-out prompts")

    @property
    def gold_name(self) -> str:
        """The name of the gold score (the first gold metric)."""
        return next(iter(self.gold))

    def gold_scores(self, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        """Every gold metric of the responses, by name."""
        return {
            name: [float(value) for value in metric(prompts, responses)]
            for name, metric in self.gold.items()
        }


@dataclass
class TaskContext:
    """What a task's builder may use: the policy it is built for, its tokenizer, the device
    for any model the task trains, and whether to show progress bars."""

    policy: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    progress: bool = True

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer formats chat messages (instruct models do)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """``messages`` (``[{"role": "user", "content": ...}, ...]``) as the prompt text the
        policy continues: its chat template with the assistant header, or, for a policy
        without one, ``"User: ...\\nAssistant:"`` lines."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        lines = [f"{message['role'].capitalize()}: {message['content']}" for message in messages]
        return "\n".join([*lines, "Assistant:"])


Builder = Callable[..., Task]


@dataclass(frozen=True)
class SuiteBudget:
    """What one benchmark-suite run of a task gets by default: the budget that makes the
    three-task suite (three learning agents and the reference, three seeds) fit in 90 minutes
    on 2 CPU cores (benchmarks/RESULTS.md, issue 28), and the settings it was measured with.

    Attributes:
        timesteps: generated tokens of training per run.
        training_setup: what trains (``"full"``, ``"frozen:N"``, ``"lora:R"``): frozen blocks
            are shared with the reference and cost no backward pass.
        options: env and task options of the suite's runs (shorter prompts or responses).
        eval_samples: answers per held-out prompt in the suite's evaluations: a task scored 0
            or 1 per answer (exact match) needs more than one for the sampling noise not to
            drown a difference between agents.
    """

    timesteps: int
    training_setup: str = "full"
    options: Mapping[str, Any] = field(default_factory=dict)
    eval_samples: int = 1

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise ValueError(f"a suite budget's timesteps must be >= 1, got {self.timesteps}")
        if self.eval_samples < 1:
            raise ValueError(f"a suite budget's eval_samples must be >= 1, got {self.eval_samples}")
        check_training_setup(self.training_setup)


@dataclass(frozen=True)
class TaskSpec:
    """A registry entry.

    Attributes:
        name: the id (``gym.make(f"rlhf_env/{name}-v0")``).
        description: one line, for ``rlhf-env tasks``.
        build: ``build(context, **options) -> Task``; its keyword arguments (with defaults) are
            the task's own options, which ``gym.make`` accepts beside the env's.
        shared_options: a dataclass whose fields are options of this task too, declared once
            for the tasks that share them (the builder takes them as ``**options``).
        policy: the default policy (a packaged asset name, a folder or a hub name).
        smoke_options: task and env options that, with a tiny random policy, make a variant
            that builds and runs in seconds (for tests and ``--smoke`` runs; plumbing, not
            results).
        chat_template: the task needs a tokenizer with a chat template (a dialogue task); the
            smoke variant's tiny tokenizer then gets a ChatML one.
        smoke_positions: the smoke variant's tiny GPT-2's positions (a game's rules in the
            tiny tokenizer's short tokens need more than the default 256).
        recipes: per agent name (``"ppo"``, ``"rloo"``, ``"grpo"``), the agent settings that
            work on this task (measured: the task's docstring says where), as keyword
            arguments of ``rlhf_agents.make_agent``; the benchmark suite uses them over its
            shared optimiser settings unless told not to.
        budget: the suite's default budget for a run of this task (:class:`SuiteBudget`;
            ``None``: the suite's own defaults, 65,536 tokens of full fine-tuning).
    """

    name: str
    description: str
    build: Builder
    shared_options: type | None = None
    policy: str = "smollm2-135m-instruct"
    smoke_options: Mapping[str, Any] = field(default_factory=dict)
    chat_template: bool = False
    smoke_positions: int = 256
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    budget: SuiteBudget | None = None

    @property
    def env_id(self) -> str:
        """The Gymnasium id, ``rlhf_env/<name>-v0``."""
        return f"rlhf_env/{self.name}-v0"
