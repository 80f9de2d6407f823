"""The task registry: every task by id, one ``gym.make`` away.

``gym.make("rlhf_env/<Task>-v0")`` builds the task's env on its offline defaults (the
packaged SmolLM2-135M-Instruct, the task's prompts and reward); every argument can be given
instead: ``policy``, ``tokenizer``, ``reference``, ``reward_fn``, ``prompts``, the env's
settings (:class:`rlhf_env.EnvConfig`) and the task's own options (its builder's keyword
arguments, e.g. an arithmetic task's difficulty). ``gym.make_vec(..., num_envs=N)`` builds the
batched env the same way. The env carries the built task as ``env.task`` (held-out prompts,
gold metrics), which :func:`rlhf_agents.evaluate` reads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Any

import torch
from gymnasium.envs.registration import register, registry
from transformers import PreTrainedTokenizerBase

from rlhf_env import assets
from rlhf_env.config import EnvConfig, VectorEnvConfig
from rlhf_env.env import TextGenerationEnv
from rlhf_env.models.loading import load_causal_lm, load_tokenizer, pick_device
from rlhf_env.models.tiny import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.tasks.base import Task, TaskContext, TaskSpec
from rlhf_env.vector_env import TextGenerationVectorEnv

#: Every registered task by name.
TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to :data:`TASKS` and register ``rlhf_env/<name>-v0`` with Gymnasium."""
    TASKS[spec.name] = spec
    if spec.env_id not in registry:
        register(
            id=spec.env_id,
            entry_point=functools.partial(make_task_env, spec.name),
            vector_entry_point=functools.partial(make_task_vector_env, spec.name),
        )
    return spec


def list_tasks() -> list[tuple[str, str]]:
    """``(env id, one-line description)`` of every task, in registration order."""
    return [(spec.env_id, spec.description) for spec in TASKS.values()]


def task_spec(name: str) -> TaskSpec:
    """The entry of a task by name (``"Arithmetic"``) or id (``"rlhf_env/Arithmetic-v0"``)."""
    key = name.removeprefix("rlhf_env/").removesuffix("-v0")
    if key not in TASKS:
        raise KeyError(f"unknown task {name!r}; the tasks are {sorted(TASKS)}")
    return TASKS[key]


def task_options(name: str) -> dict[str, Any]:
    """A task's own options and their defaults: its builder's keyword arguments, then the
    fields of its :attr:`~rlhf_env.tasks.TaskSpec.shared_options`."""
    spec = task_spec(name)
    parameters = inspect.signature(spec.build).parameters.values()
    options = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    if spec.shared_options is not None:
        options.update((f.name, f.default) for f in dataclasses.fields(spec.shared_options))
    return options


def smoke_arguments(name: str, seed: int = 0) -> dict[str, Any]:
    """``gym.make`` arguments of task ``name``'s tiny variant: a random tiny GPT-2 and its
    tokenizer (built offline in seconds) and the task's :attr:`TaskSpec.smoke_options`."""
    spec = task_spec(name)
    tokenizer = build_tiny_tokenizer(chat_template=spec.chat_template)
    policy = build_tiny_gpt2(tokenizer, seed=seed, n_positions=spec.smoke_positions)
    return {"policy": policy, "tokenizer": tokenizer, **spec.smoke_options}


def make_task_env(name: str, **arguments: Any) -> TextGenerationEnv:
    """The single env of task ``name`` (what ``gym.make`` calls); see the module docstring."""
    env_arguments, task = _prepare(name, EnvConfig, arguments)
    env = TextGenerationEnv(**env_arguments)
    env.task = task
    return env


def make_task_vector_env(name: str, num_envs: int = 8, **arguments: Any) -> TextGenerationVectorEnv:
    """The vector env of task ``name`` (what ``gym.make_vec`` calls)."""
    env_arguments, task = _prepare(name, VectorEnvConfig, {**arguments, "num_envs": num_envs})
    env = TextGenerationVectorEnv(**env_arguments)
    env.task = task
    return env


def build_task(
    name: str,
    policy: torch.nn.Module | str | Path | None = None,
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> tuple[Task, torch.nn.Module, PreTrainedTokenizerBase]:
    """Task ``name`` built for ``policy`` (default: the task's packaged policy), with the loaded
    policy and tokenizer."""
    spec = task_spec(name)
    unknown = sorted(set(options) - set(task_options(name)))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} of task {spec.name}; its options are "
            f"{sorted(task_options(name))}, and the env's are {sorted(_fields(VectorEnvConfig))}"
        )
    target = pick_device(device)
    if policy is None or isinstance(policy, (str, Path)):
        path = assets.resolve(policy if policy is not None else spec.policy)
        policy = load_causal_lm(path, device=target, dtype=torch.float32)
        tokenizer = load_tokenizer(tokenizer if tokenizer is not None else path)
    elif tokenizer is None:
        raise TypeError("a policy given as a model needs its tokenizer: pass tokenizer=")
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    context = TaskContext(policy, tokenizer, target, progress)
    return spec.build(context, **options), policy, tokenizer


def _prepare(
    name: str, config_class: type[EnvConfig], arguments: dict[str, Any]
) -> tuple[dict[str, Any], Task]:
    """Split ``arguments`` into the env's and the task's, build the task, and return the env's
    constructor arguments (the task's defaults under the caller's)."""
    env_fields = _fields(config_class)
    objects = {k: arguments.pop(k) for k in ("reward_fn", "prompts", "reference") if k in arguments}
    settings = {k: arguments.pop(k) for k in list(arguments) if k in env_fields}
    # A setting that is also a task option (a task that filters prompts by max_prompt_tokens)
    # reaches both.
    shared = set(task_options(name))
    arguments.update({k: v for k, v in settings.items() if k in shared})
    task, policy, tokenizer = build_task(
        name,
        arguments.pop("policy", None),
        arguments.pop("tokenizer", None),
        device=settings.get("device"),
        progress=arguments.pop("progress", True),
        **arguments,
    )
    return {
        "policy": policy,
        "tokenizer": tokenizer,
        "reward_fn": objects.get("reward_fn", task.reward_fn),
        "prompts": objects.get("prompts", task.train_prompts),
        "reference": objects.get("reference", task.reference),
        **{k: v for k, v in task.env_options.items() if k in env_fields},
        **settings,
    }, task


def _fields(config_class: type) -> set[str]:
    return {item.name for item in dataclasses.fields(config_class)}
