"""TextArena's games as turn-level envs (rlhf_env.hubs.textarena_env): the prompt is the system
message and the rest the user turn, forks are independent, games end with an outcome, the
opponent plays until the agent's turn, seeds replay, and the games that cannot run say why."""

from __future__ import annotations

import random
import re
import sys

import numpy as np
import pytest
from chat_tokenizers import tiny_chat_tokenizer

from rlhf_env import TextGenerationEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.dialogue.turn_level import TurnLevelEpisode, play_turn, start
from rlhf_env.extras import MissingExtraError
from rlhf_env.hubs.opponents import LanguageModelOpponent, ScriptedOpponent, as_opponent
from rlhf_env.hubs.textarena_env import YOUR_MOVE, TextArenaEnv
from rlhf_env.hubs.textarena_games import (
    SINGLE_PLAYER_GAMES,
    TWO_PLAYER_GAMES,
    UNSUPPORTED_GAMES,
    UnsupportedGameError,
    check_game,
    explain,
    registered_games,
)
from rlhf_env.models import build_tiny_llama

#: Games for one player of different kinds: reset must give a prompt and a user turn.
SINGLE_PLAYER_SAMPLE = [
    "GuessTheNumber-v0", "Bandit-v0", "Mastermind-v0", "TowerOfHanoi-v0", "FrozenLake-v0",
    "Minesweeper-v0-small", "Sudoku-v0-easy", "2048-v0", "LightsOut-v0", "FifteenPuzzle-v0",
    "Blackjack-v0", "Secretary-v0",
]  # fmt: skip


def first_available(observation: str) -> str:
    """A TicTacToe opponent: the first cell of the last "Available Moves" line it was shown."""
    line = [line for line in observation.splitlines() if line.startswith("Available Moves")][-1]
    return re.search(r"\[\d\]", line).group(0)


def tictactoe(**kwargs) -> TextArenaEnv:
    return TextArenaEnv("TicTacToe-v0", opponent=ScriptedOpponent(first_available), **kwargs)


# -- the tables -----------------------------------------------------------------------------


def test_every_registered_game_is_in_exactly_one_table():
    tables = [set(SINGLE_PLAYER_GAMES), set(TWO_PLAYER_GAMES), set(UNSUPPORTED_GAMES)]
    assert sum(len(table) for table in tables) == len(set().union(*tables))  # disjoint
    assert set().union(*tables) == set(registered_games())
    assert all(UNSUPPORTED_GAMES.values())  # every refusal says why


# -- reset: the system prompt and the first user turn ---------------------------------------


@pytest.mark.parametrize("game", SINGLE_PLAYER_SAMPLE)
def test_reset_gives_the_prompt_as_system_message_and_a_user_turn(game):
    assert game in SINGLE_PLAYER_GAMES
    observation, info = TextArenaEnv(game).reset(seed=3)
    assert info["system_prompt"].strip() and observation.strip()
    assert info["players"] == 1 and info["seed"] == 3
    assert observation not in info["system_prompt"]  # the prompt is not repeated


def test_a_game_that_shows_only_its_prompt_opens_with_your_move():
    observation, info = TextArenaEnv("GuessTheNumber-v0").reset(seed=0)
    assert observation == YOUR_MOVE
    assert "Guess The Number" in info["system_prompt"]


def test_the_first_user_turn_of_a_board_game_is_its_board():
    observation, info = tictactoe().reset(seed=0)
    assert info["system_prompt"].startswith("You are Player 0 in Tic Tac Toe.")
    assert observation.startswith("Current Board:") and "Available Moves" in observation


# -- playing ---------------------------------------------------------------------------------


def test_guess_the_number_played_to_its_end_reports_a_win():
    env = TextArenaEnv("GuessTheNumber-v0")
    env.reset(seed=5)
    low, high, turns = 1, 20, 0
    while True:
        guess = (low + high) // 2
        observation, reward, terminated, truncated, info = env.step(f"My guess: [{guess}]")
        turns += 1
        if terminated:
            break
        assert reward == 0.0 and not truncated and "outcome" not in info
        assert "[" not in observation  # the agent's own move is not echoed back
        low, high = (guess + 1, high) if "higher" in observation else (low, guess - 1)
    assert reward == 1.0 and not truncated
    assert info["outcome"] == {"reward": 1.0, "win": 1.0, "turns": turns, "invalid_move": 0.0}
    assert "Congratulations" in info["reason"]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("[1]")


