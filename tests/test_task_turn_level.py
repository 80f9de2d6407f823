"""The turn-level tasks, ``rlhf_env/TextArena-v0`` and ``rlhf_env/ReasoningGym-v0``: built by
``gym.make`` for games and datasets that run offline, checked by Gymnasium's checker, played
token by token with exact ids and the game's rewards minus beta times the KL as the return,
the vector env equal to single envs, and evaluated on the games' own outcome figures."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from chat_tokenizers import smollm2_tokenizer
from helpers import assert_vector_matches_singles, check_env_strictly

from rlhf_agents import PolicyAgent, evaluate
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.hubs.textarena_games import UnsupportedGameError
from rlhf_env.models import build_tiny_llama
from rlhf_env.tasks import smoke_arguments

#: Eight games for one player and two for two (with the scripted opponent).
GAMES = [
    "GuessTheNumber-v0", "Minesweeper-v0", "TowerOfHanoi-v0", "FrozenLake-v0", "LightsOut-v0",
    "Mastermind-v0", "Bandit-v0", "FifteenPuzzle-v0", "TicTacToe-v0", "ConnectFour-v0",
]  # fmt: skip

DATASETS = [
    "chain_sum", "countdown", "basic_arithmetic", "gcd", "lcm", "letter_counting",
    "spell_backward", "word_sorting", "maze", "number_sorting", "base_conversion",
]  # fmt: skip


def make(task: str, vector: bool = False, **options):
    arguments = {**smoke_arguments(task), **options}
    if vector:
        return gym.make_vec(f"rlhf_env/{task}-v0", num_envs=2, **arguments)
    return gym.make(f"rlhf_env/{task}-v0", **arguments)


@pytest.mark.parametrize("game", GAMES)
def test_textarena_games_pass_the_env_checker(game):
    options = {"opponent": "scripted"} if game in ("TicTacToe-v0", "ConnectFour-v0") else {}
    env = make("TextArena", game=game, **options)
    check_env_strictly(env.unwrapped)
    assert env.unwrapped.task.details["game"] == game


@pytest.mark.parametrize("dataset", DATASETS)
def test_reasoning_gym_datasets_pass_the_env_checker(dataset):
    check_env_strictly(make("ReasoningGym", dataset=dataset).unwrapped)


def test_a_game_that_cannot_run_here_fails_at_make_with_the_reason():
    with pytest.raises(UnsupportedGameError, match=r"Chess-v0.*Python 3\.11"):
        make("TextArena", game="Chess-v0")
    with pytest.raises(ValueError, match="chain_sum"):
        make("ReasoningGym", dataset="chainsum")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    tokenizer = smollm2_tokenizer(tmp_path_factory.mktemp("smollm2"))
    return tokenizer, build_tiny_llama(tokenizer, seed=0, max_position_embeddings=2048)


def play(env, tokenizer, moves):
    """Play ``moves`` as the agent's turns (tokens, then the end of turn) until the episode
    ends; its rewards, KLs and last observation and info."""
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    rewards, kls = [], []
    for move in moves:
        for action in [*tokenizer(move, add_special_tokens=False)["input_ids"], end]:
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            kls.append(info["kl"])
            if terminated or truncated:
                return obs, rewards, kls, info
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize(
    ("game", "moves", "options"),
    [
        ("TicTacToe-v0", ["[0]", "[1]", "[2]", "[3]", "[5]", "[6]", "[7]"], {"opponent": "scripted", "scripted_move": "[4]"}),  # noqa: E501
        ("GuessTheNumber-v0", [f"[{n}]" for n in (10, 5, 15, 3, 8, 12, 18, 1, 20, 7)], {}),
    ],
)  # fmt: skip
def test_a_whole_game_holds_the_template_ids_and_returns_its_rewards_minus_beta_kl(
    smollm2, game, moves, options
):
    """SmolLM2's real tokenizer (a tiny random model of its vocabulary, and another as the
    reference so the KL is not 0): the episode's ids are the chat template applied to the
    whole conversation, the game's messages and the agent's moves."""
    tokenizer, policy = smollm2
    reference = build_tiny_llama(tokenizer, seed=1, max_position_embeddings=2048)
    reference.requires_grad_(False)
    env = gym.make(
        "rlhf_env/TextArena-v0", policy=policy, tokenizer=tokenizer, reference=reference,
        game=game, kl_coef=0.3, max_moves=len(moves), move_tokens=8, **options,
    )  # fmt: skip
    obs, _ = env.reset(seed=0)
    obs, rewards, kls, info = play(env, tokenizer, moves)
    messages = info["conversation"]
    assert messages[0]["role"] == "system" and len(messages) >= 4
    template = IncrementalChatTemplate(tokenizer)
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = tokenizer(whole, add_special_tokens=False)["input_ids"]
    ids = obs["input_ids"][obs["attention_mask"] == 1].tolist()
    assert ids + template.encode(template.closing) == expected
    game_rewards = info["turn_scores"]
    assert info["outcome"]["reward"] == pytest.approx(sum(game_rewards))
    assert sum(rewards) == pytest.approx(sum(game_rewards) - 0.3 * sum(kls), abs=1e-5)
    assert any(abs(k) > 1e-6 for k in kls)


def test_the_vector_env_equals_single_envs_on_a_game(smollm2):
    tokenizer, policy = smollm2
    common = dict(
        policy=policy, tokenizer=tokenizer, game="TicTacToe-v0", opponent="scripted",
        scripted_move="[4]", max_moves=4, move_tokens=6,
    )  # fmt: skip
    venv = gym.make_vec("rlhf_env/TextArena-v0", num_envs=2, **common)
    envs = [gym.make("rlhf_env/TextArena-v0", **common) for _ in range(2)]
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    plans = [
        [a for m in moves for a in [*tokenizer(m, add_special_tokens=False)["input_ids"], end]]
        for moves in (["[0]", "[1]", "[2]"], ["[8]", "[4]", "[7]", "[6]"])
    ]
    assert_vector_matches_singles(venv, envs, plans, seed=3)


@pytest.mark.parametrize(
    ("task", "options", "gold"),
    [
        ("TextArena", {"game": "GuessTheNumber-v0"}, ("reward", "win", "turns", "invalid_move")),
        ("ReasoningGym", {"dataset": "countdown"}, ("correct", "score", "formatted")),
    ],
)
def test_evaluation_reads_the_games_outcome_figures_on_held_out_episodes(task, options, gold):
    venv = make(task, vector=True, **options)
    result = evaluate(PolicyAgent(venv, seed=0), venv)
    figures = result.as_dict()
    assert result.gold_name == gold[0]
    assert result.rollout.num_episodes == len(venv.unwrapped.task.eval_prompts)
    for name in gold:
        assert f"gold/{name}" in figures
        np.testing.assert_array_equal(
            result.per_response[f"gold/{name}"],
            [o.get(name, 0.0) for o in result.rollout.outcomes],
        )
    # A random tiny policy: every game ends by the game's own rules (two invalid moves, or an
    # unparsable answer scored), so every episode reports its figures.
    assert all(set(gold) <= set(outcome) for outcome in result.rollout.outcomes)


def test_the_reasoning_gym_suite_configuration_builds_its_sums_after_two_examples():
    """The suite budget's options (the Arithmetic sums as a dialogue): every held-out problem
    two or three one-digit terms, two examples worked as Arithmetic's are as earlier turns,
    answers cut at 32."""
    from rlhf_env.tasks import TASKS
    from rlhf_env.tasks.reasoning_gym import SUITE_OPTIONS

    budget = TASKS["ReasoningGym"].budget
    assert budget is not None and budget.options == SUITE_OPTIONS and budget.eval_samples == 2
    env = make("ReasoningGym", **{**SUITE_OPTIONS, "eval_problems": 16}).unwrapped
    assert env.max_new_tokens == 32
    for episode in env.task.eval_prompts:
        problem_env = episode.make_env()
        question, info = problem_env.reset(seed=episode.seed)
        terms = question.rsplit(":", 1)[1].strip(" =").split()[::2]
        assert 2 <= len(terms) <= 3 and all(len(term) == 1 for term in terms), question
        assert [turn["role"] for turn in info["history"]] == ["user", "assistant"] * 2
        shown = info["history"][0]["content"].rsplit(":", 1)[1].strip(" =")
        assert info["history"][1]["content"].startswith(f"{shown} = ")
        assert ", so <answer>" in info["history"][1]["content"]
