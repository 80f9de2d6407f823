"""``rlhf_env/TextArena-v0``: any TextArena game that runs offline, played token by token.

``gym.make("rlhf_env/TextArena-v0", game="GuessTheNumber-v0")`` plays the game through the
dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`): the game's prompt is the system
message, what the game shows the agent between its moves the user turns (inserted by the env,
the chat template applied incrementally, so the ids trained on are the ids sampled), the
agent's turns its moves (:class:`rlhf_env.hubs.textarena_env.TextArenaEnv` says exactly how).

- **episodes**: one game each, reset with the episode's seed. Training games use seeds drawn
  from ``[0, eval_seed)``; the held-out games are seeds ``eval_seed ... eval_seed +
  eval_games - 1`` (held-out problems are held-out seeds, as in the field's hubs);
- **reward**: the game's: 0 on every turn but the last, then player 0's TextArena reward (1 a
  win, -1 a loss, 0 a draw in games for two; 1 a solved game, else in most a completion
  fraction, in games for one), beside the env's ``-beta * KL`` on the agent's tokens;
- **opponent** (games for two): ``opponent="reference"`` (default) the policy's initial weights,
  frozen (the task's reference model, shared), greedy; ``"scripted"`` a fixed move
  (``scripted_move``); or any :class:`~rlhf_env.hubs.opponents.Opponent` object;
- **gold**: the games' own figures on the held-out games
  (:class:`~rlhf_env.rewards.outcome.EpisodeOutcome`): ``reward`` first, then ``win``,
  ``turns`` (the agent's moves) and ``invalid_move`` (the game ended on an invalid move). A
  game cut by the token env's limits before its end counts 0.

Which games run here (54 for one player, 110 for two, and why the others do not):
``docs/textarena_games.md``; another id fails at ``gym.make`` with the reason.

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("rlhf_env/TextArena-v0", game="GuessTheNumber-v0")
    >>> env.unwrapped.task.gold_name
    'reward'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlhf_env.dialogue.turn_level import TurnLevelEpisode
from rlhf_env.hubs.opponents import LanguageModelOpponent, Opponent, as_opponent
from rlhf_env.hubs.textarena_env import TextArenaEnv
from rlhf_env.hubs.textarena_games import players
from rlhf_env.models.loading import frozen_copy
from rlhf_env.tasks import turn_level
from rlhf_env.tasks.base import Task, TaskContext, TaskSpec

NAME = "TextArena"

#: The figures of a game's outcome the task reports, the first being its gold score.
GOLD_FIGURES = ("reward", "win", "turns", "invalid_move")


def build(
    context: TaskContext,
    game: str = "GuessTheNumber-v0",
    opponent: str | Opponent = "reference",
    scripted_move: str = "[0]",
    game_options: Mapping[str, Any] | None = None,
    eval_games: int = 64,
    eval_seed: int = 1_000_000,
    max_moves: int = 8,
    move_tokens: int = 24,
    observation_tokens: int = 128,
) -> Task:
    """The TextArena task for ``context.policy`` (see the module docstring).

    Args:
        game: a TextArena id that runs here (``docs/textarena_games.md``).
        opponent: games for two: ``"reference"`` (the policy's initial weights, frozen,
            greedy), ``"scripted"`` (always ``scripted_move``) or an opponent object; unused
            in games for one.
        scripted_move: the scripted opponent's move.
        game_options: keyword arguments of the game's constructor (``{"max_turns": 5}``).
        eval_games: held-out games (seeds ``eval_seed`` onwards).
        eval_seed: the first held-out seed; training seeds are below it.
        max_moves: the agent's moves per episode (the env's ``max_turns``): a game not over
            by then is truncated (its outcome then counts 0).
        move_tokens: tokens per move (the env's ``max_new_tokens``; a longer move is cut and
            closed by the env, ``turn_cut="end_turn"``, and still played).
        observation_tokens: tokens allowed per later user turn (the game's news after a
            move, with the template's headers); a game whose news does not fit the env's
            ``max_total_tokens`` is truncated there (with a warning).

    Raises:
        UnsupportedGameError: the game cannot run here (the message says why).
    """
    if eval_games < 1 or eval_seed < 1:
        raise ValueError(f"eval_games and eval_seed must be >= 1, got {eval_games}, {eval_seed}")
    reference = frozen_copy(context.policy)
    one_player = players(game) == 1  # (an id the tables lack fails in TextArenaEnv below)
    rival = None if one_player else _opponent(opponent, scripted_move, reference, context)
    options = dict(game_options or {})
    prototype = TextArenaEnv(game, rival, env_kwargs=options)  # fails now for a game that cannot
    seats = prototype.num_players

    def make_game() -> TextArenaEnv:
        return TextArenaEnv(game, rival, num_players=seats, env_kwargs=options)

    def train_game(rng: np.random.Generator) -> TurnLevelEpisode:
        seed = int(rng.integers(eval_seed))
        return TurnLevelEpisode(make_game, seed=seed, name=f"{game} #{seed}")

    held_out = [
        TurnLevelEpisode(make_game, seed=seed, name=f"{game} #{seed}")
        for seed in range(eval_seed, eval_seed + eval_games)
    ]
    # Some held-out and training games' first prompts: the longest sizes the env's prompts.
    rng = np.random.default_rng(0)
    sample = [*held_out[:8], *(train_game(rng) for _ in range(8))]
    return Task(
        name=NAME,
        train_prompts=train_game,
        eval_prompts=held_out,
        reward_fn=None,
        gold=turn_level.outcome_gold(GOLD_FIGURES),
        env_options=turn_level.env_options(
            context, sample, max_moves, move_tokens, observation_tokens
        ),
        details={"game": game, "players": seats, "eval_games": eval_games},
        reference=reference,
    )


def _opponent(
    opponent: str | Opponent, scripted_move: str, reference: Any, context: TaskContext
) -> Opponent:
    if opponent == "reference":
        return LanguageModelOpponent(reference, context.tokenizer)
    if opponent == "scripted":
        return as_opponent(lambda observation: scripted_move)
    if isinstance(opponent, str):
        raise ValueError(
            f"opponent must be 'reference', 'scripted' or an opponent object, got {opponent!r}"
        )
    return as_opponent(opponent)


SPEC = TaskSpec(
    name=NAME,
    description="play a TextArena game (game=...; 164 run offline) token by token; reward and "
    "gold = the game's outcome on held-out seeds",
    build=build,
    smoke_options={
        "eval_games": 4,
        "max_moves": 3,
        "move_tokens": 6,
    },
    chat_template=True,
    smoke_positions=2048,
)

__all__ = ["GOLD_FIGURES", "SPEC", "build"]
