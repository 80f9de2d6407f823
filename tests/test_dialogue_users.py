"""The dialogue mode's user side: chit-chat scripts of user turns (the chitchat-dataset package)
and the language-model user simulator on tiny random models."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from rlhf_env.data.chitchat import CHITCHAT_CONVERSATIONS, chitchat_conversations
from rlhf_env.dialogue.users import DEFAULT_USER_INSTRUCTION, LanguageModelUser
from rlhf_env.models import build_tiny_llama, build_tiny_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How are you?"},
    {"role": "user", "content": "Good, thanks."},
    {"role": "assistant", "content": "What did you do today?"},
]


# -- chit-chat scripts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_chitchat():
    import chitchat_dataset

    return list(chitchat_dataset.Dataset().values())


def test_chitchat_scripts_load_with_non_empty_clean_turns(raw_chitchat):
    scripts = chitchat_conversations()
    assert len(raw_chitchat) == len(scripts) == CHITCHAT_CONVERSATIONS
    for script in scripts:
        assert len(script) >= 1
        assert all(turn and turn == " ".join(turn.split()) for turn in script)
    assert chitchat_conversations() == scripts  # stable order


def test_chitchat_joins_the_openers_consecutive_messages(raw_chitchat):
    # The first conversation opens with a run of two messages ("Hello", "How are you doing
    # today?"); the other speaker's run follows, then the opener's third message.
    runs = raw_chitchat[0]["messages"]
    opener = runs[0][0]["sender"]
    assert [u["text"] for u in runs[0]] == ["Hello", "How are you doing today?"]
    assert {u["sender"] for u in runs[1]} != {opener}
    script = chitchat_conversations()[0]
    assert script[0] == "Hello How are you doing today?"
    assert script[1] == " ".join(runs[2][0]["text"].split())
    assert "whats up MD" not in " ".join(script)  # the other speaker's turns are dropped
    opener_runs = [run for run in runs if run[0]["sender"] == opener]
    assert len(script) == len(opener_runs)


def test_chitchat_min_user_turns_filters():
    every = chitchat_conversations()
    at_least_3 = chitchat_conversations(min_user_turns=3)
    assert at_least_3 == [script for script in every if len(script) >= 3]
    assert 0 < len(at_least_3) < len(chitchat_conversations(min_user_turns=2)) < len(every)
    with pytest.raises(ValueError, match="at least 1"):
        chitchat_conversations(min_user_turns=0)


def test_chitchat_without_its_package_names_the_extra(monkeypatch):
    from rlhf_env.data import chitchat

    chitchat._all_user_turns.cache_clear()
    monkeypatch.setitem(sys.modules, "chitchat_dataset", None)  # as if not installed
    try:
        with pytest.raises(ImportError, match=r"pip install 'rlhf_env\[dialogue\]'"):
            chitchat_conversations()
    finally:
        chitchat._all_user_turns.cache_clear()


# -- the language-model user ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_tokenizer():
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="module")
def user_model(chat_tokenizer):
    return build_tiny_llama(chat_tokenizer, seed=0).requires_grad_(False)


def test_messages_swap_roles_and_replace_the_system_message(user_model, chat_tokenizer):
    user = LanguageModelUser(user_model, chat_tokenizer)
    assert user.messages_for(CONVERSATION) == [
        {"role": "system", "content": DEFAULT_USER_INSTRUCTION},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Hello! How are you?"},
        {"role": "assistant", "content": "Good, thanks."},
        {"role": "user", "content": "What did you do today?"},
    ]
    prompt = user.prompt_text(user.messages_for(CONVERSATION))
    assert prompt.startswith(f"<|im_start|>system\n{DEFAULT_USER_INSTRUCTION}<|im_end|>")
    assert prompt.endswith(
        "<|im_start|>user\nWhat did you do today?<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="ends with a user turn"):
        user.messages_for(CONVERSATION[:-1])
    with pytest.raises(ValueError, match="message role"):
        user.messages_for([{"role": "tool", "content": "x"}])


def test_greedy_reply_is_a_deterministic_string(user_model, chat_tokenizer):
    user = LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=8)
    reply = user(CONVERSATION)
    assert isinstance(reply, str) and reply == reply.strip() and reply
    assert user(CONVERSATION) == reply
    assert LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=8)(CONVERSATION) == reply
    assert chat_tokenizer.convert_tokens_to_ids("<|im_end|>") in user.stop_ids


def test_sampled_reply_is_seeded_and_leaves_the_global_rng(user_model, chat_tokenizer):
    def sampler(seed: int) -> LanguageModelUser:
        return LanguageModelUser(user_model, chat_tokenizer, 12, temperature=1.0, seed=seed)

    state = torch.get_rng_state()
    first = sampler(0).reply_ids(CONVERSATION)
    assert torch.equal(torch.get_rng_state(), state)
    assert sampler(0).reply_ids(CONVERSATION) == first
    assert sampler(1).reply_ids(CONVERSATION) != first


def test_the_model_is_left_as_it_was(chat_tokenizer):
    model = build_tiny_llama(chat_tokenizer, seed=3).train()
    model.model.layers[0].eval()  # a mixed mode, restored module by module
    modes = [module.training for module in model.modules()]
    weights = copy.deepcopy(model.state_dict())
    user = LanguageModelUser(model, chat_tokenizer, max_new_tokens=4, temperature=1.0)
    user(CONVERSATION)
    assert [module.training for module in model.modules()] == modes
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_replies_respect_max_new_tokens(user_model, chat_tokenizer):
    forwards = []
    hook = user_model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        for limit in (1, 3, 7):
            forwards.clear()
            ids = LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=limit).reply_ids(
                CONVERSATION
            )
            assert len(ids) <= limit and len(forwards) <= limit
    finally:
        hook.remove()


def test_an_end_of_turn_token_stops_the_reply(user_model, chat_tokenizer):
    first = LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=1).reply_ids(CONVERSATION)
    assert len(first) == 1
    model = copy.deepcopy(user_model)
    model.generation_config.eos_token_id = [chat_tokenizer.eos_token_id, first[0]]
    user = LanguageModelUser(model, chat_tokenizer, max_new_tokens=8)
    assert user.reply_ids(CONVERSATION) == []
    assert user(CONVERSATION) is None  # nothing written: the conversation ends


def test_long_conversations_lose_their_oldest_turns(user_model, chat_tokenizer):
    turns = [f"turn {i} " + "word " * 20 for i in range(12)]
    conversation = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": text}
        for i, text in enumerate(turns)
    ]
    user = LanguageModelUser(user_model, chat_tokenizer, "Be the user.", 4, max_prompt_tokens=150)
    ids = user.prompt_ids(conversation)
    assert 100 < len(ids) <= 150
    prompt = chat_tokenizer.decode(ids)
    assert prompt.startswith("<|im_start|>system\nBe the user.<|im_end|>")
    assert "turn 11" in prompt and "turn 0 " not in prompt
    # The reply continues the cut prompt: a greedy decode of it, token by token, with no cache.
    continuation = list(ids)
    with torch.no_grad():
        for _ in range(4):
            logits = user_model(torch.tensor([continuation])).logits[0, -1]  # (V,)
            continuation.append(int(logits.argmax()))
    expected = continuation[len(ids) :]
    stops = [i for i, token in enumerate(expected) if token in user.stop_ids]
    expected = expected[: stops[0] if stops else None]
    assert expected and user.reply_ids(conversation) == expected
    # A last turn too long on its own loses its start.
    one_turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yes " * 200}]
    ids = user.prompt_ids(one_turn)
    assert len(ids) == 150 and chat_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    # The model's position limit (256) is the default bound.
    assert LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=6).max_prompt_tokens == 250


def test_a_tokenizer_without_chat_template_gets_role_lines(monkeypatch):
    tokenizer = build_tiny_tokenizer()
    user = LanguageModelUser(build_tiny_llama(tokenizer), tokenizer, "Be the user.", 8)
    assert user.prompt_text(user.messages_for(CONVERSATION[:3])) == (
        "System: Be the user.\nAssistant: Hi there\nUser: Hello! How are you?\nAssistant:"
    )
    reply = user(CONVERSATION)
    assert reply is None or (isinstance(reply, str) and reply == reply.strip())
    # The reply ends where the model starts the next role line.
    ids = tokenizer.encode(" Sure thing.\nUser: and more", add_special_tokens=False)
    monkeypatch.setattr(user, "reply_ids", lambda conversation: ids)
    assert user(CONVERSATION) == "Sure thing."


def test_bad_settings_say_what_to_do(user_model, chat_tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="use None for greedy"):
        LanguageModelUser(user_model, chat_tokenizer, temperature=0.0)
    with pytest.raises(ValueError, match="no room for a prompt"):
        LanguageModelUser(user_model, chat_tokenizer, max_new_tokens=256)
