"""The Chit-Chat Challenge conversations of the ``chitchat-dataset`` package (MIT, BYU PCC lab) as
scripts of user turns for the multi-turn dialogue mode.

The package ships ``dataset.json``: 7,168 open-domain conversations between two crowd workers,
keyed by id, each ``{"messages": [[utterance, ...], ...], "start", "prompt", "ratings"}``: every
inner list is a run of consecutive utterances ``{"text", "timestamp", "sender"}`` of one speaker,
the runs alternating between the two speakers. 3,150 conversations are a single run (the opener
got no answer). ``prompt`` is the topic the workers were shown; the ratings (``witty``,
``upbeat``, ``interesting``) are too coarse to be preferences.

:func:`chitchat_conversations` keeps, of each conversation, the turns of the speaker who opens
it (the user): the env plays them, and the policy writes the other speaker's turns in between.

Example:
    >>> scripts = chitchat_conversations(min_user_turns=3)
    >>> len(scripts)
    3106
    >>> scripts[0][0]  # the opener's first two messages, "Hello" and "How are you doing today?"
    'Hello How are you doing today?'
"""

from __future__ import annotations

import functools

from rlhf_env.extras import require

#: The number of conversations in ``chitchat-dataset==0.9.0``.
CHITCHAT_CONVERSATIONS = 7168


def chitchat_conversations(min_user_turns: int = 1) -> list[list[str]]:
    """Each conversation's user turns, in the package's file order (stable for the pinned
    version).

    The user is the speaker of the conversation's first non-empty utterance. Consecutive
    utterances of one speaker are joined with a space into one turn, the other speaker's
    utterances are dropped (the policy writes those), and whitespace is collapsed; empty
    utterances are skipped.

    Args:
        min_user_turns: leave out conversations with fewer user turns than this (at least 1).

    Raises:
        ImportError: the ``chitchat-dataset`` package is missing (the message names the
            ``dialogue`` extra that installs it).
        ValueError: ``min_user_turns`` below 1.
    """
    if min_user_turns < 1:
        raise ValueError(f"min_user_turns must be at least 1, got {min_user_turns}")
    return [list(turns) for turns in _all_user_turns() if len(turns) >= min_user_turns]


@functools.lru_cache(maxsize=1)
def _all_user_turns() -> tuple[tuple[str, ...], ...]:
    """Every conversation's user turns (read once: the JSON file is 40 MB)."""
    package = require("chitchat_dataset", "dialogue", "the chit-chat dialogue scripts")
    return tuple(_user_turns(record["messages"]) for record in package.Dataset().values())


def _user_turns(runs: list[list[dict[str, str]]]) -> tuple[str, ...]:
    """The opener's turns of one conversation, from its runs of ``{"text", "sender"}``."""
    turns: list[tuple[str, list[str]]] = []  # (sender, texts) per run of one speaker
    for utterance in (utterance for run in runs for utterance in run):
        text = " ".join(utterance["text"].split())
        if not text:
            continue
        if turns and turns[-1][0] == utterance["sender"]:
            turns[-1][1].append(text)
        else:
            turns.append((utterance["sender"], [text]))
    if not turns:
        return ()
    user = turns[0][0]
    return tuple(" ".join(texts) for sender, texts in turns if sender == user)