def test_the_opponent_moves_until_it_is_the_agents_turn():
    env = tictactoe()
    env.reset(seed=0)
    for move, reply in (("[0]", "[1]"), ("[3]", "[2]")):
        observation, reward, terminated, _, info = env.step(move)
        assert not terminated and reward == 0.0
        assert env.current_player == 0 and info["opponent_moves"] == 1
        assert f"[Player 1] {reply}" in observation
        assert "[Player 0]" not in observation  # only what is new to the agent
    observation, reward, terminated, truncated, info = env.step("[6]")  # 0, 3, 6: a column
    assert terminated and not truncated and reward == 1.0
    assert info["opponent_moves"] == 0
    assert info["outcome"] == {
        "reward": 1.0, "win": 1.0, "turns": 3.0, "invalid_move": 0.0, "draw": 0.0,
    }  # fmt: skip


def test_an_invalid_move_is_asked_again_then_loses_the_game():
    env = tictactoe()
    env.reset(seed=0)
    observation, reward, terminated, _, info = env.step("the middle, please")
    assert not terminated and reward == 0.0
    assert info["invalid_move"] and info["opponent_moves"] == 0
    assert "invalid move" in observation
    _, reward, terminated, _, info = env.step("still no brackets")
    assert terminated and reward == -1.0
    assert info["outcome"]["invalid_move"] == 1.0 and info["outcome"]["win"] == 0.0


def test_an_opponent_that_moves_first_plays_in_reset():
    # KuhnPoker deals the first move to player 1 with this seed.
    env = TextArenaEnv("KuhnPoker-v0", opponent=lambda observation: "[check]")
    observation, _ = env.reset(seed=7)
    assert "[Player 1] [check]" in observation and env.current_player == 0
    with pytest.raises(RuntimeError, match="before the agent's first move"):
        TextArenaEnv("KuhnPoker-v0", opponent=lambda observation: "[no]").reset(seed=7)


def test_the_opponent_sees_its_prompt_apart_and_everything_since():
    seen = []

    def opponent(observation: str, system_prompt: str | None = None) -> str:
        seen.append((observation, system_prompt))
        return first_available(observation)

    env = TextArenaEnv("TicTacToe-v0", opponent=opponent)
    env.reset(seed=0)
    env.step("[0]")
    env.step("[3]")
    (first, prompt), (second, _) = seen
    assert prompt.startswith("You are Player 1 in Tic Tac Toe.")
    assert "[Player 0] [0]" in first and prompt not in first
    assert second.startswith(first)  # no memory needed: the whole history each time


# -- forks and seeds ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: TextArenaEnv("Minesweeper-v0-small"), tictactoe])
def test_stepping_a_fork_leaves_the_original_unchanged(make):
    env = make()
    env.reset(seed=2)
    fork = env.fork()
    assert fork.opponent is env.opponent  # shared, not copied
    first = fork.step("[0 0]" if env.num_players == 1 else "[0]")
    fork.step("[1 1]" if env.num_players == 1 else "[3]")
    assert env.step("[0 0]" if env.num_players == 1 else "[0]") == first


def test_a_seed_gives_the_same_game_and_the_callers_random_streams_are_untouched():
    random.seed(1)
    np.random.seed(1)
    before = random.getstate(), np.random.get_state()[1].copy()
    env = TextArenaEnv("Minesweeper-v0-small")
    first = env.reset(seed=11), env.step("[2 2]")
    assert random.getstate() == before[0]
    np.testing.assert_array_equal(np.random.get_state()[1], before[1])
    random.random()  # the caller's draws do not reach the game
    other = TextArenaEnv("Minesweeper-v0-small")
    assert (other.reset(seed=11), other.step("[2 2]")) == first
    assert (env.reset(seed=11), env.step("[2 2]")) == first  # a second game on the same env
    boards = {TextArenaEnv("2048-v0").reset(seed=seed)[0] for seed in range(4)}
    assert len(boards) > 1  # other seeds, other games
    assert TextArenaEnv("2048-v0").reset()[1]["seed"] >= 0  # no seed: a fresh one, reported


# -- through the dialogue mode's bridge --------------------------------------------------------


def test_the_bridge_starts_and_steps_a_game_on_forks():
    started = start(TurnLevelEpisode(tictactoe, seed=4, name="TicTacToe #4"))
    assert started.system.startswith("You are Player 0") and "Current Board" in started.user_turn
    step = play_turn(started.env, "[0]")
    again = play_turn(started.env, "[0]")  # the started env itself was not stepped
    assert step.observation == again.observation and step.env is not started.env


