"""The rules of a dialogue episode, shared by the single and the vector env.

:class:`DialogueRules` decides what an assistant token does to a conversation: it goes on in the
turn, it ends the turn and the env inserts the next user turn (:class:`TurnOutcome` carries the
ids), or it ends the episode. It changes no state itself (the envs score first and commit after,
so a failing reward function or user simulator loses nothing); :meth:`DialogueRules.commit`
applies an outcome to a :class:`Conversation`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.dialogue import turn_level
from rlhf_env.dialogue.script import DialogueScript, as_dialogue_prompt, transcript
from rlhf_env.dialogue.template import IncrementalChatTemplate
from rlhf_env.dialogue.turn_level import TurnLevelEnv, TurnLevelEpisode, TurnLevelStep

#: ``user_fn(conversation) -> str | None``: the next user turn given the chat messages so far
#: (ending with the assistant's turn), or ``None`` to end the conversation.
UserFn = Callable[[list[dict[str, str]]], "str | None"]

#: When a reward function scores: at the end of every assistant turn, or at the episode's end.
TURN_REWARDS: tuple[str, ...] = ("turn", "end")

#: What a turn cut at ``max_new_tokens`` does: truncate the episode, or end the turn (the env
#: inserts the end-of-turn token) and go on.
TURN_CUTS: tuple[str, ...] = ("truncate", "end_turn")


@dataclass
class Conversation:
    """One episode's conversation.

    Attributes:
        script: the user's scripted turns.
        messages: the chat so far: completed turns and the current user turn.
        turn: index of the assistant turn being written.
        turn_ids: its token ids so far (the agent's actions).
        tokens: tokens after the first prompt, the agent's and the inserted ones.
        turn_scores: the score of each finished turn (``"turn"`` rewards, or a turn-level
            env's rewards).
        turn_env: the turn-level env whose observations are the user's turns (None: the
            script's turns and ``user_fn``).
        outcome: the turn-level env's named outcome figures so far (its steps'
            ``info["outcome"]``, later ones updating earlier ones).
    """

    script: DialogueScript
    messages: list[dict[str, str]]
    turn: int = 0
    turn_ids: list[int] = field(default_factory=list)
    tokens: int = 0
    turn_scores: list[float] = field(default_factory=list)
    turn_env: TurnLevelEnv | None = None
    outcome: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnOutcome:
    """What one assistant token does (see :meth:`DialogueRules.outcome`).

    Attributes:
        token: the token.
        turn: the index of the assistant turn it belongs to.
        turn_text: the assistant turn's text including the token (special tokens skipped),
            when the turn ends with it; ``""`` in the middle of a turn.
        ends_turn: the turn ends with this token: the agent's end-of-turn or EOS token, a cut
            (see ``cut``) that ends the turn or the episode, or the episode's end.
        cut: the turn reached ``max_new_tokens`` (or the conversation ``max_total_tokens``)
            without the agent ending it; ``missing_eos_penalty`` applies. With
            ``turn_cut="end_turn"`` the env then inserts the end-of-turn token itself and the
            conversation goes on; otherwise the episode is truncated.
        terminated: the conversation is over (last turn, or no next user turn).
        truncated: cut: the turn reached ``max_new_tokens``, the conversation its token budget.
        inserted_ids: ids the env appends after the token (the next user turn); empty unless
            the conversation goes on.
        user_turn: the next user turn's text, when it goes on.
        score_prompt: the transcript before the turn, when the reward function scores this
            step, else ``None``.
        turn_step: a turn-level env's answer to the turn, when the turn ended in a turn-level
            episode: its reward is the turn's score (the reward function is not called).
    """

    token: int
    turn: int
    turn_text: str
    ends_turn: bool
    cut: bool
    terminated: bool
    truncated: bool
    inserted_ids: list[int]
    user_turn: str | None
    score_prompt: str | None
    turn_step: TurnLevelStep | None = None

    @property
    def env_score(self) -> float | None:
        """The turn-level env's reward for the turn, when it paid one."""
        return None if self.turn_step is None else self.turn_step.reward

    @property
    def episode_over(self) -> bool:
        """The episode ends with this token."""
        return self.terminated or self.truncated


class DialogueRules:
    """How dialogue episodes go, for one env (see ``TextGenerationEnv``'s Dialogue section).

    Args:
        tokenizer: the policy's tokenizer, with a chat template.
        eos_token_ids: the env's EOS tokens; with the template's end-of-turn token they end a turn.
        max_turns: assistant turns per episode.
        max_new_tokens: tokens per assistant turn.
        max_total_tokens: tokens after the first prompt, inserted ones included.
        turn_rewards: ``"turn"`` (score every turn) or ``"end"`` (the last turn only).
        user_fn: writes user turns once a script's run out (``None``: the conversation ends).
        turn_cut: a turn that reaches ``max_new_tokens`` truncates the episode
            (``"truncate"``) or is ended by the env, which inserts the end-of-turn token, and
            the conversation goes on (``"end_turn"``).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        eos_token_ids: frozenset[int],
        max_turns: int,
        max_new_tokens: int,
        max_total_tokens: int,
        turn_rewards: str = "turn",
        user_fn: UserFn | None = None,
        turn_cut: str = "truncate",
    ) -> None:
        self.tokenizer = tokenizer
        self.template = IncrementalChatTemplate(tokenizer)
        self.end_ids = frozenset(eos_token_ids) | {self.template.end_of_turn_id}
        self.max_turns = max_turns
        self.max_new_tokens = max_new_tokens
        self.max_total_tokens = max_total_tokens
        self.turn_rewards = turn_rewards
        self.user_fn = user_fn
        self.turn_cut = turn_cut
        self._warned_budget = False

    def start(self, prompt: Any) -> tuple[Conversation, list[int], str]:
        """A new conversation from a prompt (see :func:`as_dialogue_prompt`; a turn-level
        episode's env is made and reset here), with the ids and text of its first observation
        (the template with the assistant header)."""
        prompt = as_dialogue_prompt(prompt)
        if isinstance(prompt, TurnLevelEpisode):
            if self.turn_rewards != "turn":
                raise ValueError(
                    "a turn-level env pays each turn's reward when the turn ends; use "
                    f"turn_rewards='turn' (got {self.turn_rewards!r})"
                )
            started = turn_level.start(prompt)
            script = DialogueScript((started.user_turn,), started.system)
            conversation = Conversation(script, started.messages(), turn_env=started.env)
        else:
            conversation = Conversation(prompt, prompt.opening())
        text = self.template.render(conversation.messages)
        return conversation, self.template.encode(text), text

    def outcome(self, conversation: Conversation, token: int) -> TurnOutcome:
        """What ``token`` does to ``conversation``; changes no state (``user_fn`` is called when
        a turn ends and the script has no next turn; a turn-level env steps a fork of itself,
        which :meth:`commit` keeps)."""
        turn_ids = [*conversation.turn_ids, token]
        tokens = conversation.tokens + 1
        by_agent = token in self.end_ids
        budget_full = tokens >= self.max_total_tokens
        cut = not by_agent and (len(turn_ids) >= self.max_new_tokens or budget_full)
        # The turn ends: the agent's end token, or (turn_cut="end_turn") the env's at
        # max_new_tokens when the conversation has room left.
        ends_turn = by_agent or (cut and self.turn_cut == "end_turn" and not budget_full)
        # Decoded only when the turn ends (a step in the middle of a turn costs no decode).
        text = self.tokenizer.decode(turn_ids, skip_special_tokens=True) if cut or by_agent else ""
        terminated = truncated = False
        inserted: list[int] = []
        user_turn = None
        step = None
        if not ends_turn:
            truncated = cut
        else:
            done = [*conversation.messages, {"role": "assistant", "content": text}]
            if conversation.turn_env is not None:  # the env answers the turn (on a fork)
                step = turn_level.play_turn(conversation.turn_env, text)
                user_turn = self._turn_level_user_turn(conversation, step)
                ends = step.terminated, not step.terminated
            else:
                if conversation.turn + 1 < self.max_turns:
                    user_turn = self._next_user_turn(conversation, done)
                ends = by_agent, not by_agent
            if user_turn is None:
                terminated, truncated = ends
            else:
                closing = [] if by_agent else [self.template.end_of_turn_id]
                inserted = closing + self.template.insertion(done, user_turn)[0]
                if tokens + len(inserted) + 1 > self.max_total_tokens:
                    self._warn_budget(tokens + len(inserted) + 1)
                    truncated, inserted, user_turn = True, [], None
        over = terminated or truncated
        scored = (ends_turn or over) if self.turn_rewards == "turn" else over
        scored = scored and conversation.turn_env is None  # a turn-level env pays its own
        return TurnOutcome(
            token=token, turn=conversation.turn, turn_text=text, ends_turn=ends_turn or over,
            cut=cut, terminated=terminated, truncated=truncated, inserted_ids=inserted,
            user_turn=user_turn, score_prompt=transcript(conversation.messages) if scored else None,
            turn_step=step,
        )  # fmt: skip

    def commit(self, conversation: Conversation, outcome: TurnOutcome, score: float | None) -> None:
        """Apply ``outcome`` (and the score it was paid, if scored) to ``conversation``."""
        conversation.turn_ids.append(outcome.token)
        conversation.tokens += 1
        if score is not None and self.turn_rewards == "turn":
            conversation.turn_scores.append(score)
        if outcome.turn_step is not None:
            conversation.turn_env = outcome.turn_step.env
            conversation.outcome.update(outcome.turn_step.outcome)
        if outcome.ends_turn:
            conversation.messages.append({"role": "assistant", "content": outcome.turn_text})
        if outcome.user_turn is not None:
            conversation.messages.append({"role": "user", "content": outcome.user_turn})
            conversation.turn += 1
            conversation.turn_ids = []
            conversation.tokens += len(outcome.inserted_ids)

    def _turn_level_user_turn(self, conversation: Conversation, step: TurnLevelStep) -> str | None:
        """The user turn after a turn-level env's ``step``, or None when the episode ends there
        (the env ended it, or this was the last of ``max_turns``)."""
        if step.terminated or step.truncated or conversation.turn + 1 >= self.max_turns:
            return None
        if not step.observation.strip():
            raise ValueError(
                f"{type(conversation.turn_env).__name__}.step returned an empty observation "
                "but did not end the episode; a turn-level env's observation is the next user "
                "turn"
            )
        return step.observation

    def _next_user_turn(
        self, conversation: Conversation, messages: list[dict[str, str]]
    ) -> str | None:
        scripted = conversation.script.user_turns
        if conversation.turn + 1 < len(scripted):
            return scripted[conversation.turn + 1]
        if self.user_fn is None:
            return None
        turn = self.user_fn([dict(m) for m in messages])
        if turn is not None and not isinstance(turn, str):
            raise TypeError(f"user_fn must return a str or None, got {type(turn).__name__}")
        return turn if turn and turn.strip() else None

    def _warn_budget(self, needed: int) -> None:
        if self._warned_budget:
            return
        warnings.warn(
            f"a user turn does not fit in max_total_tokens={self.max_total_tokens} (the "
            f"conversation would need {needed}); the episode is truncated there (shown once "
            "per env; raise max_total_tokens to keep longer conversations)",
            stacklevel=5,
        )
        self._warned_budget = True
