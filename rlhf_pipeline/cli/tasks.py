"""``rlhf-env tasks``: the registered tasks, one line each, with their options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlhf_env.tasks import SuiteBudget


def list_command(args: argparse.Namespace) -> int:
    """Print each task's id and description, then its default policy and own options."""
    from rlhf_env.tasks import TASKS, list_tasks, task_options

    tasks = list_tasks()
    if not tasks:
        print("no tasks are registered")
        return 0
    width = max(len(env_id) for env_id, _ in tasks)
    for (env_id, description), spec in zip(tasks, TASKS.values(), strict=True):
        print(f"{env_id:<{width}}  {description}")
        options = ", ".join(f"{name}={value!r}" for name, value in task_options(env_id).items())
        print(f"{'':<{width}}  policy {spec.policy}; options: {options or 'none'}")
        for agent, recipe in spec.recipes.items():
            settings = ", ".join(f"{name}={value!r}" for name, value in recipe.items())
            print(f"{'':<{width}}  recipe for {agent}: {settings}")
        if spec.budget is not None:
            print(f"{'':<{width}}  suite budget: {budget_line(spec.budget)}")
    print(
        "\ngym.make(ID, **options) builds one; rlhf-env eval --task ID evaluates a policy on it "
        "(--smoke: its tiny variant)."
    )
    return 0


def budget_line(budget: SuiteBudget) -> str:
    """A task's :class:`~rlhf_env.tasks.SuiteBudget` on one line."""
    options = "".join(f", {name}={value!r}" for name, value in budget.options.items())
    answers = f", {budget.eval_samples} answers per held-out prompt" * (budget.eval_samples > 1)
    return f"{budget.timesteps:,} tokens on {budget.training_setup}{options}{answers}"


def register(commands: Any) -> None:
    """Add ``tasks``."""
    parser = commands.add_parser(
        "tasks",
        help="list the ready-made tasks (rlhf_env/<Task>-v0) and their options",
        description="One line per registered task: its Gymnasium id and description, then its "
        "default policy and its own options with their defaults (gym.make accepts them beside "
        "the env's settings), its recipes (the agent settings that work on it) and its suite "
        "budget (tokens, training setup and options per run), which the benchmark suite uses.",
    )
    parser.set_defaults(handler=list_command, command_parser=parser)
