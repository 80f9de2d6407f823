"""What the turn-level tasks (TextArena, ReasoningGym) share: their env options and gold.

A turn-level task plays episodes of a turn-level env (:mod:`rlhf_env.dialogue.turn_level`):
its env options size the dialogue env to its episodes, and its gold metrics are figures of the
episodes' outcomes (:class:`~rlhf_env.rewards.outcome.EpisodeOutcome`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rlhf_env.dialogue import turn_level
from rlhf_env.dialogue.turn_level import TurnLevelEpisode
from rlhf_env.rewards.outcome import EpisodeOutcome
from rlhf_env.tasks.base import TaskContext

#: Tokens of the prompt allowed beyond the longest first prompt measured.
PROMPT_MARGIN = 32


def env_options(
    context: TaskContext,
    sample: Iterable[TurnLevelEpisode],
    max_turns: int,
    turn_tokens: int,
    between_turns_tokens: int,
) -> dict[str, Any]:
    """The dialogue env's options for episodes like ``sample``: ``max_turns`` agent turns of
    ``turn_tokens`` (a longer turn is closed by the env and still played,
    ``turn_cut="end_turn"``), ``between_turns_tokens`` per inserted user turn, and prompts up
    to the longest first prompt of ``sample`` (a longer one is cut from the left, with a
    warning) plus :data:`PROMPT_MARGIN`. Each turn gets one token more than its budget, so a
    cut turn is closed and played before the conversation's budget ends it unplayed."""
    first_prompt = max(prompt_tokens(context, episode) for episode in sample)
    return {
        "max_turns": max_turns,
        "max_new_tokens": turn_tokens,
        "max_prompt_tokens": first_prompt + PROMPT_MARGIN,
        "max_total_tokens": max_turns * (turn_tokens + 1) + (max_turns - 1) * between_turns_tokens,
        "turn_rewards": "turn",
        "turn_cut": "end_turn",
    }


def prompt_tokens(context: TaskContext, episode: TurnLevelEpisode) -> int:
    """Tokens of an episode's first prompt (its env made and reset): the system message, the
    history and the first user turn, through the policy's chat template."""
    text = context.chat_prompt(turn_level.start(episode).messages())
    return len(context.tokenizer(text, add_special_tokens=False).input_ids)


def outcome_gold(figures: Iterable[str]) -> dict[str, EpisodeOutcome]:
    """Gold metrics reading ``figures`` of each episode's outcome, the first being the gold."""
    return {name: EpisodeOutcome(name) for name in figures}


__all__ = ["PROMPT_MARGIN", "env_options", "outcome_gold", "prompt_tokens"]
