"""The bridge from a turn-level text env to dialogue mode (rlhf_env.dialogue.turn_level): the
env's observations are the user turns, the agent's decoded turns its actions, its rewards the
turns' scores, its ends the episode's; ids stay exact, KL is paid on the agent's tokens only,
and the vector env equals single envs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from chat_tokenizers import CHAT_TOKENIZERS, chat_models
from helpers import assert_vector_matches_singles, check_env_strictly

from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.dialogue.turn_level import TurnLevelEpisode


class GuessTheDigit:
    """A turn-level game: guess a digit (the reset's seed mod 10) in at most ``guesses`` turns;
    "higher"/"lower" hints; reward 1 for the right guess, -0.1 for a reply without a digit."""

    def __init__(self, guesses: int = 3) -> None:
        self.guesses = guesses
        self.secret = 0
        self.made = 0
        self.steps = 0  # how many steps this object has taken (forks copy it)

    def reset(self, *, seed=None):
        self.secret, self.made = (seed or 0) % 10, 0
        return "Guess my digit.", {"system_prompt": "You play a guessing game. Reply with a digit."}

    def step(self, action):
        self.steps += 1
        self.made += 1
        digits = [c for c in action if c.isdigit()]
        if not digits:
            return "Reply with a digit.", -0.1, False, self.made >= self.guesses, {}
        guess = int(digits[-1])
        won = guess == self.secret
        over = won or self.made >= self.guesses
        outcome = {"win": float(won), "guesses": float(self.made)} if over else {}
        hint = "higher" if guess < self.secret else "lower"
        return (f"No, {hint}." if not won else "", float(won), over, False, {"outcome": outcome})


def episode(seed: int, guesses: int = 3) -> TurnLevelEpisode:
    return TurnLevelEpisode(lambda: GuessTheDigit(guesses), seed=seed, name=f"digit #{seed}")


@pytest.fixture(scope="module", params=CHAT_TOKENIZERS)
def chat(request, tmp_path_factory):
    return chat_models(request.param, tmp_path_factory.mktemp(request.param))


def make_env(chat, vector: bool = False, **overrides):
    tokenizer, policy, reference = chat
    kwargs = dict(
        policy=policy, tokenizer=tokenizer, reward_fn=None, prompts=[episode(s) for s in range(10)],
        reference=reference, max_turns=4, max_new_tokens=8, max_prompt_tokens=128,
        max_total_tokens=120, kl_coef=0.1,
    )  # fmt: skip
    kwargs.update(overrides)
    return (TextGenerationVectorEnv if vector else TextGenerationEnv)(**kwargs)


def turn_actions(tokenizer, reply: str) -> list[int]:
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    return [*tokenizer(reply, add_special_tokens=False)["input_ids"], end]


def context_ids(obs) -> list[int]:
    return obs["input_ids"][obs["attention_mask"] == 1].tolist()


def play(env, tokenizer, replies):
    """Play ``replies`` as the agent's turns; the steps' rewards, KLs and last info."""
    rewards, kls = [], []
    for reply in replies:
        for action in turn_actions(tokenizer, reply):
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            kls.append(info["kl"])
            if terminated or truncated:
                return obs, rewards, kls, terminated, truncated, info
    raise AssertionError("the episode did not end")


def test_a_game_plays_with_exact_ids_and_its_rewards_minus_beta_kl_as_the_return(chat):
    tokenizer = chat[0]
    env = make_env(chat)
    obs, reset_info = env.reset(options={"prompt": episode(7)})
    assert reset_info["prompt"].count("Guess my digit.") == 1
    assert "You play a guessing game" in reset_info["prompt"]
    obs, rewards, kls, terminated, truncated, info = play(env, tokenizer, ["5", "x", "7"])
    assert terminated and not truncated
    messages = info["conversation"]
    assert [m["content"] for m in messages] == [
        "You play a guessing game. Reply with a digit.", "Guess my digit.", "5", "No, higher.",
        "x", "Reply with a digit.", "7",
    ]  # fmt: skip
    template = IncrementalChatTemplate(tokenizer)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    assert context_ids(obs) + template.encode(template.closing) == expected
    np.testing.assert_allclose(info["turn_scores"], [0.0, -0.1, 1.0])
    assert info["score"] == pytest.approx(0.9)
    assert info["outcome"] == {"win": 1.0, "guesses": 3.0}
    assert sum(rewards) == pytest.approx(0.9 - 0.1 * sum(kls), abs=1e-6)
    assert len(kls) == sum(len(turn_actions(tokenizer, r)) for r in ["5", "x", "7"])


def test_the_game_ends_the_episode_or_the_turn_cap_truncates_it(chat):
    tokenizer = chat[0]
    env = make_env(chat)
    env.reset(options={"prompt": episode(9)})
    *_, terminated, truncated, info = play(env, tokenizer, ["1", "2", "3"])
    assert terminated and not truncated  # three guesses: the game's own end
    assert info["outcome"] == {"win": 0.0, "guesses": 3.0}

    env = make_env(chat, max_turns=2)
    env.reset(options={"prompt": episode(9)})
    *_, terminated, truncated, info = play(env, tokenizer, ["1", "2"])
    assert truncated and not terminated  # max_turns before the game's end
    assert info["outcome"] == {}


def test_a_failing_step_leaves_the_game_and_the_episode_as_they_were(chat):
    tokenizer = chat[0]
    calls = {"n": 0}

    class Flaky(GuessTheDigit):
        def step(self, action):
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionError("game server down")
            return super().step(action)

    env = make_env(chat, prompts=[TurnLevelEpisode(Flaky, seed=4)])
    env.reset()
    game = env.conversation.turn_env
    actions = turn_actions(tokenizer, "4")
    for action in actions[:-1]:
        env.step(action)
    with pytest.raises(ConnectionError):
        env.step(actions[-1])
    assert env.conversation.turn_env is game and game.made == 0 and game.steps == 0
    *_, terminated, _, info = env.step(actions[-1])  # the same step, now succeeding
    assert terminated and info["outcome"]["win"] == 1.0
    assert game.steps == 0  # the env stepped a fork and kept it


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (lambda s, a: ("", float("nan"), False, False, {}), ValueError, "finite"),
        (lambda s, a: ("", 1.0, False, False, {}), ValueError, "empty observation"),
        (lambda s, a: ("ok", 1.0), TypeError, "must return"),
    ],
)
def test_a_bad_step_is_refused_with_a_message_that_says_what_to_fix(chat, bad, error, match):
    tokenizer = chat[0]

    class Bad(GuessTheDigit):
        step = bad

    env = make_env(chat, prompts=[TurnLevelEpisode(Bad, seed=1)])
    env.reset()
    actions = turn_actions(tokenizer, "1")
    for action in actions[:-1]:
        env.step(action)
    with pytest.raises(error, match=match):
        env.step(actions[-1])
    assert env.conversation.turn == 0  # nothing committed


def test_turn_level_episodes_need_per_turn_rewards_and_scripts_need_a_reward_fn(chat):
    env = make_env(chat, turn_rewards="end")
    with pytest.raises(ValueError, match="turn_rewards='turn'"):
        env.reset()
    env = make_env(chat, prompts=["Hello!"])  # a script, and no reward_fn to score it
    env.reset()
    with pytest.raises(TypeError, match="reward_fn"):
        env.step(IncrementalChatTemplate(chat[0]).end_of_turn_id)
    with pytest.raises(TypeError, match="reward_fn must be"):
        make_env(chat, max_turns=None, max_total_tokens=None)


def test_the_vector_env_equals_single_envs_on_a_game(chat):
    """Rows end turns, get the game's hints inserted and finish at different steps; each row
    steps its own game only when its turn ends."""
    tokenizer = chat[0]
    n = 3
    venv = make_env(chat, vector=True, num_envs=n)
    envs = [make_env(chat) for _ in range(n)]
    replies = {0: ["3", "9", "1"], 1: ["8", "2"], 2: ["no", "5", "6", "0"]}
    plans = [[a for r in replies[i] for a in turn_actions(tokenizer, r)] for i in range(n)]
    steps = assert_vector_matches_singles(
        venv, envs, plans, seed=5, info_keys=("outcome", "conversation")
    )
    assert steps > 4


def test_gymnasium_and_sb3_checks_pass_on_a_game(chat):
    check_env_strictly(make_env(chat), sb3=True)


def test_a_deep_copied_game_is_the_default_fork():
    game = GuessTheDigit()
    game.reset(seed=3)
    clone = copy.deepcopy(game)
    clone.step("1")
    assert game.made == 0 and clone.made == 1


def test_a_resets_history_comes_between_the_system_message_and_the_first_turn(chat):
    """Worked examples (``info["history"]``) are earlier turns of the chat, with exact ids."""
    tokenizer = chat[0]
    examples = [{"role": "user", "content": "Guess 4."}, {"role": "assistant", "content": "4"}]

    class WithExamples(GuessTheDigit):
        def reset(self, *, seed=None):
            observation, info = super().reset(seed=seed)
            return observation, {**info, "history": examples}

    env = make_env(chat, prompts=[TurnLevelEpisode(WithExamples, seed=2)])
    env.reset()
    obs, *_, info = play(env, tokenizer, ["2"])
    messages = info["conversation"]
    assert messages[1:3] == examples and messages[3]["content"] == "Guess my digit."
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    template = IncrementalChatTemplate(tokenizer)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    assert context_ids(obs) + template.encode(template.closing) == expected

    class BadHistory(GuessTheDigit):
        def reset(self, *, seed=None):
            return "Guess.", {"history": [{"role": "assistant", "content": "hi"}]}

    env = make_env(chat, prompts=[TurnLevelEpisode(BadHistory, seed=2)])
    with pytest.raises(ValueError, match=r"history'\]\[0\] must be a 'user' message"):
        env.reset()
