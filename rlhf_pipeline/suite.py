"""The benchmark suite: agents x tasks x seeds on equal token budgets (the leaderboard per task,
with intervals pooling seeds and held-out prompts and paired comparisons, and the learning
curves of the gold score, are drawn from its results by :mod:`rlhf_pipeline.leaderboard`).

Every run builds a fresh env from its task (:func:`rlhf_env.tasks.make_task_vector_env`; the
policy is loaded or built anew, so no run sees another's trained weights), trains the agent
for ``timesteps`` generated tokens, evaluates the held-out prompts at the ``eval_points``
(fractions of the budget) for the learning curve and finally on the held-out prompts. The
evaluations run in a second env over the same policy and reference modules, with the task's
initial beta, so evaluating never disturbs a training env (SB3 keeps its last observation
between ``learn`` calls) and every agent's ``return`` is measured under the same beta.

What a seed sets: the agent's seed (its sampling, prompt draws and minibatch order), the
global torch / numpy / random seeds at the start of the run, and the evaluation's seed. The
task (its prompts, reward and gold metrics) and the initial policy are the same in every run.

Agents (:data:`BUILTIN_AGENTS`): ``ppo``, ``rloo``, ``grpo`` (:func:`rlhf_agents.make_agent`),
``sb3-ppo`` (:class:`rlhf_agents.sb3_agent.SB3PPOAgent`: stable-baselines3's own PPO on
``SB3VecEnv`` with ``LanguageModelPolicy``), and the baselines ``reference`` (samples from the
frozen reference: the untrained policy) and ``random``, which are not trained. One's own: a
``"package.module:Class"`` spec (the class takes ``(env, **config)``, and ``seed=`` if it
accepts it) or, from Python, a factory ``factory(env, seed) -> Agent``. Either may carry an
``env_options`` dict attribute that its env is built with (``{"autoreset_mode": "SameStep"}``
for an SB3-style agent). Instances of the fixed agents (``ReferenceAgent``, ``RandomAgent``,
``PolicyAgent``) are not trained and have no curve; any other agent is trained: a
policy-gradient agent in one ``learn(budget, callback=...)`` call, evaluated from the
callback, any other in ``learn(point)`` steps, each resuming where the last stopped.

The learning agents share the optimiser settings of :class:`SuiteConfig`
(``learning_rate``, ``epochs``, ``minibatch_size`` responses per step; SB3 gets
``minibatch_size x max_new_tokens`` transitions per step, ``n_steps = max_new_tokens``, gamma
1, GAE 0.95, clip 0.2, value coefficient 0.1 as ``PPOAgent``); ``agent_options`` override
any agent's own arguments. Tasks differ in cost (a long templated conversation costs more per
token than an 8-word review opening): each task declares a suite budget
(:class:`rlhf_env.tasks.SuiteBudget`: tokens, training setup, env options), the one that makes
the three-task suite fit in 90 minutes on 2 CPU cores, which ``timesteps``,
``training_setup`` and ``options`` override for every task and ``task_options`` and
``task_timesteps`` for one (``budgets=False``: the suite's own defaults); every agent of a task
still gets the same one. Every agent stops at the first update boundary at or past the
budget: each run records the tokens it trained on.

Example:
    >>> result = run_suite(tasks=["Arithmetic"], agents=["ppo", "reference"], seeds=[0, 1],
    ...                    smoke=True, out="suite.json")
    >>> from rlhf_pipeline.leaderboard import format_leaderboard, plot_curves
    >>> print(format_leaderboard(result))
    >>> plot_curves(result, "curves.png")
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from rlhf_agents import (
    AGENTS,
    Agent,
    Evaluation,
    PolicyAgent,
    RandomAgent,
    ReferenceAgent,
    evaluate,
    make_agent,
)
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_env import assets
from rlhf_env.config import check
from rlhf_env.config import option as _option
from rlhf_env.extras import require
from rlhf_env.models import load_causal_lm, load_tokenizer
from rlhf_env.models.efficient import TRAINING_SETUP, TRAINING_SETUP_HELP, apply_training_setup
from rlhf_env.tasks import (
    TASKS,
    SuiteBudget,
    Task,
    make_task_vector_env,
    smoke_arguments,
    task_spec,
)
from rlhf_env.vector_env import TextGenerationVectorEnv

#: ``factory(env, seed) -> Agent``: builds the agent of one run in that run's fresh env. A
#: factory (or an agent class) with an ``env_options`` attribute, a dict, gets its env built
#: with those options (the ``sb3-ppo`` factory's: ``{"autoreset_mode": "SameStep"}``).
AgentFactory = Callable[[TextGenerationVectorEnv, int], Agent]

#: The training budget of a run of a task without a suite budget, in generated tokens.
DEFAULT_TIMESTEPS = 65_536
#: The agents the suite knows by name.
BUILTIN_AGENTS: tuple[str, ...] = ("ppo", "rloo", "grpo", "sb3-ppo", "reference", "random")
#: The built-in agents that are not trained (evaluated once, at zero tokens).
BASELINES: tuple[str, ...] = ("reference", "random")
#: Agent classes that never learn: no training, no curve.
FIXED_AGENTS: tuple[type[Agent], ...] = (ReferenceAgent, RandomAgent, PolicyAgent)

#: The settings of a ``--smoke`` suite: tiny budgets, so it runs in seconds (with each task's
#: tiny variant, :func:`rlhf_env.tasks.smoke_arguments`). Plumbing, never results.
SMOKE_SETTINGS: dict[str, Any] = {
    "timesteps": 64, "num_envs": 4, "seeds": (0, 1), "curve_prompts": 4, "eval_prompts": 8,
    "learning_rate": 1e-3, "epochs": 1, "minibatch_size": 4,
}  # fmt: skip


#: Responses of the final evaluation kept in each run's results (``RunResult.samples``).
SAMPLES = 4
#: Characters kept of each sample's prompt (its end: the question, not a shared preamble).
SAMPLE_PROMPT_CHARS = 300


# -- settings ----------------------------------------------------------------------------------


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
    eval_samples: int = _option(
        1,
        "Responses per held-out prompt in every evaluation (more: a tighter estimate from a "
        "small held-out set; standard errors then treat them as independent).",
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
                (self.eval_samples >= 1, f"eval_samples must be >= 1, got {self.eval_samples}"),
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
        if values["eval_samples"] == 1:
            del values["eval_samples"]
        return json.loads(json.dumps(values, default=repr))


def agent_name(spec: str) -> str:
    """The name a spec runs under: ``NAME=...`` names it, a ``module:Class`` is its class."""
    if "=" in spec:
        return spec.split("=", 1)[0]
    return spec.rsplit(":", 1)[-1] if ":" in spec else spec


def load_agent_class(spec: str) -> type[Agent]:
    """The class of ``"package.module:Class"`` (an :class:`~rlhf_agents.Agent`, or any class
    with its ``learn`` and ``act``)."""
    module_name, _, class_name = spec.rpartition(":")
    if not module_name or not class_name:
        raise ValueError(f"an agent class is given as package.module:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import {module_name!r} for agent {spec!r} ({error}); is it on PYTHONPATH?"
        ) from error
    agent_class = getattr(module, class_name, None)
    if not isinstance(agent_class, type):
        raise ValueError(f"{module_name} has no class {class_name!r} (agent {spec!r})")
    missing = [name for name in ("learn", "act") if not callable(getattr(agent_class, name, None))]
    if missing:
        raise TypeError(
            f"agent class {spec!r} lacks {' and '.join(missing)}: see rlhf_agents.Agent"
        )
    return agent_class


def agent_factory(spec: str, config: SuiteConfig) -> AgentFactory:
    """The factory of a built-in agent name or a ``[NAME=]package.module:Class`` spec."""
    name = agent_name(spec)
    target = spec.split("=", 1)[1] if "=" in spec else spec
    options = config.agent_options.get(name, {})
    if ":" in target:
        agent_class = load_agent_class(target)
        parameters = inspect.signature(agent_class).parameters.values()
        takes_seed = any(p.name == "seed" or p.kind is p.VAR_KEYWORD for p in parameters)

        def custom(env: TextGenerationVectorEnv, seed: int) -> Agent:
            return agent_class(env, **({"seed": seed} if takes_seed else {}), **options)

        return _Factory(custom, dict(getattr(agent_class, "env_options", {})))
    if target not in BUILTIN_AGENTS:
        raise ValueError(
            f"unknown agent {spec!r}; the suite's agents are {list(BUILTIN_AGENTS)}, or give "
            "one's own class as package.module:Class"
        )
    if target in BASELINES:
        return lambda env, seed: AGENTS[target](env, seed=seed, **options)
    if target == "sb3-ppo":
        sb3_agent = require("rlhf_agents.sb3_agent", "sb3", "the suite's sb3-ppo agent")

        def sb3_ppo(env: TextGenerationVectorEnv, seed: int) -> Agent:
            return _sb3_ppo(sb3_agent.SB3PPOAgent, env, seed, config, options)

        # SB3 resets a sub-env in the step that ends its episode.
        return _Factory(sb3_ppo, {"autoreset_mode": "SameStep"})
    shared = {
        "learning_rate": config.learning_rate,
        "epochs": config.epochs,
        "minibatch_size": config.minibatch_size,
        "progress_bar": False,
    }

    def built_in(env: TextGenerationVectorEnv, seed: int) -> Agent:
        recipe = _recipe(env, target, config)
        settings = {**shared, **recipe, "seed": seed, **options}
        group_size = settings.get("group_size")
        if "group_size" in recipe and "group_size" not in options and env.num_envs % group_size:
            raise ValueError(
                f"the {env.task.name} task's recipe for {target} answers each prompt "
                f"{group_size} times, which num_envs={env.num_envs} does not divide: pass a "
                f"multiple of {group_size}, --agent-option {name}.group_size=N, or --no-recipes"
            )
        return make_agent(target, env, **settings)

    return built_in


def _recipe(env: TextGenerationVectorEnv, agent: str, config: SuiteConfig) -> dict[str, Any]:
    """The env's task's recipe for built-in ``agent`` (empty without one, with recipes off or
    under smoke: the tiny variants are plumbing)."""
    task = getattr(env, "task", None)
    if not config.recipes or config.smoke or task is None or task.name not in TASKS:
        return {}
    return dict(TASKS[task.name].recipes.get(agent, {}))


@dataclass(frozen=True)
class _Factory:
    """A factory and the env options its agent needs."""

    build: AgentFactory
    env_options: Mapping[str, Any]

    def __call__(self, env: TextGenerationVectorEnv, seed: int) -> Agent:
        return self.build(env, seed)


def _sb3_ppo(
    agent_class: type[Agent],
    env: TextGenerationVectorEnv,
    seed: int,
    config: SuiteConfig,
    options: Mapping[str, Any],
) -> Agent:
    """stable-baselines3's PPO with the suite's shared optimiser settings (see the module)."""
    new = env.max_new_tokens
    settings = {
        "learning_rate": config.learning_rate, "n_epochs": config.epochs, "n_steps": new,
        "batch_size": min(config.minibatch_size, env.num_envs) * new, "gamma": 1.0,
        "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.1,
        "max_grad_norm": 1.0,
    }  # fmt: skip
    return agent_class(env, seed=seed, **{**settings, **options})


# -- results -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One agent trained on one task with one seed.

    Attributes:
        task, agent, seed: which run.
        budget: the token budget; ``tokens``: the generated tokens it trained on (the first
            update boundary at or past the budget; 0 for a baseline).
        curve: the evaluations of the first ``curve_prompts`` held-out prompts (each
            ``eval_samples`` times, as in the final evaluation),
            ``{"fraction", "tokens", "metrics"}`` each: at the ``eval_points`` during training
            and at its end (a baseline: one, at fraction 0).
        final: the final evaluation's figures (:meth:`rlhf_agents.Evaluation.as_dict`).
        per_response: its per-response values where the evaluation gives them (NaN: None).
        sem: its standard errors over responses, where given.
        gold_name: the task's gold metric behind ``gold``.
        trained: whether the agent was trained (False for a baseline).
        seconds: wall time of the whole run (env, training, evaluations); ``train_seconds``:
            of training alone.
        device: where it ran.
        samples: the final evaluation's first :data:`SAMPLES` responses, each with the end of
            its prompt (its last :data:`SAMPLE_PROMPT_CHARS` characters).
        agent_settings: the agent's config as it ran (its dataclass ``config``, as JSON
            values: the shared settings under the task's recipe under ``agent_options``).
        history: a policy-gradient agent's logged means per iteration (``agent.history``:
            ``rollout/kl``, ``train/explained_variance``, ...; empty for other agents).
        task_details: the task's ``details`` as built for the run (the models behind its
            scores, with their held-out accuracies; sizes), as JSON values.
        training_setup: what trained (``"frozen:24"``, ...); ``options``: the env and task
            options the run's env was built with (its suite budget's and the config's).
    """

    task: str
    agent: str
    seed: int
    budget: int
    tokens: int
    curve: list[dict[str, Any]]
    final: dict[str, float]
    per_response: dict[str, list[float | None]] = field(default_factory=dict)
    sem: dict[str, float] = field(default_factory=dict)
    gold_name: str | None = None
    trained: bool = True
    seconds: float = 0.0
    train_seconds: float = 0.0
    device: str = ""
    samples: list[dict[str, Any]] = field(default_factory=list)
    agent_settings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    task_details: dict[str, Any] = field(default_factory=dict)
    training_setup: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        """``(task, agent, seed)``."""
        return self.task, self.agent, self.seed


