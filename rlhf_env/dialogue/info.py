"""The ``info`` entries of a dialogue step (the single env's; the vector env batches them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf_env.dialogue.conversation import Conversation, TurnOutcome


def dialogue_info(
    conversation: Conversation, outcome: TurnOutcome, score: float | None, per_turn: bool
) -> dict[str, Any]:
    """After ``outcome`` was committed to ``conversation`` (``score``: what this step paid;
    ``per_turn``: the env scores every turn):

    - ``turn`` (every step): the index of the assistant turn the token belongs to;
    - ``inserted_ids`` and ``user_turn`` (when the turn ended and the conversation goes on): the
      ids appended after the token (no action, no KL, no log-prob) and the user turn's text;
    - ``turn_score`` (``turn_rewards="turn"``, when a turn ended): the turn's score;
    - at the episode's end: ``score`` (the sum of the episode's scores), ``response`` (the last
      turn's text), ``conversation`` (the messages) and, scoring every turn, ``turn_scores``;
      a turn-level episode's ``outcome`` (the env's named outcome figures, ``{}`` if none).
    """
    info: dict[str, Any] = {"turn": outcome.turn}
    if outcome.inserted_ids:
        info["inserted_ids"] = np.asarray(outcome.inserted_ids, dtype=np.int64)
        info["user_turn"] = outcome.user_turn
    if per_turn and score is not None:
        info["turn_score"] = score
    if outcome.episode_over:
        scores = conversation.turn_scores
        info["score"] = float(sum(scores)) if per_turn else float(score or 0.0)
        info["response"] = outcome.turn_text
        info["conversation"] = [dict(m) for m in conversation.messages]
        if per_turn:
            info["turn_scores"] = np.asarray(scores, dtype=np.float64)
        if conversation.turn_env is not None:
            info["outcome"] = dict(conversation.outcome)
    return info
