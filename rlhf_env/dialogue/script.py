"""What a dialogue episode starts from: the user's turns (a script), and the transcript format
reward functions read.

A prompt of a dialogue env is a :class:`DialogueScript`, or anything :func:`as_script` turns into
one: a raw HH-RLHF conversation (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``: its human turns), a
list of user turns, chat messages (their system and user messages; assistant messages are
dropped, since the policy writes those), or one string (a single opening turn). A prompt may
also be an episode of a turn-level env (:class:`~rlhf_env.dialogue.turn_level.TurnLevelEpisode`),
whose observations are the user's turns (:func:`as_dialogue_prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_env.data.hh import dialogue_messages
from rlhf_env.dialogue.turn_level import TurnLevelEpisode


@dataclass(frozen=True)
class DialogueScript:
    """The user's side of a conversation.

    Attributes:
        user_turns: the user's turns in order (at least one); turn ``k`` follows assistant
            turn ``k - 1``. When they run out, the env's ``user_fn`` (if any) writes the next.
        system: a system message placed first, or ``None`` (the template's default).
    """

    user_turns: tuple[str, ...]
    system: str | None = None

    def __post_init__(self) -> None:
        turns = self.user_turns
        if not turns or not all(isinstance(turn, str) and turn.strip() for turn in turns):
            raise ValueError(f"a dialogue script needs non-empty user turns, got {turns!r}")

    def opening(self) -> list[dict[str, str]]:
        """The messages of the first prompt: the system message (if any) and the first turn."""
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": self.user_turns[0]}]


def as_script(item: Any) -> DialogueScript:
    """``item`` as a :class:`DialogueScript` (see the module docstring for what is accepted).

    Raises:
        TypeError: ``item`` is none of the accepted forms.
        ValueError: it holds no user turn.
    """
    if isinstance(item, DialogueScript):
        return item
    if isinstance(item, str):
        if "\n\nHuman:" in item:
            return _from_messages(dialogue_messages(item))
        return DialogueScript((item,))
    if isinstance(item, Sequence) and item and all(isinstance(x, str) for x in item):
        return DialogueScript(tuple(item))
    if isinstance(item, Sequence) and item and all(isinstance(x, Mapping) for x in item):
        return _from_messages(item)
    raise TypeError(
        "a dialogue prompt must be a DialogueScript, an HH conversation string, a list of user "
        f"turns or a list of chat messages; got {type(item).__name__}: {str(item)[:80]!r}"
    )


def as_dialogue_prompt(item: Any) -> DialogueScript | TurnLevelEpisode:
    """``item`` as what a dialogue episode starts from: a turn-level env's episode
    (:class:`~rlhf_env.dialogue.turn_level.TurnLevelEpisode`) as it is, anything else as a
    script (:func:`as_script`)."""
    return item if isinstance(item, TurnLevelEpisode) else as_script(item)


def _from_messages(messages: Sequence[Mapping[str, str]]) -> DialogueScript:
    system = [m["content"] for m in messages if m.get("role") == "system"]
    turns = tuple(m["content"] for m in messages if m.get("role") == "user")
    return DialogueScript(turns, system[0] if system else None)


def transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """``messages`` as a raw HH-RLHF transcript, ending with the assistant's cue:
    ``"\\n\\nHuman: u1\\n\\nAssistant: a1\\n\\nHuman: u2\\n\\nAssistant:"`` (system messages
    are left out). The form dialogue envs hand reward functions as the prompt of an assistant
    turn, the form reward models trained on HH pairs read.

    Example:
        >>> transcript([{"role": "user", "content": "Hi"}])
        '\\n\\nHuman: Hi\\n\\nAssistant:'
    """
    names = {"user": "Human", "assistant": "Assistant"}
    parts = [f"\n\n{names[m['role']]}: {m['content']}" for m in messages if m["role"] in names]
    return "".join(parts) + "\n\nAssistant:"
