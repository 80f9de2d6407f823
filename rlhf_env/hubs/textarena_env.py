"""TextArena's games as turn-level text envs: the agent is player 0, an opponent the other seat.

:class:`TextArenaEnv` plays a TextArena game (``textarena==0.7.4``, the ``textarena`` extra)
through the dialogue mode's bridge (:mod:`rlhf_env.dialogue.turn_level`): the game's prompt is
the system message, what the game shows the agent between its moves the user turns, the
agent's turns its moves. Which games run offline here: :mod:`.textarena_games`
(``docs/textarena_games.md``).

Example:
    >>> env = TextArenaEnv("TicTacToe-v0", opponent=lambda observation: "[4]")
    >>> board, info = env.reset(seed=0)
    >>> info["system_prompt"].splitlines()[0]
    'You are Player 0 in Tic Tac Toe.'
    >>> observation, reward, terminated, truncated, info = env.step("[0]")
    >>> "[Player 1] [4]" in observation, reward, terminated, info["opponent_moves"]
    (True, 0.0, False, 1)
"""

from __future__ import annotations

import contextlib
import copy
import random
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlhf_env.dialogue.turn_level import OUTCOME_KEY
from rlhf_env.hubs.opponents import (
    DEFAULT_OPPONENT_INSTRUCTION,
    LanguageModelOpponent,
    Opponent,
    ScriptedOpponent,
    as_opponent,
)
from rlhf_env.hubs.textarena_games import (
    SINGLE_PLAYER_GAMES,
    TWO_PLAYER_GAMES,
    UNSUPPORTED_GAMES,
    UnsupportedGameError,
    check_game,
    check_players,
    explain,
    textarena,
)

#: The agent's seat.
AGENT = 0

#: TextArena's sender id of the game's own messages (``textarena.GAME_ID``).
GAME_ID = -1

#: The user turn when the game shows the agent nothing but its prompt (its rules, now the
#: system message) or, between moves, nothing new.
YOUR_MOVE = "Your move."

#: Between the messages of one observation.
MESSAGE_SEPARATOR = "\n\n"

#: One TextArena message: (sender id, text, ObservationType).
Message = tuple[int, str, Any]


