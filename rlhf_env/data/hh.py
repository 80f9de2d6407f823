"""Anthropic's HH-RLHF harmless-base pairs, packaged (1,800 real human preference pairs, MIT).

The pairs are ``rlhf_env/data/hh_rlhf_harmless/pairs.jsonl.gz`` (its ``LICENSE`` and
``README.md`` beside it): two full dialogues a record that share everything up to the last
assistant turn. :func:`hh_harmless_pairs` splits them into ``(prompt, chosen, rejected)``, the
prompt being the raw conversation up to ``"\\n\\nAssistant:"``; :func:`dialogue_messages` turns
such a prompt into chat messages for a policy's chat template.
"""

from __future__ import annotations

import re
from pathlib import Path

from rlhf_env.data.preferences import PreferencePair, load_jsonl_pairs

#: The packaged file.
HH_HARMLESS_PAIRS = Path(__file__).parent / "hh_rlhf_harmless" / "pairs.jsonl.gz"

_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_harmless_pairs() -> list[PreferencePair]:
    """The 1,800 harmless-base pairs, split at the last assistant turn (every prompt differs)."""
    return load_jsonl_pairs(HH_HARMLESS_PAIRS)


def dialogue_messages(prompt: str) -> list[dict[str, str]]:
    """The turns of a raw HH conversation as ``[{"role": "user"|"assistant", "content"}]``.

    A trailing empty ``"\\n\\nAssistant:"`` (the turn to be written) is dropped, so the
    messages end with the user's last turn.

    Example:
        >>> text = "\\n\\nHuman: Hi\\n\\nAssistant: Yo\\n\\nHuman: Bye\\n\\nAssistant:"
        >>> [(m["role"], m["content"]) for m in dialogue_messages(text)]
        [('user', 'Hi'), ('assistant', 'Yo'), ('user', 'Bye')]

    Raises:
        ValueError: the text holds no ``Human:`` turn.
    """
    parts = _TURN.split(prompt)  # [before, role, text, role, text, ...]
    messages = []
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        content = text.strip()
        if content:
            messages.append(
                {"role": "user" if role == "Human" else "assistant", "content": content}
            )
    if not messages or messages[0]["role"] != "user":
        raise ValueError(f"not an HH conversation (no leading 'Human:' turn): {prompt[:80]!r}")
    return messages
