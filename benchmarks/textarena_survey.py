"""Survey of every TextArena game through TextArenaEnv: which run offline here, for how many
players, and whether a seed gives the same game.

For each registered id (``rlhf_env.hubs.textarena_games.registered_games``: the ``-raw`` and
``-train`` variants left out), with the game's default arguments:

1. ``players``: the fewest players TextArena's ``reset`` accepts (1, 2, ... up to
   ``MAX_PLAYERS``: a wrong count fails an assertion or raises a ValueError about players)
   and keeps (some games reset a state of their own count whatever they are given; a game
   for one resets a single-player state);
2. a game for one or two is played through ``TextArenaEnv(game, num_players=...)``, in games
   for two against an opponent that always answers ``OPPONENT_MOVE``: reset with a seed
   (it must give a system prompt and a non-empty first user turn), then up to ``STEPS``
   agent moves of ``AGENT_MOVE`` (each must return a string, a finite reward and, when the
   game ends, an outcome). Where the opponent moves first, that opponent loses by invalid
   moves before the agent's first move; the game is then surveyed again with an opponent
   that plays the last bracketed move its observation lists (``listed_move``), and the
   note says so;
3. ``same seed``: a second env, reset with the same seed after the global :mod:`random` and
   NumPy streams were moved on, and the first env reset again after its game, start the
   same game (the same first user turn and the same ``game_state``, hidden parts included)
   and answer the first move the same; ``TextArena alone``: the same check of the game's
   state on TextArena's own ``make`` and ``reset(seed=...)``, without the adapter's own
   random streams;
4. ``fork replays``: a fork of the env, stepped with the first move, answers as the env
   itself does afterwards (so the fork left it unchanged).

``works`` is steps 1-2 passing; ``note`` is, when not, the adapter's error (missing NLTK data,
an online LLM, a module that does not parse on this Python) or the failed check. Prints a
markdown table (``docs/textarena_games.md`` records it), then how it differs from the tables
in ``rlhf_env/hubs/textarena_games.py``; ``--python`` prints those tables from this run;
``--out`` writes the rows as JSON.

    python benchmarks/textarena_survey.py              # every game, a few minutes
    python benchmarks/textarena_survey.py --games TicTacToe-v0 Wordle-v0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import random
import re
import signal
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.hubs import textarena_games
from rlhf_env.hubs.textarena_env import TextArenaEnv
from rlhf_env.hubs.textarena_games import explain, registered_games, textarena

#: The most players tried when looking for the count a game accepts.
MAX_PLAYERS = 8
#: The agent's moves per game (fewer when the game ends first).
STEPS = 3
#: The agent's move: a bracketed token, the format most games ask for.
AGENT_MOVE = "[0]"
#: The opponent's move, every time.
OPPONENT_MOVE = "[1]"
#: The seed of every reset.
SEED = 7


@dataclass
class SurveyRow:
    """One game's results (see the module docstring)."""

    game: str
    players: int | None = None
    works: bool = False
    same_seed: bool | None = None
    textarena_alone: bool | None = None
    fork_replays: bool | None = None
    moves: int = 0
    ended: bool = False
    reason: str = ""
    note: str = ""
    seconds: float = 0.0


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def fewest_players(game: str) -> tuple[int | None, BaseException | None]:
    """The fewest players ``game``'s reset accepts, or the error that is not about the count."""
    single = textarena().SinglePlayerState
    for count in range(1, MAX_PLAYERS + 1):
        try:
            env = textarena().make(game)
            env.reset(num_players=count, seed=SEED)
        except AssertionError:
            continue
        except ValueError as error:
            if "player" in str(error).lower():
                continue
            return None, error
        except Exception as error:
            return None, error
        state = env.state
        if state.num_players != count or (count == 1) != isinstance(state, single):
            continue
        return count, None
    return None, None


def fixed_move(observation: str) -> str:
    """The survey's opponent: always ``OPPONENT_MOVE``."""
    return OPPONENT_MOVE


#: A bracketed move: ``[4]``, ``[check]``, ``[bet 2]``.
_BRACKETED = re.compile(r"\[[^\[\]\n]{1,24}\]")


