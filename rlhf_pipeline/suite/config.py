"""The suite's settings (:class:`SuiteConfig`): which tasks, agents and seeds run, and what every
run shares, with each task's suite budget and recipes where the settings do not say otherwise."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from rlhf_env.config import check
from rlhf_env.config import option as _option
from rlhf_env.models.efficient import TRAINING_SETUP, TRAINING_SETUP_HELP
from rlhf_env.tasks import TASKS, SuiteBudget
from rlhf_pipeline.suite.agents import BUILTIN_AGENTS, agent_name

#: The training budget of a run of a task without a suite budget, in generated tokens.
DEFAULT_TIMESTEPS = 65_536

#: The settings of a ``--smoke`` suite: tiny budgets, so it runs in seconds (with each task's
#: tiny variant, :func:`rlhf_env.tasks.smoke_arguments`). Plumbing, never results.
SMOKE_SETTINGS: dict[str, Any] = {
    "timesteps": 64, "num_envs": 4, "seeds": (0, 1), "curve_prompts": 4, "eval_prompts": 8,
    "learning_rate": 1e-3, "epochs": 1, "minibatch_size": 4,
}  # fmt: skip


@dataclass
class SuiteConfig:
    """What the suite runs, and the settings every run shares."""

    tasks: tuple[str, ...] = _option((), "Task names (empty: every registered task).")
    agents: tuple[str, ...] = _option(
        BUILTIN_AGENTS, "Agent names, or [NAME=]package.module:Class of one's own."
    )
    seeds: tuple[int, ...] = _option((0, 1, 2), "One run per seed of every agent and task.")
    timesteps: int | None = _option(
        None,
        "Training budget of every run, in generated tokens (None: each task's suite budget, "
        f"`rlhf-env tasks` lists them; {DEFAULT_TIMESTEPS:,} for a task without one).",
    )
    eval_points: tuple[float, ...] = _option(
        (0.0, 0.25, 0.5, 0.75, 1.0),
        "Fractions of the budget at which the held-out prompts are evaluated (the curve).",
    )
    num_envs: int = _option(16, "Sub-envs of every env (responses per rollout round).")
    curve_prompts: int | None = _option(
        None,
        "Held-out prompts (the first ones) per curve evaluation (None: the final evaluation's, "
        "whose figures are then the curve's last point).",
    )
    eval_prompts: int | None = _option(
        None, "Held-out prompts of the final evaluation (None: all of the task's)."
    )
    eval_samples: int | None = _option(
        None,
        "Responses per held-out prompt in every evaluation (more: a tighter estimate from a "
        "small held-out set; None: each task's suite budget's, 1 for a task without one).",
    )
    learning_rate: float = _option(1e-5, "Learning rate of every learning agent.")
    epochs: int = _option(4, "Passes over each rollout, for every learning agent.")
    minibatch_size: int = _option(8, "Responses per optimiser step, for every learning agent.")
    training_setup: str | None = _option(
        None,
        f"What trains, in every run: {TRAINING_SETUP_HELP} (the reference shares the rest; "
        "None: each task's suite budget's, full for a task without one).",
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Env and task options for make_task_vector_env.", "cli": False},
    )
    task_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "Per task name, env and task options over `options` (a task with long "
            "prompts may get shorter responses).",
            "cli": False,
        },
    )
    task_timesteps: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "Per task name, its training budget in generated tokens instead of "
            "`timesteps` (every agent of a task still gets the same budget).",
            "cli": False,
        },
    )
    agent_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "Per agent name, arguments that override its own.", "cli": False},
    )
    recipes: bool = _option(
        True,
        "Give ppo/rloo/grpo each task's recipe (the agent settings that work on it, "
        "`rlhf-env tasks` lists them) over learning_rate, epochs and minibatch_size; "
        "agent_options still override it (not under smoke).",
    )
    budgets: bool = _option(
        True,
        "Give each task's runs its suite budget (`rlhf-env tasks` lists them: tokens, training "
        "setup, env options) where timesteps, training_setup, options and task_options do not "
        "say otherwise (not under smoke).",
    )
    smoke: bool = _option(False, "Run each task's tiny variant (random tiny GPT-2): plumbing.")

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.agents = tuple(self.agents)
        self.seeds = tuple(int(seed) for seed in self.seeds)
        self.eval_points = tuple(sorted({float(point) for point in self.eval_points}))
        self.options = dict(self.options)
        self.task_options = {name: dict(values) for name, values in self.task_options.items()}
        self.task_timesteps = {name: int(value) for name, value in self.task_timesteps.items()}
        self.agent_options = {name: dict(values) for name, values in self.agent_options.items()}
        names = [agent_name(spec) for spec in self.agents]
        check(
            self,
            [
                (bool(self.agents), "agents is empty; name at least one, e.g. ('ppo',)"),
                (
                    len(set(names)) == len(names),
                    f"agents {names} name one twice; give one of them a name: NAME=module:Class",
                ),
                (bool(self.seeds), "seeds is empty; give at least one, e.g. (0,)"),
                (
                    self.training_setup is None or bool(TRAINING_SETUP.match(self.training_setup)),
                    f"training_setup must be {TRAINING_SETUP_HELP}, got {self.training_setup!r}",
                ),
                (len(set(self.seeds)) == len(self.seeds), f"seeds {self.seeds} repeat one"),
                (
                    self.timesteps is None or self.timesteps >= 1,
                    f"timesteps must be >= 1 or None (each task's budget), got {self.timesteps}",
                ),
                (
                    all(value >= 1 for value in self.task_timesteps.values()),
                    f"task_timesteps must all be >= 1, got {self.task_timesteps}",
                ),
                (
                    all(0.0 <= point <= 1.0 for point in self.eval_points),
                    f"eval_points are fractions of the budget in [0, 1], got {self.eval_points}",
                ),
                (self.num_envs >= 1, f"num_envs must be >= 1, got {self.num_envs}"),
                (
                    self.curve_prompts is None or self.curve_prompts >= 1,
                    f"curve_prompts must be >= 1 or None (all), got {self.curve_prompts}",
                ),
                (
                    self.eval_prompts is None or self.eval_prompts >= 1,
                    f"eval_prompts must be >= 1 or None (all), got {self.eval_prompts}",
                ),
                (
                    self.eval_samples is None or self.eval_samples >= 1,
                    f"eval_samples must be >= 1 or None (each task's), got {self.eval_samples}",
                ),
                (self.learning_rate > 0, "learning_rate must be > 0, e.g. 1e-5"),
                (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                (
                    self.minibatch_size >= 1,
                    f"minibatch_size must be >= 1, got {self.minibatch_size}",
                ),
            ],
        )

    @classmethod
    def create(cls, smoke: bool = False, **settings: Any) -> SuiteConfig:
        """A config from ``settings``; with ``smoke``, :data:`SMOKE_SETTINGS` fill in the
        settings not given."""
        return cls(**({**SMOKE_SETTINGS, **settings} if smoke else settings), smoke=smoke)

    def task_budget(self, task: str) -> SuiteBudget | None:
        """``task``'s declared suite budget, where the suite uses it (``budgets`` on, not
        under smoke, a registered task that declares one)."""
        if not self.budgets or self.smoke or task not in TASKS:
            return None
        return TASKS[task].budget

    def budget(self, task: str) -> int:
        """The training budget of every run of ``task``, in generated tokens: its
        ``task_timesteps``, else ``timesteps``, else the task's suite budget."""
        if task in self.task_timesteps:
            return self.task_timesteps[task]
        if self.timesteps is not None:
            return self.timesteps
        declared = self.task_budget(task)
        return declared.timesteps if declared else DEFAULT_TIMESTEPS

    def setup(self, task: str) -> str:
        """What trains in ``task``'s runs: ``training_setup``, else the task's suite budget's."""
        if self.training_setup is not None:
            return self.training_setup
        declared = self.task_budget(task)
        return declared.training_setup if declared else "full"

    def answers(self, task: str) -> int:
        """Answers per held-out prompt in ``task``'s evaluations: ``eval_samples``, else the
        task's suite budget's."""
        if self.eval_samples is not None:
            return self.eval_samples
        declared = self.task_budget(task)
        return declared.eval_samples if declared else 1

    def env_options(self, task: str) -> dict[str, Any]:
        """The env and task options of ``task``'s runs: its suite budget's, under ``options``,
        under its ``task_options``."""
        declared = self.task_budget(task)
        return {
            **(declared.options if declared else {}),
            **self.options,
            **self.task_options.get(task, {}),
        }

    def run_settings(self) -> dict[str, Any]:
        """The settings that make runs comparable (all but which tasks, agents and seeds run),
        as JSON values: a results file is resumed only under the same ones."""
        values = {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name not in ("tasks", "agents", "seeds")
        }
        # Settings at their neutral value are left out, so files written before they existed
        # resume.
        for name in ("task_options", "task_timesteps"):
            if not values[name]:
                del values[name]
        if values["eval_samples"] is None:
            del values["eval_samples"]
        return json.loads(json.dumps(values, default=repr))
