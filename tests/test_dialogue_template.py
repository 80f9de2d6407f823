"""The chat template applied turn by turn gives the ids of the template applied to the whole
conversation (SmolLM2's tokenizer, a ChatML and a Llama-3-style one), and the documented
exceptions are what the docs say."""

from __future__ import annotations

import pytest
from chat_tokenizers import smollm2_tokenizer, tiny_chat_tokenizer

from rlhf_env.dialogue import DialogueScript, IncrementalChatTemplate, TemplateError, as_script
from rlhf_env.dialogue.script import transcript

USER_TURNS = ("Hello! How can I help you today?", "I would like a recipe for bread.", "Thanks!")
REPLIES = ("Hi, I need help.", "Sure, here is a simple one.\n\nMix flour and water.", "Bye.")


@pytest.fixture(scope="module", params=["smollm2", "chatml", "llama3"])
def tokenizer(request, tmp_path_factory):
    if request.param == "smollm2":
        return smollm2_tokenizer(tmp_path_factory.mktemp("smollm2"))
    return tiny_chat_tokenizer(request.param)


def incremental_ids(template: IncrementalChatTemplate, system: str | None = None) -> list[int]:
    """The ids a dialogue env holds after three turns written with the replies' canonical ids."""
    script = DialogueScript(USER_TURNS, system)
    messages = script.opening()
    ids = template.encode(template.render(messages))
    for turn, reply in enumerate(REPLIES):
        ids += [*template.encode(reply), template.end_of_turn_id]
        messages.append({"role": "assistant", "content": reply})
        if turn + 1 < len(USER_TURNS):
            inserted, _ = template.insertion(messages, USER_TURNS[turn + 1])
            ids += inserted
            messages.append({"role": "user", "content": USER_TURNS[turn + 1]})
    return ids, messages


@pytest.mark.parametrize("system", [None, "You answer briefly."])
def test_turn_by_turn_ids_equal_the_template_of_the_whole_conversation(tokenizer, system):
    template = IncrementalChatTemplate(tokenizer)
    ids, messages = incremental_ids(template, system)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    # The env stops at the last end-of-turn token; the template then writes its closing.
    assert ids + template.encode(template.closing) == list(expected)
    assert ids[-1] == template.end_of_turn_id


def test_the_end_of_turn_token_and_closing_are_read_from_the_template(tokenizer):
    template = IncrementalChatTemplate(tokenizer)
    name = tokenizer.convert_ids_to_tokens(template.end_of_turn_id)
    assert name in ("<|im_end|>", "<|eot_id|>")
    assert template.closing == ("" if name == "<|eot_id|>" else "\n")


def test_a_gpt2_pretokenizer_under_a_llama3_template_splits_the_header_differently():
    """The documented exception: GPT-2's pre-tokenizer cuts ``"\\n\\n"`` + text as ``"\\n"``,
    ``"\\n"``+text but a header ending in ``"\\n\\n"`` alone as one piece, so the turn-by-turn
    ids differ from the whole conversation's exactly at each assistant header; the env keeps its
    own (the ids the policy saw)."""
    tokenizer = tiny_chat_tokenizer("llama3", llama3_pretokenizer=False)
    template = IncrementalChatTemplate(tokenizer)
    ids, messages = incremental_ids(template)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    assert ids != expected
    assert tokenizer.decode(ids) == whole  # the same text, cut into other tokens
    first = next(i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b)
    assert tokenizer.decode(ids[:first]).endswith("assistant<|end_header_id|>")


def test_a_template_that_rewrites_earlier_turns_is_refused():
    tokenizer = tiny_chat_tokenizer("chatml")
    # Numbers every message by the conversation's length: adding a turn renumbers the others.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + messages|length|string + "
        "'\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    template = IncrementalChatTemplate(tokenizer)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    with pytest.raises(TemplateError, match="cannot be extended turn by turn"):
        template.insertion(messages, "Bye")


def test_tokenizers_without_a_template_or_an_end_of_turn_token_are_refused(tokenizer):
    plain = tiny_chat_tokenizer("chatml")
    plain.chat_template = None
    with pytest.raises(TemplateError, match="has no chat template"):
        IncrementalChatTemplate(plain)
    plain.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    )
    with pytest.raises(TemplateError, match="does not start with a special end-of-turn token"):
        IncrementalChatTemplate(plain)


def test_scripts_from_every_accepted_form():
    hh = "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye\n\nAssistant:"
    assert as_script(hh) == DialogueScript(("Hi", "Bye"))
    assert as_script("Hi") == DialogueScript(("Hi",))
    assert as_script(["Hi", "Bye"]) == DialogueScript(("Hi", "Bye"))
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Bye"},
    ]
    assert as_script(messages) == DialogueScript(("Hi", "Bye"), "Be kind.")
    with pytest.raises(TypeError, match="a dialogue prompt must be"):
        as_script(3)
    with pytest.raises(ValueError, match="non-empty user turns"):
        as_script(["Hi", "  "])


def test_transcript_is_the_hh_format_reward_models_read():
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Bye"},
    ]
    assert transcript(messages) == "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye\n\nAssistant:"
