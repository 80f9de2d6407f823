"""Ready-made tasks, each one ``gym.make`` away on offline defaults.

=============================== ===============================================================
``rlhf_env/PositiveReview-v0``  continue IMDB review openings positively; learned reward,
                                gold = a MiniLM sentiment judge trained on labelled reviews
``rlhf_env/Harmless-v0``        answer real HH-RLHF conversations; reward model trained on
                                Anthropic's human preferences (packaged)
``rlhf_env/Arithmetic-v0``      chain sums from reasoning-gym answered in <answer> tags;
                                reward and gold = exact match on held-out problems
``rlhf_env/Dialogue-v0``        hold 3-turn HH-RLHF conversations (the env inserts the human
                                turns); every assistant turn scored by Harmless's reward model
``rlhf_env/TextArena-v0``       play a TextArena game (``game=...``) token by token; reward
                                and gold = the game's outcome on held-out seeds
``rlhf_env/ReasoningGym-v0``    answer a reasoning-gym dataset (``dataset=...``) in <answer>
                                tags; reward and gold = its own ``score_answer``
=============================== ===============================================================

``list_tasks()`` (and ``rlhf-env tasks``) lists them with a line each; ``gym.make(id)`` with
no arguments builds a working env; every argument can be overridden (see
:mod:`rlhf_env.tasks.registry`). The env carries its task as ``env.task`` (held-out prompts,
gold metrics).
"""

from rlhf_env.tasks import (
    arithmetic,
    dialogue,
    harmless,
    positive_review,
    reasoning_gym,
    text_arena,
)
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.registry import (
    TASKS,
    build_task,
    list_tasks,
    make_task_env,
    make_task_vector_env,
    register_task,
    smoke_arguments,
    task_options,
    task_spec,
)

for _spec in (
    positive_review.SPEC,
    harmless.SPEC,
    arithmetic.SPEC,
    dialogue.SPEC,
    text_arena.SPEC,
    reasoning_gym.SPEC,
):
    register_task(_spec)

__all__ = [
    "TASKS",
    "SuiteBudget",
    "Task",
    "TaskContext",
    "TaskSpec",
    "build_task",
    "list_tasks",
    "make_task_env",
    "make_task_vector_env",
    "register_task",
    "smoke_arguments",
    "task_options",
    "task_spec",
]