class TextArenaEnv:
    """A TextArena game played as player 0, as a turn-level text env.

    **Description.** Each game is a new TextArena env (``textarena.make(game)``: some games'
    reset reuses what their constructor built, such as a deck) reset with the episode's seed;
    the agent plays seat 0, an :class:`~rlhf_env.hubs.opponents.Opponent` every other seat.
    After each agent move the opponent moves until it is the agent's turn again or the game
    is over; where the opponent moves first, it does so in ``reset``.

    **Action.** The agent's turn as text, passed to the game as its move through the game's own
    action wrappers (TextArena's default for the id: most add ``[...]`` around a move that has
    no brackets, some clip its length).

    **Observation.** Text built from TextArena's messages to player 0 (``(sender, text,
    ObservationType)``):

    ================  ===================================================================
    part              what it is
    ================  ===================================================================
    system prompt     ``info["system_prompt"]`` of ``reset``: the game's ``PROMPT``
                      messages (its rules and the agent's side)
    first user turn   ``reset``'s observation: the other messages before the agent's
                      first move (board, game messages, the opponent's first move), or
                      :data:`YOUR_MOVE` when there are none
    next user turns   ``step``'s observation: only the messages since the agent's last
                      move (the conversation holds the earlier ones), or
                      :data:`YOUR_MOVE` when there are none
    ================  ===================================================================

    Messages are joined by blank lines; the game's own are given as they are, another
    player's as ``"[Player 1] text"`` (TextArena's role name), and the agent's own moves,
    which TextArena echoes back, are left out.

    **Reward.** 0 on every turn but the last; on the last, player 0's reward from TextArena's
    ``close()``: in most games for two, 1 for a win, -1 for a loss, 0 for a draw; in games for
    one, 1 for a solved game and in most a completion fraction in [0, 1) otherwise.

    **Starting state.** ``reset(seed=s)`` resets the game with ``s`` and gives the env its own
    :mod:`random` and NumPy global streams, seeded with ``s`` (TextArena's games draw from
    those): they are swapped in around every reset and step and the caller's restored, so a
    seed gives the same game, a fork replays exactly, and the caller's global RNGs are left
    as they were. ``seed=None`` draws a fresh seed (``info["seed"]``). The streams are
    process-wide: step TextArena envs from one thread.

    **Episode end.** Terminated when TextArena says the game is over: a win, loss or draw by
    its rules, the game's own turn limit (it decides that outcome: a draw, or a completion
    fraction), or a player's repeated invalid move (TextArena's error allowance: the first
    invalid move is answered with a message and another try, the next one loses the game).
    Never truncated: TextArena ends every game itself. The final step's ``info`` holds
    ``"outcome"``: ``reward``, ``win`` (1.0: the agent's reward beats every other player's;
    in games for one, reward >= 1), ``turns`` (the agent's moves, invalid ones included),
    ``invalid_move`` (1.0: the game ended on the agent's invalid move), and in games for two
    ``draw``; and ``"reason"``, TextArena's words for the end.

    **Info.** ``reset``: ``system_prompt``, ``seed``, ``players``. Every step:
    ``invalid_move`` (the agent's move was invalid and it is asked again), ``opponent_moves``
    (how many moves the opponent made), ``textarena`` (TextArena's step info); at the end
    ``outcome``, ``reason`` and ``game_info`` (TextArena's ``game_info`` of player 0).

    Args:
        game: a registered TextArena id (``"GuessTheNumber-v0"``, ``"TicTacToe-v0"``);
            :data:`~rlhf_env.hubs.textarena_games.SINGLE_PLAYER_GAMES` and
            :data:`~rlhf_env.hubs.textarena_games.TWO_PLAYER_GAMES` list those that run here.
        opponent: the other seat in games for two: an :class:`Opponent`
            (``opponent(observation, system_prompt) -> move``), or any function
            ``observation -> move`` (wrapped in :class:`ScriptedOpponent`). It is shown all
            its seat's messages so far (the prompt apart, as ``system_prompt``), and is
            shared, not copied, by forks.
        num_players: the players to reset the game with; ``None``: the survey's tables
            (games outside them are refused). Giving it skips the tables (to try a game
            they do not list).
        env_kwargs: keyword arguments of the game's constructor, over the id's defaults
            (``{"max_turns": 5}``).
        max_opponent_moves: the most opponent moves between two agent moves (a guard
            against a game that never gives the turn back).

    Raises:
        UnsupportedGameError: (a ``ValueError``) the game cannot run here: see
            :func:`~rlhf_env.hubs.textarena_games.check_game`; making or resetting it
            failed (missing NLTK data, an online LLM, an import error).
        RuntimeError: from ``reset``, the opponent moved first and lost the game (by invalid
            moves) before the agent's first move; from ``step``, the game is over, or the
            opponent made ``max_opponent_moves`` moves in a row.
    """

    def __init__(
        self,
        game: str,
        opponent: Opponent | Callable[[str], str] | None = None,
        *,
        num_players: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        max_opponent_moves: int = 100,
    ) -> None:
        if num_players is None:
            num_players = check_game(game, opponent)
        else:
            check_players(game, num_players, opponent)
        if max_opponent_moves < 1:
            raise ValueError(f"max_opponent_moves must be at least 1, got {max_opponent_moves}")
        self.game = game
        self.num_players = num_players
        self.opponent: Opponent | None = None if opponent is None else as_opponent(opponent)
        self.max_opponent_moves = max_opponent_moves
        self.env_kwargs = dict(env_kwargs or {})
        # Made again at every reset (some games' reset reuses state their constructor built,
        # a deck it deals from); made here too, so that a game that cannot be made fails now.
        self._env = self._make_game()
        self._rng: _RandomStreams | None = None
        self._histories: dict[int, list[Message]] = {}
        self._turns = 0
        self._done = False

    # -- the protocol ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start a game: the agent's first user turn, and ``info`` with its system prompt."""
        if seed is None:
            seed = secrets.randbelow(2**31)
        self._rng = _RandomStreams(seed)
        self._histories = {player: [] for player in range(self.num_players)}
        self._turns = 0
        with self._rng.active():
            self._env = self._make_game()
            with _explained(self.game):
                self._env.reset(num_players=self.num_players, seed=seed)
            self._done, _ = self._play_others()
            if self._done:
                raise RuntimeError(
                    f"{self.game}: the game ended before the agent's first move "
                    f"({self._end_reason()!r:.160}); the opponent moved first and lost, most "
                    "likely by invalid moves: give it moves the game accepts"
                )
            messages = self._take_agent_messages()
        prompt = [text for _, text, kind in messages if _is_prompt(kind)]
        rest = [message for message in messages if not _is_prompt(message[2])]
        info = {
            "system_prompt": MESSAGE_SEPARATOR.join(text.strip() for text in prompt),
            "seed": seed,
            "players": self.num_players,
        }
        return self._user_turn(rest) or YOUR_MOVE, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play the agent's move ``action``, then the opponent's until the agent's turn."""
        if self._rng is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError(f"the {self.game} game is over; call reset() to play another")
        with self._rng.active():
            self._done, textarena_info = self._env.step(action)
            self._turns += 1
            invalid = not self._done and self.current_player == AGENT and self._asked_again
            opponent_moves = 0
            if not self._done:
                self._done, opponent_moves = self._play_others()
            messages = self._take_agent_messages()
        observation = self._user_turn(messages)
        info: dict[str, Any] = {
            "invalid_move": invalid,
            "opponent_moves": opponent_moves,
            "textarena": dict(textarena_info or {}),
        }
        reward = 0.0
        if self._done:
            reward = self._finish(info)
        else:
            observation = observation or YOUR_MOVE
        return observation, reward, self._done, False, info

    def fork(self) -> TextArenaEnv:
        """An independent copy: the game's state and random streams deep-copied, the
        opponent shared (it may hold a model)."""
        memo: dict[int, Any] = {}
        if self.opponent is not None:
            memo[id(self.opponent)] = self.opponent
        return copy.deepcopy(self, memo)

    def close(self) -> None:
        """Nothing to release (TextArena's ``close()`` gives the rewards, read at the end)."""

    # -- the game ---------------------------------------------------------------------------

    def _make_game(self) -> Any:
        """A new TextArena env of the game, with its default wrappers (the adapter reads the
        messages under them, and passes moves through them)."""
        with _RandomStreams().active(), _explained(self.game):
            return textarena().make(self.game, **self.env_kwargs)

    @property
    def textarena_env(self) -> Any:
        """The TextArena env of the current game, under its wrappers (to inspect: its
        ``state.game_state``, ``state.current_player_id``; stepping it bypasses the adapter)."""
        return self._game

    @property
    def _game(self) -> Any:
        """The TextArena env under its wrappers: its messages are read raw."""
        env = self._env
        while _is_wrapper(env):
            env = env.env
        return env

    @property
    def current_player(self) -> int:
        """Whose turn it is: 0, the agent's, between steps of a game that is not over."""
        return int(self._game.state.current_player_id)

    @property
    def _asked_again(self) -> bool:
        """The last move was invalid and its player may try again (TextArena's states count
        the errors until a valid move resets the count)."""
        return bool(getattr(self._game.state, "error_count", 0))

    def _play_others(self) -> tuple[bool, int]:
        """Let the opponent move until the agent's turn or the game's end: (done, moves)."""
        moves = 0
        while self.current_player != AGENT:
            if self.opponent is None:
                raise RuntimeError(f"{self.game}: player {self.current_player} has no opponent")
            if moves == self.max_opponent_moves:
                raise RuntimeError(
                    f"{self.game}: the opponent made {moves} moves without the turn coming back "
                    "to the agent; raise max_opponent_moves if the game allows that"
                )
            player, messages = self._game.get_observation()
            history = self._histories.setdefault(player, [])
            history.extend(messages)
            prompt = [text.strip() for _, text, kind in history if _is_prompt(kind)]
            seen = [message for message in history if not _is_prompt(message[2])]
            move = self.opponent(
                self._format(seen, player, keep_own=True) or YOUR_MOVE,
                MESSAGE_SEPARATOR.join(prompt) or DEFAULT_OPPONENT_INSTRUCTION,
            )
            done, _ = self._env.step(move)
            moves += 1
            if done:
                return True, moves
        return False, moves

    def _take_agent_messages(self) -> list[Message]:
        """The messages to the agent since its last move, taken from TextArena (its
        ``get_observation()`` on the agent's turn: some games add their state there)."""
        if not self._done and self.current_player == AGENT:
            _, messages = self._game.get_observation()
            return list(messages)
        state = self._game.state
        messages = list(state.observations.get(AGENT, []))
        state.observations[AGENT] = []
        return messages

    def _user_turn(self, messages: Sequence[Message]) -> str:
        return self._format(messages, AGENT, keep_own=False)

    def _format(self, messages: Sequence[Message], viewer: int, keep_own: bool) -> str:
        """Messages as text: the game's as they are, a player's as ``"[Player 1] text"``,
        the viewer's own moves left out unless ``keep_own``."""
        roles = getattr(self._game.state, "role_mapping", {}) or {}
        parts = []
        for sender, text, _ in messages:
            text = str(text).strip()
            if not text or (sender == viewer and not keep_own):
                continue
            if sender == GAME_ID:
                parts.append(text)
            else:
                parts.append(f"[{roles.get(sender, f'Player {sender}')}] {text}")
        return MESSAGE_SEPARATOR.join(parts)

    def _finish(self, info: dict[str, Any]) -> float:
        """Read the rewards and game info of the finished game into ``info``; the agent's
        reward."""
        rewards, game_info = _rewards_and_info(self._env.close())
        for value in (rewards or {}).values():
            if not isinstance(value, (int, float)):
                raise RuntimeError(
                    f"{self.game}: TextArena gave a reward that is not a number ({value!r:.60}):"
                    " a bug of the game"
                )
        rewards = {int(player): float(value) for player, value in (rewards or {}).items()}
        reward = rewards.get(AGENT, 0.0)
        others = [value for player, value in rewards.items() if player != AGENT]
        agent_info = dict((game_info or {}).get(AGENT, {}))
        # A game for one is won when solved; a game for more, by beating every other player.
        win = reward >= 1.0 if not others else reward > max(others)
        outcome = {
            "reward": reward,
            "win": float(win),
            "turns": float(self._turns),
            "invalid_move": float(bool(agent_info.get("invalid_move", False))),
        }
        if self.num_players > 1:
            outcome["draw"] = float(bool(others) and all(value == reward for value in others))
        info[OUTCOME_KEY] = outcome
        info["reason"] = str(agent_info.get("reason", ""))
        info["game_info"] = agent_info
        return reward

    def _end_reason(self) -> str:
        game_info = getattr(self._game.state, "game_info", {}) or {}
        return str(game_info.get(AGENT, {}).get("reason", ""))


