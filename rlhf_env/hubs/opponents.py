"""The other player of a two-player turn-level game: a Python function or a frozen causal LM.

An opponent is called as ``opponent(observation, system_prompt)`` and returns its move as
text. ``observation`` is everything the game has shown that player so far (the opponent keeps
no memory between calls), ``system_prompt`` the game's prompt for its seat (its rules, its
side), or ``None``.

- :class:`ScriptedOpponent` wraps any function ``fn(observation) -> move``;
- :class:`LanguageModelOpponent` prompts a frozen causal LM with the game's prompt as system
  message and the observation as user message, and returns its reply.

Example:
    >>> opponent = ScriptedOpponent(lambda observation: "[4]")
    >>> opponent("Current board: ...", "You are Player 1 in Tic Tac Toe.")
    '[4]'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rlhf_env.dialogue.users import LanguageModelUser, Message

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: The system message of a :class:`LanguageModelOpponent` whose game gave no prompt.
DEFAULT_OPPONENT_INSTRUCTION = "You are playing a game. Reply with your next move."


@runtime_checkable
class Opponent(Protocol):
    """The other player: ``opponent(observation, system_prompt) -> move``."""

    def __call__(self, observation: str, system_prompt: str | None = None) -> str:
        """The opponent's move, given all it has been shown and its seat's prompt."""
        ...


class ScriptedOpponent:
    """An opponent that is a Python function of the observation.

    Args:
        fn: ``fn(observation) -> move``; it does not see the system prompt. A function that
            draws from :mod:`random` draws from the env's own seeded stream (the TextArena
            adapter swaps it in around each step), so a seeded game replays exactly.

    Example:
        >>> ScriptedOpponent(str.upper)("[a]")
        '[A]'
    """

    def __init__(self, fn: Callable[[str], str]) -> None:
        if not callable(fn):
            raise TypeError(f"ScriptedOpponent needs a function, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, observation: str, system_prompt: str | None = None) -> str:
        """``fn(observation)``, as a string."""
        move = self.fn(observation)
        if not isinstance(move, str):
            raise TypeError(
                f"the scripted opponent {self.fn!r:.60} returned {type(move).__name__}, not the "
                "move's text"
            )
        return move

    def __repr__(self) -> str:
        return f"ScriptedOpponent({self.fn!r})"


def as_opponent(opponent: Opponent | Callable[[str], str]) -> Opponent:
    """``opponent`` itself if it takes ``(observation, system_prompt)``, a one-argument
    function wrapped in :class:`ScriptedOpponent`.

    Raises:
        TypeError: ``opponent`` is not callable with one or two arguments.
    """
    if not callable(opponent):
        raise TypeError(f"an opponent must be callable, got {type(opponent).__name__}")
    try:
        signature = inspect.signature(opponent)
    except (TypeError, ValueError):  # a builtin without a signature: call it as it is
        return opponent  # type: ignore[return-value]
    if _accepts(signature, "", None):
        return opponent  # type: ignore[return-value]
    if _accepts(signature, ""):
        return ScriptedOpponent(opponent)
    raise TypeError(
        f"the opponent {opponent!r:.60} takes neither (observation) nor (observation, "
        "system_prompt); give it one of those signatures"
    )


def _accepts(signature: inspect.Signature, *args: Any) -> bool:
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True


class _ChatContinuation(LanguageModelUser):
    """:class:`LanguageModelUser`'s generation on a chat given as is: no instruction prepended,
    no roles swapped; the reply is the chat's next assistant message."""

    def messages_for(self, conversation: Sequence[Message]) -> list[dict[str, str]]:
        return [dict(message) for message in conversation]


class LanguageModelOpponent:
    """A frozen causal LM that plays the other seat: the game's prompt is its system message,
    its observation the user message, and its reply (its next assistant message) the move.

    Generation is :class:`rlhf_env.dialogue.users.LanguageModelUser`'s: frozen (no grad, eval
    mode, training flags restored), greedy by default or sampled from a generator seeded by
    ``seed`` and the prompt (reproducible, independent of call order, the global RNG left as
    it was), cut to the model's context from the start. A tokenizer without a chat template
    gets ``"System: ...\\nUser: ...\\nAssistant:"`` lines. The model must not be the policy
    being trained (pass another model or ``rlhf_env.models.frozen_copy(policy)``); forks of
    an env share it.

    Args:
        model: a causal LM whose vocabulary is ``tokenizer``'s.
        tokenizer: its tokenizer.
        max_new_tokens: the most tokens of one move.
        temperature: the sampling temperature (> 0), or ``None`` for greedy decoding.
        seed: the sampling seed (unused when greedy).
        max_prompt_tokens: the most prompt tokens (``None``: the model's context less
            ``max_new_tokens``).

    Example:
        >>> from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer
        >>> tokenizer = build_tiny_tokenizer()
        >>> opponent = LanguageModelOpponent(build_tiny_llama(tokenizer), tokenizer,
        ...                                  max_new_tokens=4)
        >>> isinstance(opponent("Board: ...", "You are Player 1."), str)
        True
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        max_new_tokens: int = 32,
        temperature: float | None = None,
        seed: int = 0,
        max_prompt_tokens: int | None = None,
    ) -> None:
        self._generator = _ChatContinuation(
            model,
            tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            max_prompt_tokens=max_prompt_tokens,
        )

    @property
    def model(self) -> torch.nn.Module:
        """The frozen model."""
        return self._generator.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Its tokenizer."""
        return self._generator.tokenizer

    def messages_for(
        self, observation: str, system_prompt: str | None = None
    ) -> list[dict[str, str]]:
        """The chat shown to the model: the prompt as system message, the observation as
        user message."""
        return [
            {"role": "system", "content": system_prompt or DEFAULT_OPPONENT_INSTRUCTION},
            {"role": "user", "content": observation},
        ]

    def __call__(self, observation: str, system_prompt: str | None = None) -> str:
        """The model's move: its reply, stripped (``""`` when it writes nothing, which the
        game treats as an invalid move)."""
        return self._generator(self.messages_for(observation, system_prompt)) or ""
