"""Dialogue mode of both environments: the agent writes assistant turns, the env inserts the
user's turns as observation tokens (no action, no KL), rewards per turn or at the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chat_tokenizers import CHAT_TOKENIZERS, chat_models
from helpers import check_env_strictly

from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate, transcript
from rlhf_env.rewards.base import RewardError

SCRIPTS = [
    ["Hello! How can I help you today?", "I would like a recipe for bread.", "Thanks!"],
    ["Hi, I need help.", "Mix flour and water."],
    "\n\nHuman: The film was great\n\nAssistant: Yes\n\nHuman: Why?\n\nAssistant: Fun\n\n"
    "Human: Bye\n\nAssistant:",
]
REPLIES = ["Sure, here is a simple one.", "Hello!", "Mix flour and water, please."]


def reply_length(prompts: list[str], responses: list[str]) -> list[float]:
    """A deterministic reward that reads the transcript too: the reply's length and the
    number of turns so far."""
    return [len(r) / 10 + p.count("Human:") / 100 for p, r in zip(prompts, responses, strict=True)]


@pytest.fixture(scope="module", params=CHAT_TOKENIZERS)
def chat(request, tmp_path_factory):
    return chat_models(request.param, tmp_path_factory.mktemp(request.param))


def make_env(chat, vector: bool = False, **overrides):
    tokenizer, policy, reference = chat
    kwargs = dict(
        policy=policy, tokenizer=tokenizer, reward_fn=reply_length, prompts=SCRIPTS,
        reference=reference, max_turns=3, max_new_tokens=32, max_prompt_tokens=64,
        max_total_tokens=180, kl_coef=0.1,
    )  # fmt: skip
    kwargs.update(overrides)
    return (TextGenerationVectorEnv if vector else TextGenerationEnv)(**kwargs)


def canonical_actions(tokenizer, end_of_turn: int, reply: str) -> list[int]:
    return [*tokenizer(reply, add_special_tokens=False)["input_ids"], end_of_turn]


def context_ids(obs) -> list[int]:
    return obs["input_ids"][obs["attention_mask"] == 1].tolist()


def test_an_episode_holds_the_ids_of_the_template_applied_to_the_whole_conversation(chat):
    tokenizer = chat[0]
    env = make_env(chat)
    template = IncrementalChatTemplate(tokenizer)
    obs, reset_info = env.reset(options={"prompt": SCRIPTS[0]})
    steps = inserted = 0
    for turn, reply in enumerate(REPLIES):
        actions = canonical_actions(tokenizer, template.end_of_turn_id, reply)
        for k, action in enumerate(actions):
            obs, _reward, terminated, truncated, info = env.step(action)
            steps += 1
            assert {"kl", "policy_logprob", "ref_logprob", "turn"} <= set(info)
            assert info["turn"] == turn
            last = k == len(actions) - 1
            assert ("inserted_ids" in info) == (last and turn < 2)
            if "inserted_ids" in info:
                inserted += len(info["inserted_ids"])
                assert context_ids(obs)[-len(info["inserted_ids"]) :] == list(info["inserted_ids"])
                assert info["user_turn"] == SCRIPTS[0][turn + 1]
    assert terminated and not truncated
    messages = info["conversation"]
    assert [m["content"] for m in messages if m["role"] == "assistant"] == REPLIES
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    assert context_ids(obs) + template.encode(template.closing) == expected
    assert len(context_ids(obs)) == len(tokenizer(reset_info["prompt"], add_special_tokens=False)[
        "input_ids"]) + steps + inserted  # fmt: skip


def test_policy_logits_after_an_inserted_turn_are_those_of_the_whole_context(chat):
    tokenizer, policy, _ = chat
    env = make_env(chat)
    template = IncrementalChatTemplate(tokenizer)
    obs, _ = env.reset(options={"prompt": SCRIPTS[0]})
    for action in canonical_actions(tokenizer, template.end_of_turn_id, REPLIES[0]):
        obs, *_, info = env.step(action)
    assert "inserted_ids" in info
    with torch.no_grad():
        full = policy(torch.tensor([context_ids(obs)])).logits[0, -1]
    torch.testing.assert_close(env.policy_logits, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("turn_rewards", ["turn", "end"])
def test_turn_rewards_sum_to_the_return_and_kl_is_paid_on_actions_only(chat, turn_rewards):
    tokenizer = chat[0]
    env = make_env(chat, turn_rewards=turn_rewards)
    template = IncrementalChatTemplate(tokenizer)
    env.reset(options={"prompt": SCRIPTS[0]})
    total, kls, turn_scores = 0.0, [], []
    for reply in REPLIES:
        for action in canonical_actions(tokenizer, template.end_of_turn_id, reply):
            _, reward, terminated, _truncated, info = env.step(action)
            total += reward
            kls.append(info["kl"])
            if "turn_score" in info:
                turn_scores.append(info["turn_score"])
    assert terminated
    if turn_rewards == "turn":
        assert len(turn_scores) == 3
        np.testing.assert_allclose(info["turn_scores"], turn_scores)
        # Each turn is scored after the transcript before it (the reward reads the turn count).
        expected = [len(reply) / 10 + (turn + 1) / 100 for turn, reply in enumerate(REPLIES)]
        np.testing.assert_allclose(turn_scores, expected)
        assert info["score"] == pytest.approx(sum(turn_scores))
    else:
        # One score, of the whole conversation, read after its last turn.
        assert turn_scores == [] and "turn_scores" not in info
        assert info["score"] == pytest.approx(len(REPLIES[2]) / 10 + 3 / 100)
    assert total == pytest.approx(info["score"] - 0.1 * sum(kls), abs=1e-6)
    assert len(kls) == sum(len(canonical_actions(tokenizer, 0, r)) for r in REPLIES)


def test_a_turn_is_cut_at_max_new_tokens_and_a_conversation_at_max_total_tokens(chat):
    tokenizer = chat[0]
    template = IncrementalChatTemplate(tokenizer)
    word = tokenizer("Hello", add_special_tokens=False)["input_ids"][0]
    env = make_env(chat, max_new_tokens=4, missing_eos_penalty=0.5)
    env.reset(options={"prompt": SCRIPTS[0]})
    for _step in range(4):
        _, reward, terminated, truncated, info = env.step(word)
    assert truncated and not terminated and "turn_score" in info and info["turn"] == 0
    assert reward == pytest.approx(info["score"] - 0.5 - 0.1 * info["kl"])

    # A budget that the second user turn does not fit: the episode is cut after turn 1.
    env = make_env(chat, max_total_tokens=8)
    env.reset(options={"prompt": SCRIPTS[0]})
    with pytest.warns(UserWarning, match="does not fit in max_total_tokens=8"):
        for action in [word, word, template.end_of_turn_id]:
            _, _, terminated, truncated, info = env.step(action)
    assert truncated and not terminated and "inserted_ids" not in info
    assert len(info["conversation"]) == 2


def test_user_fn_writes_the_turns_a_script_lacks_and_none_ends_the_conversation(chat):
    tokenizer = chat[0]
    template = IncrementalChatTemplate(tokenizer)
    seen = []

    def user_fn(messages):
        seen.append([dict(m) for m in messages])
        return "Tell me more." if len(messages) < 4 else None

    env = make_env(chat, user_fn=user_fn, prompts=["Hello!"])
    env.reset()
    end = template.end_of_turn_id
    word = tokenizer("Hi", add_special_tokens=False)["input_ids"][0]
    for action in [word, end]:
        *_, info = env.step(action)
    assert info["user_turn"] == "Tell me more."
    assert seen[0][-1] == {"role": "assistant", "content": tokenizer.decode([word])}
    for action in [word, end]:
        _, _, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and len(seen) == 2
    assert [m["role"] for m in info["conversation"]] == ["user", "assistant"] * 2


def test_a_failing_user_fn_or_reward_leaves_the_episode_as_it_was(chat):
    tokenizer = chat[0]
    template = IncrementalChatTemplate(tokenizer)
    calls = {"user": 0}

    def flaky_user(messages):
        calls["user"] += 1
        if calls["user"] == 1:
            raise ConnectionError("simulator down")
        return "Go on."

    env = make_env(chat, user_fn=flaky_user, prompts=["Hello!"])
    obs, _ = env.reset()
    word = tokenizer("Hi", add_special_tokens=False)["input_ids"][0]
    obs, *_ = env.step(word)
    with pytest.raises(ConnectionError):
        env.step(template.end_of_turn_id)
    obs_after, *_, info = env.step(template.end_of_turn_id)  # the same step, now succeeding
    assert info["user_turn"] == "Go on."
    assert context_ids(obs_after)[: len(context_ids(obs)) + 1] == [
        *context_ids(obs),
        template.end_of_turn_id,
    ]

    def nan_reward(prompts, responses):
        return [float("nan")] * len(responses)

    env = make_env(chat, reward_fn=nan_reward)
    env.reset(options={"prompt": SCRIPTS[0]})
    with pytest.raises(RewardError, match="nan"):
        env.step(template.end_of_turn_id)
    assert env.conversation.turn == 0 and env.conversation.turn_ids == []


def scripted_actions(tokenizer, end: int, row: int, turn: int, position: int) -> int:
    """Row- and turn-dependent replies of different lengths, so rows end turns at different
    steps."""
    reply = tokenizer(REPLIES[(row + turn) % 3], add_special_tokens=False)["input_ids"]
    length = 2 + (row * 3 + turn * 2) % 5
    return end if position >= length else reply[position % len(reply)]


@pytest.mark.parametrize(
    ("engine", "turn_cut"),
    [("static", "truncate"), ("dynamic", "truncate"), ("static", "end_turn")],
)
def test_the_vector_env_equals_single_envs_in_dialogue_mode(chat, engine, turn_cut):
    """Two rounds of one conversation per sub-env (rows end turns, get user turns inserted and
    finish at different steps; the second round restarts rows after insertions). With
    ``end_turn`` turns of over 4 tokens are cut and closed by the env."""
    tokenizer = chat[0]
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    n = 3
    options = dict(engine=engine, turn_cut=turn_cut, missing_eos_penalty=0.25)
    if turn_cut == "end_turn":
        options["max_new_tokens"] = 4
    venv = make_env(chat, vector=True, num_envs=n, **options)
    envs = [make_env(chat, **options) for _ in range(n)]
    inserted_steps = 0
    for seed in (3, 11):
        with venv.holding_ended():
            obs, _ = venv.reset(seed=seed)
            for i, env in enumerate(envs):
                np.testing.assert_array_equal(
                    obs["input_ids"][i], env.reset(seed=seed + i)[0]["input_ids"]
                )
            position, turn, done = [0] * n, [0] * n, [False] * n
            while not all(done):
                actions = np.array(
                    [scripted_actions(tokenizer, end, i, turn[i], position[i]) for i in range(n)]
                )
                obs, rewards, terms, truncs, infos = venv.step(actions)
                inserted_steps += int(infos.get("_inserted_ids", np.zeros(n, bool)).any())
                for i, env in enumerate(envs):
                    if done[i]:  # held: waits for the next reset
                        assert rewards[i] == 0 and not (terms[i] or truncs[i])
                        continue
                    e_obs, e_reward, e_term, e_trunc, e_info = env.step(actions[i])
                    np.testing.assert_array_equal(obs["input_ids"][i], e_obs["input_ids"])
                    np.testing.assert_array_equal(obs["attention_mask"][i], e_obs["attention_mask"])
                    assert (terms[i], truncs[i]) == (e_term, e_trunc)
                    assert rewards[i] == pytest.approx(e_reward, abs=1e-5)
                    for key in ("kl", "policy_logprob", "turn_score", "score", "turn"):
                        assert infos.get(f"_{key}", np.zeros(n, bool))[i] == (key in e_info), key
                        if key in e_info:
                            assert infos[key][i] == pytest.approx(e_info[key], abs=1e-5)
                    has_inserted = infos.get("_inserted_ids", np.zeros(n, bool))[i]
                    assert has_inserted == ("inserted_ids" in e_info)
                    if has_inserted:
                        np.testing.assert_array_equal(
                            infos["inserted_ids"][i], e_info["inserted_ids"]
                        )
                        position[i], turn[i] = 0, turn[i] + 1
                    else:
                        position[i] += 1
                    if "conversation" in e_info:
                        assert infos["conversation"][i] == e_info["conversation"]
                    done[i] = e_term or e_trunc
    assert inserted_steps >= 4


def test_gymnasium_and_sb3_checks_pass_in_dialogue_mode(chat):
    check_env_strictly(make_env(chat, max_total_tokens=64), sb3=True)


def test_dialogue_settings_are_checked(chat):
    with pytest.raises(ValueError, match="needs max_turns"):
        make_env(chat, max_turns=None, max_total_tokens=40)
    with pytest.raises(ValueError, match="max_turns must be None or >= 1"):
        make_env(chat, max_turns=0)
    assert transcript([{"role": "user", "content": "Hi"}]).endswith("Assistant:")


def test_a_language_model_user_and_chitchat_scripts_drive_conversations(chat):
    from rlhf_env.data.chitchat import chitchat_conversations
    from rlhf_env.dialogue.users import LanguageModelUser

    tokenizer, _, reference = chat
    template = IncrementalChatTemplate(tokenizer)
    user = LanguageModelUser(reference, tokenizer, max_new_tokens=5)
    openings = [turns[:1] for turns in chitchat_conversations(min_user_turns=1)[:4]]
    env = make_env(
        chat,
        prompts=openings,
        user_fn=user,
        max_turns=2,
        max_prompt_tokens=96,
        max_total_tokens=120,
    )
    _, info = env.reset(seed=0)
    word = tokenizer("Hi", add_special_tokens=False)["input_ids"][0]
    for action in [word, template.end_of_turn_id]:
        *_, info = env.step(action)
    messages = env.conversation.messages
    # The simulator's turn, asked with the conversation so far, is the inserted user turn.
    assert info["user_turn"] == user(messages[:-1]) == messages[-1]["content"]
    assert messages[0]["content"] in [turns[0] for turns in openings]


def test_turn_cut_end_turn_closes_a_cut_turn_and_goes_on(chat):
    """With ``turn_cut="end_turn"`` a turn that reaches max_new_tokens is ended by the env: the
    end-of-turn token is inserted (not an action), the missing-EOS penalty is paid, and the
    conversation goes on; its ids still equal the template of the whole conversation."""
    tokenizer = chat[0]
    template = IncrementalChatTemplate(tokenizer)
    reply = tokenizer(REPLIES[0], add_special_tokens=False)["input_ids"]
    env = make_env(chat, max_new_tokens=4, turn_cut="end_turn", missing_eos_penalty=0.5)
    obs, _ = env.reset(options={"prompt": SCRIPTS[0]})
    for action in reply[:4]:
        obs, reward, terminated, truncated, info = env.step(action)
    assert not (terminated or truncated)
    assert info["inserted_ids"][0] == template.end_of_turn_id
    assert reward == pytest.approx(info["turn_score"] - 0.5 - 0.1 * info["kl"])
    for action in [*reply[:2], template.end_of_turn_id]:  # an ended turn: no penalty
        obs, reward, terminated, truncated, info = env.step(action)
    assert reward == pytest.approx(info["turn_score"] - 0.1 * info["kl"])
    for action in reply[:4]:  # the last turn cut: the episode is truncated
        obs, reward, terminated, truncated, info = env.step(action)
    assert truncated and not terminated
    messages = info["conversation"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    # The last turn was cut, so the env holds it without its end-of-turn token.
    tail = template.encode(tokenizer.convert_ids_to_tokens(template.end_of_turn_id))
    assert context_ids(obs) + tail + template.encode(template.closing) == expected


def uncached_k1(chat, context: list[int], positions: list[int]) -> list[float]:
    """``log pi(a) - log pi_ref(a)`` of the tokens of ``context`` at ``positions``, from one
    uncached forward of each model over the whole context."""
    _, policy, reference = chat
    ids = torch.tensor([context])
    with torch.no_grad():
        logp = torch.log_softmax(policy(ids).logits[0], dim=-1)  # (T, V)
        ref_logp = torch.log_softmax(reference(ids).logits[0], dim=-1)  # (T, V)
    return [float(logp[p - 1, context[p]] - ref_logp[p - 1, context[p]]) for p in positions]


@pytest.mark.parametrize("vector", [False, True])
def test_each_steps_kl_is_its_actions_alone_from_uncached_forwards(chat, vector):
    """The KL of every step is k1 of its action alone, as one uncached forward of each model
    over the whole conversation gives it, and the return is the score minus beta times their
    sum: the user turns the env inserts are charged nothing. Two sub-envs in the vector case,
    their turns ending at different steps."""
    import contextlib

    tokenizer = chat[0]
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    replies = [REPLIES, REPLIES[::-1]][: 2 if vector else 1]
    plans = [[a for r in rs for a in canonical_actions(tokenizer, end, r)] for rs in replies]
    n = len(plans)
    env = make_env(chat, vector=vector, **({"num_envs": n} if vector else {}))
    if vector:
        obs, _ = env.reset(options={"prompts": [SCRIPTS[0]] * n})
    else:
        obs = {k: v[None] for k, v in env.reset(options={"prompt": SCRIPTS[0]})[0].items()}
    # Per sub-env: where each action lands in the context, the env's KL and reward for it.
    positions, kls, returns = [[] for _ in range(n)], [[] for _ in range(n)], np.zeros(n)
    contexts, scores, inserted = [None] * n, [None] * n, 0
    with env.holding_ended() if vector else contextlib.nullcontext():
        for step in range(max(map(len, plans))):
            actions = [plan[min(step, len(plan) - 1)] for plan in plans]
            lengths = [int(obs["attention_mask"][i].sum()) for i in range(n)]
            if vector:
                obs, rewards, terms, truncs, info = env.step(np.array(actions))
                step_kls, ended, step_scores = info["kl"], terms | truncs, info.get("score")
                inserted += int(info.get("_inserted_ids", np.zeros(n, bool)).sum())
            else:
                single_obs, reward, term, trunc, info = env.step(actions[0])
                obs = {k: v[None] for k, v in single_obs.items()}
                rewards, step_kls, ended = [reward], [info["kl"]], [term or trunc]
                step_scores = [info.get("score")]
                inserted += "inserted_ids" in info
            for i in range(n):
                if contexts[i] is not None:  # ended: held
                    continue
                positions[i].append(lengths[i])
                kls[i].append(step_kls[i])
                returns[i] += rewards[i]
                assert ended[i] == (step == len(plans[i]) - 1)
                if ended[i]:
                    contexts[i] = context_ids({k: v[i] for k, v in obs.items()})
                    scores[i] = step_scores[i]
    assert inserted == 2 * n  # the second and third user turns of each conversation
    for i in range(n):
        assert [contexts[i][p] for p in positions[i]] == plans[i]
        expected = uncached_k1(chat, contexts[i], positions[i])
        np.testing.assert_allclose(kls[i], expected, atol=1e-4, rtol=0)
        assert returns[i] == pytest.approx(scores[i] - 0.1 * sum(expected), abs=1e-4)
