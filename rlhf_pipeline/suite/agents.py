"""The suite's agents by name or ``package.module:Class`` spec, and the factories that build one
for a run: the shared optimiser settings under a task's recipe under the agent's own options."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlhf_agents import AGENTS, Agent, PolicyAgent, RandomAgent, ReferenceAgent, make_agent
from rlhf_env.extras import require
from rlhf_env.tasks import TASKS
from rlhf_env.vector_env import TextGenerationVectorEnv

if TYPE_CHECKING:
    from rlhf_pipeline.suite.config import SuiteConfig

#: ``factory(env, seed) -> Agent``: builds the agent of one run in that run's fresh env. A
#: factory (or an agent class) with an ``env_options`` attribute, a dict, gets its env built
#: with those options (the ``sb3-ppo`` factory's: ``{"autoreset_mode": "SameStep"}``).
AgentFactory = Callable[[TextGenerationVectorEnv, int], Agent]

#: The agents the suite knows by name.
BUILTIN_AGENTS: tuple[str, ...] = ("ppo", "rloo", "grpo", "sb3-ppo", "reference", "random")
#: The built-in agents that are not trained (evaluated once, at zero tokens).
BASELINES: tuple[str, ...] = ("reference", "random")
#: Agent classes that never learn: no training, no curve.
FIXED_AGENTS: tuple[type[Agent], ...] = (ReferenceAgent, RandomAgent, PolicyAgent)


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