def listed_move(observation: str, system_prompt: str | None = None) -> str:
    """The fallback opponent: the last bracketed move in its observation (games list the
    moves open to the player last), else the first in its prompt, else ``OPPONENT_MOVE``."""
    moves = _BRACKETED.findall(observation)
    if moves:
        return moves[-1]
    moves = _BRACKETED.findall(system_prompt or "")
    return moves[0] if moves else OPPONENT_MOVE


#: A memory address in a repr (``<object at 0x7f...>``), which differs between equal states.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def fingerprint(game_env: Any) -> str:
    """A TextArena env's game state as text: equal for equal games."""
    return _ADDRESS.sub("", repr(getattr(game_env.state, "game_state", None)))


def textarena_alone_same(game: str, players: int) -> bool:
    """Whether TextArena's own ``reset(seed=SEED)`` gives the same game state twice, the
    global streams moved on in between."""
    states = []
    for other in (1, 2):
        random.seed(other)
        np.random.seed(other)
        env = textarena().make(game)
        env.reset(num_players=players, seed=SEED)
        states.append(fingerprint(env))
    return states[0] == states[1]


def _make(game: str, players: int, opponent: Any) -> TextArenaEnv:
    return TextArenaEnv(game, opponent if players == 2 else None, num_players=players)


def _check_step(result: tuple) -> str:
    """What is wrong with a step's result, or ``""``."""
    observation, reward, terminated, _, info = result
    if not isinstance(observation, str):
        return f"step returned a {type(observation).__name__} observation"
    if not math.isfinite(reward):
        return f"step returned reward {reward}"
    if terminated and "outcome" not in info:
        return "the last step reported no outcome"
    return ""


def play(game: str, players: int, row: SurveyRow) -> None:
    """Steps 2-4 of the module docstring, recorded in ``row``."""
    opponent: Any = fixed_move
    env = _make(game, players, opponent)
    try:
        first, info = env.reset(seed=SEED)
    except RuntimeError as error:
        if "before the agent's first move" not in str(error):
            raise
        opponent = listed_move
        row.note = (
            "the opponent moves first (a fixed-string opponent loses before the agent's first "
            "move): surveyed against one that plays a listed move"
        )
        env = _make(game, players, opponent)
        first, info = env.reset(seed=SEED)
    if not info["system_prompt"] or not first.strip():
        row.reason = "reset gave no system prompt or an empty first user turn"
        return
    state = fingerprint(env.textarena_env)
    fork = env.fork()
    results = []
    for _ in range(STEPS):
        result = env.step(AGENT_MOVE)
        problem = _check_step(result)
        if problem:
            row.reason = problem
            return
        results.append(result[:4])
        row.moves += 1
        if result[2] or result[3]:
            row.ended = True
            break
    row.works = True
    row.fork_replays = fork.step(AGENT_MOVE)[:4] == results[0]
    random.seed(12345)
    np.random.seed(12345)
    again = _make(game, players, opponent)
    row.same_seed = all(
        other.reset(seed=SEED) == (first, info)
        and fingerprint(other.textarena_env) == state
        and other.step(AGENT_MOVE)[:4] == results[0]
        for other in (again, env)
    )
    row.textarena_alone = textarena_alone_same(game, players)


def survey_one(game: str, timeout_s: int) -> SurveyRow:
    """One game's row; its output is swallowed, its errors recorded."""
    row = SurveyRow(game)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            row.players, error = fewest_players(game)
            if error is not None:
                row.reason = explain(game, error).reason
            elif row.players is None:
                row.reason = f"no player count from 1 to {MAX_PLAYERS} resets"
            elif row.players > 2:
                row.reason = (
                    f"it resets with no fewer than {row.players} players; the adapter plays "
                    "games for one or two"
                )
            else:
                play(game, row.players, row)
    except _Timeout:
        row.reason = f"took over {timeout_s} s"
    except Exception as error:
        row.works = False
        row.reason = getattr(error, "reason", None) or explain(game, error).reason
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    row.seconds = round(time.perf_counter() - start, 2)
    return row


