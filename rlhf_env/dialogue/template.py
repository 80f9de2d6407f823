"""A chat template applied incrementally: the ids of a conversation grow turn by turn, never
re-encoded.

In dialogue mode the agent's sampled tokens are the assistant's turns and the env inserts the
rest: the first prompt, then after each assistant turn the template's closing of that turn, the
next user turn and the assistant header. :class:`IncrementalChatTemplate` renders the template
on the whole conversation each time (text, cheap) and tokenises only the new part, so the ids
the policy is trained on are the ids it saw and sampled.

## When the ids equal the template applied to the whole conversation

The env's ids of a finished episode, followed by :attr:`IncrementalChatTemplate.closing`, equal
``tokenizer(apply_chat_template(conversation), add_special_tokens=False)`` when:

1. the template renders earlier turns the same once later turns exist (each rendering is a
   prefix of the next; checked every turn, :class:`TemplateError` otherwise: e.g. templates that
   drop the reasoning of earlier turns);
2. the boundaries between inserted and sampled text fall on special tokens (ChatML's
   ``<|im_start|>``/``<|im_end|>``, Llama 3's header and ``<|eot_id|>``), so that tokenising the
   parts alone gives the same ids as tokenising the whole;
3. the agent's turn is the canonical tokenisation of its text and ends with the template's
   end-of-turn token, and the template does not rewrite the text (Llama 3 ``trim`` s it).

Where 3 does not hold, the env keeps the sampled ids (that is the point: no token drift) and
they differ from a re-tokenisation of the decoded conversation; a turn ended by another EOS
token (e.g. ``<|endoftext|>``) keeps that token, followed by the template's closing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

Message = Mapping[str, str]

#: Text no template produces, to find where an assistant turn's content ends.
_PROBE = "rlhf-env-probe-turn"


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be applied incrementally (the message says why)."""


class IncrementalChatTemplate:
    """The tokenizer's chat template, applied turn by turn.

    Attributes:
        end_of_turn_id: the special token the template closes an assistant turn with.
        closing: the text the template writes after that token (``"\\n"`` for ChatML,
            ``""`` for Llama 3); inserted at the start of the next user turn.

    Raises:
        TemplateError: the tokenizer has no chat template, or its assistant turns do not end
            with a special token.

    Example:
        >>> template = IncrementalChatTemplate(tokenizer)
        >>> ids = template.encode(template.render([{"role": "user", "content": "Hi"}]))
        >>> # ... the agent writes "Hello!" and <|im_end|>; then:
        >>> template.insertion(messages_with_the_reply, "How are you?")  # ids to append
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"{type(tokenizer).__name__} has no chat template; dialogue mode needs one (set "
                "tokenizer.chat_template, e.g. a ChatML template) to format the turns"
            )
        self.tokenizer = tokenizer
        probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
        text = self.render(probe, add_generation_prompt=False)
        tail = text[text.rindex(_PROBE) + len(_PROBE) :]
        ids = self.encode(tail)
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        if not ids or ids[0] not in special:
            raise TemplateError(
                f"the chat template ends an assistant turn with {tail!r}, which does not start "
                "with a special end-of-turn token; dialogue mode needs templates whose turns end "
                "with one (ChatML <|im_end|>, Llama 3 <|eot_id|>, ...)"
            )
        self.end_of_turn_id = int(ids[0])
        end_text = tokenizer.convert_ids_to_tokens(self.end_of_turn_id)
        if not tail.startswith(end_text):
            raise TemplateError(
                f"the chat template's turn ending {tail!r} does not start with the text of its "
                f"end-of-turn token {end_text!r}"
            )
        self.closing = tail[len(end_text) :]

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The template's text of ``messages`` (with the assistant header when
        ``add_generation_prompt``)."""
        return self.tokenizer.apply_chat_template(
            [dict(message) for message in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of template text (its special tokens parsed, none added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def insertion(self, messages: Sequence[Message], user_turn: str) -> tuple[list[int], str]:
        """Ids and text the env appends after the assistant turn that ends ``messages``: the
        rest of that turn's ending, ``user_turn`` and the assistant header.

        Raises:
            TemplateError: the template renders the earlier turns differently once the new
                turn is added (it cannot be extended without re-encoding).
        """
        before = self.render(messages, add_generation_prompt=False)
        after = self.render([*messages, {"role": "user", "content": user_turn}])
        if not after.startswith(before):
            raise TemplateError(
                "the chat template renders the conversation differently once a user turn is "
                "added (the earlier text is not a prefix of the longer one), so it cannot be "
                f"extended turn by turn; first difference near {_first_difference(before, after)!r}"
            )
        text = self.closing + after[len(before) :]
        return self.encode(text), text


def _first_difference(first: str, second: str) -> str:
    index = next(
        (i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b),
        min(len(first), len(second)),
    )
    return first[max(0, index - 20) : index + 20]