class _RandomStreams:
    """An env's own states of the global :mod:`random` and NumPy streams, which TextArena's
    games draw from: :meth:`active` swaps them in and keeps what was drawn, restoring the
    caller's. Without a seed it only restores the caller's (nothing kept)."""

    def __init__(self, seed: int | None = None) -> None:
        self.python: Any = None
        self.numpy: Any = None
        if seed is not None:
            with self.active():
                random.seed(seed)
                np.random.seed(seed % 2**32)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        saved = random.getstate(), np.random.get_state()
        if self.python is not None:
            random.setstate(self.python)
            np.random.set_state(self.numpy)
        try:
            yield
        finally:
            self.python, self.numpy = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])


@contextlib.contextmanager
def _explained(game: str) -> Iterator[None]:
    """Raise an error of making or resetting ``game`` as an :class:`UnsupportedGameError`
    that says why."""
    try:
        yield
    except UnsupportedGameError:
        raise
    except Exception as error:
        raise explain(game, error) from error


def _is_prompt(kind: Any) -> bool:
    return getattr(kind, "name", None) == "PROMPT"


def _is_wrapper(env: Any) -> bool:
    return isinstance(env, textarena().Wrapper)


def _rewards_and_info(closed: Any) -> tuple[Mapping | None, Mapping | None]:
    """TextArena's ``close()``: ``(rewards, game_info)``, or the rewards alone."""
    if isinstance(closed, tuple) and len(closed) == 2:
        return closed[0], closed[1]
    return closed, None


__all__ = [
    "SINGLE_PLAYER_GAMES",
    "TWO_PLAYER_GAMES",
    "UNSUPPORTED_GAMES",
    "YOUR_MOVE",
    "LanguageModelOpponent",
    "Opponent",
    "ScriptedOpponent",
    "TextArenaEnv",
    "UnsupportedGameError",
    "check_game",
]