def _yes(flag: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[flag]


def markdown(rows: list[SurveyRow]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| game | players | works offline | same seed, same game | TextArena alone | fork "
        "replays | reason if not; note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reason = row.reason.replace("|", "\\|")
        lines.append(
            f"| {row.game} | {row.players or '?'} | {'yes' if row.works else 'no'} | "
            f"{_yes(row.same_seed)} | {_yes(row.textarena_alone)} | {_yes(row.fork_replays)} "
            f"| {reason or row.note} |"
        )
    return "\n".join(lines)


def summary(rows: list[SurveyRow]) -> str:
    """Counts of working games by players, and of the reasons of the others."""
    single = sum(row.works and row.players == 1 for row in rows)
    double = sum(row.works and row.players == 2 for row in rows)
    unseeded = [row.game for row in rows if row.works and row.same_seed is False]
    alone = [row.game for row in rows if row.works and row.textarena_alone is False]
    lines = [
        f"{len(rows)} games: {single + double} work offline ({single} for one player, {double} "
        f"for two), {len(rows) - single - double} do not.",
    ]
    if unseeded:
        lines.append(f"A seed does not give the same game in: {', '.join(unseeded)}.")
    if alone:
        lines.append(
            f"Without the adapter's own random streams, a seed does not give the same game in "
            f"{len(alone)}: {', '.join(alone)}."
        )
    return "\n".join(lines)


def python_tables(rows: list[SurveyRow]) -> str:
    """The tables of ``rlhf_env/hubs/textarena_games.py`` from this run (``ruff format`` it):
    the unsupported games grouped by reason, long reasons cut into strings that join up."""

    def names(players: int) -> str:
        games = [row.game for row in rows if row.works and row.players == players]
        return "\n".join(f"    {game!r}," for game in games)

    groups: dict[str, list[str]] = {}
    for row in rows:
        if not row.works:
            groups.setdefault(row.reason, []).append(row.game)
    entries = []
    for reason, games in groups.items():
        text = "\n".join(f"        {piece!r}" for piece in _pieces(reason))
        entries.append(f"    (\n{text}\n    ): ({', '.join(map(repr, games))},),")
    return (
        f"SINGLE_PLAYER_GAMES: tuple[str, ...] = (\n{names(1)}\n)\n\n"
        f"TWO_PLAYER_GAMES: tuple[str, ...] = (\n{names(2)}\n)\n\n"
        "_UNSUPPORTED_BY_REASON: dict[str, tuple[str, ...]] = {\n" + "\n".join(entries) + "\n}"
    )


def _pieces(text: str, width: int = 76) -> list[str]:
    """``text`` cut at spaces into pieces of about ``width`` characters that join up to it."""
    pieces, current = [], ""
    for word in text.split(" "):
        if current and len(current) + len(word) + 1 > width:
            pieces.append(current + " ")
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*pieces, current]


def differences(rows: list[SurveyRow]) -> list[str]:
    """Where this run and the module's tables disagree."""
    found = []
    for row in rows:
        surveyed = row.players if row.works else None
        recorded = textarena_games.players(row.game)
        if surveyed != recorded:
            found.append(f"{row.game}: this run {surveyed}, the tables {recorded}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="*", help="ids to survey (default: every game)")
    parser.add_argument("--timeout", type=int, default=60, help="seconds per game")
    parser.add_argument("--python", action="store_true", help="print the module's tables")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    games = args.games or registered_games()
    rows = []
    for game in games:
        rows.append(survey_one(game, args.timeout))
        print(f"{game}: {'works' if rows[-1].works else rows[-1].reason}", flush=True)
    print()
    print(markdown(rows))
    print()
    print(summary(rows))
    found = differences(rows)
    print("\nThe module's tables " + ("differ:\n" + "\n".join(found) if found else "agree."))
    if args.python:
        print("\n" + python_tables(rows))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "textarena": version("textarena"),
                    "python": platform.python_version(),
                    "machine": platform.platform(),
                    "rows": [asdict(row) for row in rows],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