@dataclass
class SuiteResult:
    """The settings, the machine and every finished run (what the JSON file holds)."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (NaN written as null)."""
        document = {
            "settings": self.settings,
            "machine": self.machine,
            "runs": [dataclasses.asdict(run) for run in self.runs],
        }
        return _without_nan(document)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> SuiteResult:
        """The result a :meth:`to_json` document holds."""
        names = {item.name for item in dataclasses.fields(RunResult)}
        runs = [
            RunResult(**{k: v for k, v in run.items() if k in names}) for run in document["runs"]
        ]
        return cls(dict(document["settings"]), dict(document.get("machine", {})), runs)

    @classmethod
    def read(cls, path: str | Path) -> SuiteResult:
        """The result written to ``path``."""
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a suite results file ({error}); pass another --out, or --fresh"
            ) from error

    @classmethod
    def merge(cls, results: Sequence[SuiteResult]) -> SuiteResult:
        """One result from several of the same settings, e.g. the parts of one suite run in
        several processes (each on its tasks or seeds); a run found twice is an error."""
        if not results:
            raise ValueError("nothing to merge: give at least one suite result")
        first = results[0]
        for other in results[1:]:
            if other.settings != first.settings:
                differ = sorted(
                    key for key in {*first.settings, *other.settings}
                    if first.settings.get(key) != other.settings.get(key)
                )  # fmt: skip
                raise ValueError(
                    f"the results were run with other settings (differing: {', '.join(differ)})"
                    "; only parts of one suite, run with the same settings, merge"
                )
        runs = [run for result in results for run in result.runs]
        keys = [run.key for run in runs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"runs {twice} are in more than one result; merge each run once")
        return cls(dict(first.settings), dict(first.machine), runs)

    def write(self, path: str | Path) -> Path:
        """Write the JSON to ``path`` atomically (an interrupted write leaves the old file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(temporary, path)
        return path

    def tasks(self) -> list[str]:
        """The tasks of the runs, in the order they first appear."""
        return list(dict.fromkeys(run.task for run in self.runs))

    def runs_of(self, task: str, agent: str | None = None) -> list[RunResult]:
        """The runs of ``task`` (of one ``agent``), in order."""
        return [r for r in self.runs if r.task == task and (agent is None or r.agent == agent)]


def machine_info() -> dict[str, Any]:
    """Where the suite runs: platform, CPUs, torch threads, accelerator, library versions."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# -- running -----------------------------------------------------------------------------------


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
    if previous.settings != settings:
        differ = sorted(
            key for key in {*settings, *previous.settings}
            if settings.get(key) != previous.settings.get(key)
        )  # fmt: skip
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
    final_prompts = spec.eval_prompts[: config.eval_prompts] * config.eval_samples
    curve_prompts = final_prompts
    if config.curve_prompts is not None:
        curve_prompts = spec.eval_prompts[: config.curve_prompts] * config.eval_samples

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


def rank_metric(runs: Sequence[RunResult]) -> str:
    """What ranks the runs: ``gold`` where the evaluations have it, else ``score``."""
    return "gold" if any("gold" in run.final for run in runs) else "score"


def as_float(value: Any) -> float:
    """A figure as a float (a missing one, or JSON's null for NaN, as NaN)."""
    return math.nan if value is None else float(value)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value
