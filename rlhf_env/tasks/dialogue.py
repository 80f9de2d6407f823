"""``rlhf_env/Dialogue-v0``: hold real multi-turn HH-RLHF conversations, turn by turn, for the
Harmless task's reward model.

- **episodes**: dialogues of ``max_turns`` assistant turns (default 3): the user's turns are the
  human turns of a packaged HH-RLHF harmless-base conversation with at least that many (835 of
  the 1,800), inserted by the env after each assistant turn; the assistant's turns are the
  policy's (see the dialogue mode of :class:`rlhf_env.TextGenerationEnv`). A turn that reaches
  ``max_new_tokens`` (32) is ended by the env (``turn_cut="end_turn"``: it inserts the
  end-of-turn token) and the conversation goes on: SmolLM2-135M ends fewer than one turn in six
  within 32 (or 64) tokens, so with ``"truncate"`` most episodes would stop after one turn;
- **reward model**: the Harmless task's (all-MiniLM-L6-v2 with a scalar head trained on the
  training pairs; the same cached model), reading the transcript of the conversation so far in
  HH's ``"\\n\\nHuman: ...\\n\\nAssistant:"`` form and the turn; every assistant turn is scored
  when it ends (``turn_rewards="turn"``);
- **split**: the reward model's, by conversation: held-out conversations are neither in the
  reward model's training pairs nor among RL's scripts;
- **gold**: the Harmless task's gold model (a linear probe on SmolLM2's hidden states, the
  same cached fit, stronger than the reward model on held-out human pairs) on the last turn
  given the whole conversation, on held-out conversations; ``gold_turn/<k>`` gives it for
  every turn, beside the reward model's per-turn scores (``turn_score/<k>``), KL and fluency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf_env.data.preferences import PreferencePair
from rlhf_env.dialogue.script import DialogueScript, as_script
from rlhf_env.rewards.base import RewardFunction
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.harmless import (
    RECIPE,
    SMOKE_MODEL_OPTIONS,
    HHModelOptions,
    hh_models,
    keep_latest_turns,
)

NAME = "Dialogue"


class TranscriptReward:
    """A reward model trained on HH pairs, read on a dialogue env's transcripts: the prompt is
    the conversation so far (``"\\n\\nHuman: ...\\n\\nAssistant:"``), the response the turn
    (a long transcript loses its first turns, not its last: :func:`keep_latest_turns`)."""

    def __init__(self, reward_model: RewardFunction) -> None:
        self.reward_model = keep_latest_turns(reward_model)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per turn."""
        return self.reward_model(prompts, [" " + response.strip() for response in responses])


def build(
    context: TaskContext,
    max_turns: int = 3,
    eval_prompts: int = 64,
    max_prompt_tokens: int = 128,
    **model_options: Any,
) -> Task:
    """The Dialogue task for ``context.policy`` (see the module docstring).

    Args:
        max_turns: assistant turns per conversation (also the env's setting); conversations
            with fewer human turns are left out.
        eval_prompts: held-out conversations evaluated (at most those the split holds out).
        max_prompt_tokens: longest first prompt (the template with the first user turn) kept.
        model_options: the fields of :class:`~rlhf_env.tasks.harmless.HHModelOptions`: the
            Harmless task's split, reward model and gold model (the same settings share one
            cached model).
    """
    models = hh_models(context, HHModelOptions(**model_options))
    train = _scripts(context, models.train_pairs, max_turns, max_prompt_tokens)
    held_out = _scripts(context, models.held_out_pairs, max_turns, max_prompt_tokens)
    if not train or not held_out:
        raise ValueError(
            f"no conversation has {max_turns} human turns and a first prompt within "
            f"max_prompt_tokens={max_prompt_tokens}; lower max_turns or raise max_prompt_tokens"
        )
    return Task(
        name=NAME,
        train_prompts=train,
        eval_prompts=held_out[:eval_prompts],
        reward_fn=TranscriptReward(models.reward_model(context.device)),
        gold={"gold_model": TranscriptReward(models.gold_model(context.device))},
        env_options={
            "max_turns": max_turns,
            "max_new_tokens": 32,
            "max_prompt_tokens": max_prompt_tokens,
            "max_total_tokens": max_turns * 32 + (max_turns - 1) * 96,
            "turn_rewards": "turn",
            "turn_cut": "end_turn",
        },
        details={
            **models.details(),
            "train_conversations": len(train),
            "held_out_conversations": len(held_out),
        },
    )


def _scripts(
    context: TaskContext, pairs: Sequence[PreferencePair], max_turns: int, max_tokens: int
) -> list[DialogueScript]:
    """The pairs' conversations with at least ``max_turns`` human turns, cut to their first
    ``max_turns``, whose first prompt fits ``max_tokens``."""
    scripts = []
    for pair in pairs:
        script = as_script(pair.prompt)
        if len(script.user_turns) < max_turns:
            continue
        script = DialogueScript(script.user_turns[:max_turns], script.system)
        text = context.chat_prompt(script.opening())
        if len(context.tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            scripts.append(script)
    return scripts


#: A suite run's budget: 4,096 tokens of the top 6 blocks, the issue-19 run's (about 9 minutes
#: of PPO on 2 cores, at Harmless's recipe; benchmarks/RESULTS.md). Dialogue is not in the
#: 90-minute suite.
BUDGET = SuiteBudget(timesteps=4096, training_setup="frozen:24")

SPEC = TaskSpec(
    name=NAME,
    description="hold 3-turn HH-RLHF conversations turn by turn (the env inserts the human "
    "turns); every turn scored by the Harmless reward model",
    build=build,
    shared_options=HHModelOptions,
    smoke_options={
        **SMOKE_MODEL_OPTIONS,
        "max_pairs": 120,
        "eval_prompts": 4,
        "max_turns": 2,
        "max_prompt_tokens": 96,
        "max_new_tokens": 6,
        "max_total_tokens": 160,
    },
    chat_template=True,
    recipes={"ppo": RECIPE, "rloo": RECIPE, "grpo": RECIPE},
    budget=BUDGET,
)

__all__ = ["BUDGET", "SPEC", "TranscriptReward", "build"]