def test_a_game_plays_in_the_token_env_with_the_outcome_in_its_last_info():
    tokenizer = tiny_chat_tokenizer("chatml")
    env = TextGenerationEnv(
        policy=build_tiny_llama(tokenizer, max_position_embeddings=4096), tokenizer=tokenizer,
        reward_fn=None, prompts=[TurnLevelEpisode(tictactoe, seed=0)], max_turns=5,
        max_new_tokens=8, max_prompt_tokens=1024, max_total_tokens=3072, kl_coef=0.0,
    )  # fmt: skip
    _, reset_info = env.reset()
    assert "You are Player 0 in Tic Tac Toe." in reset_info["prompt"]
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    for move in ("[0]", "[3]", "[6]"):
        for action in [*tokenizer(move, add_special_tokens=False)["input_ids"], end]:
            _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and reward == pytest.approx(1.0)
    np.testing.assert_allclose(info["turn_scores"], [0.0, 0.0, 1.0])
    assert info["outcome"]["win"] == 1.0 and info["outcome"]["turns"] == 3.0
    assert [m["content"] for m in info["conversation"]][2::2] == ["[0]", "[3]", "[6]"]


# -- opponents --------------------------------------------------------------------------------


def test_as_opponent_wraps_a_one_argument_function_and_refuses_others():
    def two(observation, system_prompt=None):
        return "[1]"

    assert as_opponent(two) is two
    wrapped = as_opponent(lambda observation: "[2]")
    assert isinstance(wrapped, ScriptedOpponent) and wrapped("board", "prompt") == "[2]"
    with pytest.raises(TypeError, match="takes neither"):
        as_opponent(lambda: "[3]")
    with pytest.raises(TypeError, match="returned int"):
        ScriptedOpponent(lambda observation: 3)("board")


def test_a_language_model_opponent_replies_from_the_prompt_and_observation(tokenizer, llama):
    opponent = LanguageModelOpponent(llama, tokenizer, max_new_tokens=4)
    assert [m["role"] for m in opponent.messages_for("board", "rules")] == ["system", "user"]
    move = opponent("Current Board: ...", "You are Player 1.")
    assert isinstance(move, str) and move == opponent("Current Board: ...", "You are Player 1.")
    sampled = LanguageModelOpponent(llama, tokenizer, max_new_tokens=4, temperature=1.0, seed=3)
    assert sampled("board", "rules") == sampled("board", "rules")  # seeded by the prompt
    env = TextArenaEnv("TicTacToe-v0", opponent=opponent)
    env.reset(seed=0)
    assert env.step("[4]")[4]["opponent_moves"] >= 1
    assert env.fork().opponent.model is llama


# -- errors -----------------------------------------------------------------------------------


def test_the_errors_name_the_game_and_what_to_do():
    with pytest.raises(UnsupportedGameError, match=r"'TicTacToe-v1'.*close ids: TicTacToe-v0"):
        TextArenaEnv("TicTacToe-v1")
    with pytest.raises(ValueError, match="two players: pass opponent="):
        TextArenaEnv("ConnectFour-v0")
    with pytest.raises(ValueError, match="drop opponent="):
        TextArenaEnv("GuessTheNumber-v0", opponent=lambda observation: "[1]")
    with pytest.raises(ValueError, match="does not parse on Python"):
        check_game("Chess-v0")
    with pytest.raises(ValueError, match="NLTK data 'words'"):
        check_game("Hangman-v0")
    with pytest.raises(ValueError, match="needs 3 players"):
        TextArenaEnv("ThreePlayerIPD-v0", opponent=first_available, num_players=3)
    assert check_game("TicTacToe-v0-train", opponent=first_available) == 2  # a variant
    with pytest.raises(RuntimeError, match="call reset"):
        TextArenaEnv("GuessTheNumber-v0").step("[1]")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (LookupError("\n****\n  Resource \x1b[93mwords\x1b[0m not found. nltk"),
         "python -m nltk.downloader words"),
        (ValueError("OpenRouter API key not found."), "online LLM"),
        (SyntaxError("f-string: unmatched '['", ("/x/Chess/env.py", 62, 1, "")),
         r"does not parse on Python 3\.\d+ \(f-string: unmatched '\[', Chess/env.py line 62"),
        (KeyError("board"), "KeyError: 'board'"),
    ],
)  # fmt: skip
def test_explain_says_why_a_game_cannot_run(error, reason):
    assert re.search(reason, explain("Some-v0", error).reason)


def test_a_missing_textarena_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "textarena", None)
    with pytest.raises(MissingExtraError, match="'textarena' extra"):
        check_game("TicTacToe-v0")


# -- the survey ---------------------------------------------------------------------------------


def test_the_survey_agrees_with_the_tables(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import textarena_survey

    rows = [textarena_survey.survey_one(game, 60) for game in ("TicTacToe-v0", "Chess-v0")]
    assert [(row.works, row.players, row.same_seed, row.fork_replays) for row in rows] == [
        (True, 2, True, True), (False, None, None, None),
    ]  # fmt: skip
    assert textarena_survey.differences(rows) == []
    assert "| TicTacToe-v0 | 2 | yes | yes | yes |" in textarena_survey.markdown(rows)
