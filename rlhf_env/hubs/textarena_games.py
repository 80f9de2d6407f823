"""Which TextArena games run offline here, and the errors that say why the others do not.

The tables below are a survey's results (``benchmarks/textarena_survey.py``, recorded with
its date in ``docs/textarena_games.md``): every registered id of textarena 0.7.4 was made,
reset with a seed and stepped through :class:`rlhf_env.hubs.textarena_env.TextArenaEnv`, on
Python 3.11 (in games for two against a scripted opponent). An id's ``-raw`` and ``-train``
variants (the same game behind other observation wrappers, which the adapter does not use)
share the id's row.

Example:
    >>> check_game("GuessTheNumber-v0")
    1
    >>> check_game("TicTacToe-v0", opponent=lambda observation: "[4]")
    2
    >>> try:
    ...     check_game("Chess-v0")
    ... except UnsupportedGameError as error:
    ...     print(error.reason[:44])
    its module does not parse on Python 3.11 (f-
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from rlhf_env.extras import require

#: The pinned TextArena version the tables were surveyed on (the ``textarena`` extra).
TEXTARENA_VERSION = "0.7.4"

#: The suffixes of an id's variants: the same game behind other wrappers.
VARIANT_SUFFIXES = ("-raw", "-train")

#: Games for one player that reset and step offline here with their defaults.
SINGLE_PLAYER_GAMES: tuple[str, ...] = (
    "2048-v0-ultra-easy",
    "2048-v0-mega-easy",
    "2048-v0-super-easy",
    "2048-v0-very-easy",
    "2048-v0-easy",
    "2048-v0",
    "2048-v0-hard",
    "2048-v0-very-hard",
    "2048-v0-extreme",
    "2048-v0-3x3",
    "2048-v0-5x5",
    "2048-v0-6x6",
    "2048-v0-8x8",
    "2048-v0-10x10",
    "Bandit-v0",
    "Bandit-v0-hard",
    "Blackjack-v0",
    "Blackjack-v0-long",
    "Crosswords-v0",
    "Crosswords-v0-hardcore",
    "FifteenPuzzle-v0",
    "FrozenLake-v0",
    "FrozenLake-v0-random",
    "FrozenLake-v0-hardcore",
    "GuessTheNumber-v0",
    "GuessTheNumber-v0-hardcore",
    "LightsOut-v0",
    "LogicPuzzle-v0",
    "LogicPuzzle-v0-hard",
    "Mastermind-v0",
    "Mastermind-v0-hard",
    "Mastermind-v0-extreme",
    "Minesweeper-v0",
    "Minesweeper-v0-small",
    "Minesweeper-v0-medium",
    "Minesweeper-v0-hard",
    "PegJump-v0",
    "RushHour-v0",
    "Secretary-v0",
    "Secretary-v0-long",
    "Set-v0",
    "Sokoban-v0",
    "Sokoban-v0-medium",
    "Sudoku-v0-very-easy",
    "Sudoku-v0-easy",
    "Sudoku-v0",
    "Sudoku-v0-medium",
    "Sudoku-v0-hard",
    "ThreeCardMonte-v0",
    "TowerOfHanoi-v0",
    "TowerOfHanoi-v0-medium",
    "TowerOfHanoi-v0-hard",
    "TowerOfHanoi-v0-hardcore",
    "TowerOfHanoi-v0-extreme",
)

#: Games for two players that reset and step offline here, given an opponent.
TWO_PLAYER_GAMES: tuple[str, ...] = (
    "Alquerque-v0",
    "Battleship-v0",
    "Battleship-v0-standard",
    "Battleship-v0-large",
    "Battleship-v0-extreme",
    "Breakthrough-v0-tiny",
    "Breakthrough-v0-small",
    "Breakthrough-v0",
    "Breakthrough-v0-large",
    "Breakthrough-v0-blind",
    "Breakthrough-v0-long",
    "Briscola-v0",
    "Chopsticks-v0",
    "Chopsticks-v0-medium",
    "Chopsticks-v0-long",
    "ColonelBlotto-v0-small",
    "ColonelBlotto-v0",
    "ColonelBlotto-v0-large",
    "ColonelBlotto-v0-extreme",
    "ConnectFour-v0",
    "ConnectFour-v0-blind",
    "ConnectFour-v0-large",
    "Crusade-v0",
    "GameOfPureStrategy-v0",
    "GermanWhist-v0",
    "Golf-v0",
    "Golf-v0-medium",
    "HighSociety-v0",
    "IndianPoker-v0-short",
    "IndianPoker-v0",
    "IndianPoker-v0-medium",
    "IndianPoker-v0-long",
    "IndianPoker-v0-extreme",
    "IteratedMatchingPennies-v0",
    "IteratedPrisonersDilemma-v0",
    "IteratedRockPaperScissors-v0",
    "IteratedTwoThirdsAverage-v0",
    "KuhnPoker-v0",
    "KuhnPoker-v0-short",
    "KuhnPoker-v0-medium",
    "KuhnPoker-v0-long",
    "KuhnPoker-v0-extreme",
    "LinesOfAction-v0",
    "MemoryGame-v0",
    "MemoryGame-v0-medium",
    "MemoryGame-v0-hard",
    "Nim-v0",
    "Nim-v0-medium",
    "Nim-v0-large",
    "Othello-v0-tiny",
    "Othello-v0-small",
    "Othello-v0",
    "Othello-v0-big",
    "Othello-v0-huge",
    "Othello-v0-hard",
    "PigDice-v0",
    "PigDice-v0-short",
    "PigDice-v0-long",
    "PigDice-v0-50",
    "PigDice-v0-100",
    "PigDice-v0-150",
    "PigDice-v0-200",
    "PigDice-v0-250",
    "PigDice-v0-300",
    "PigDice-v0-350",
    "PigDice-v0-400",
    "PigDice-v0-450",
    "PigDice-v0-500",
    "QuantumTicTacToe-v0",
    "SimpleBlindAuction-v0-quick",
    "SimpleBlindAuction-v0",
    "SimpleBlindAuction-v0-rich",
    "SimpleNegotiation-v0-short",
    "SimpleNegotiation-v0",
    "SimpleNegotiation-v0-long",
    "SimpleTak-v0",
    "SimpleTak-v0-medium",
    "SimpleTak-v0-large",
    "SimpleTak-v0-extreme",
    "SpiteAndMalice-v0",
    "Stratego-v0",
    "Tak-v0",
    "Tak-v0-medium",
    "Tak-v0-hard",
    "TicTacToe-v0",
    "TruthAndDeception-v0",
    "TruthAndDeception-v0-long",
    "TruthAndDeception-v0-extreme",
    "TwoDollar-v0",
    "UltimateTicTacToe-v0",
    "IteratedUltimatumGame-v0",
    "IteratedUltimatumGame-v0-alternate",
    "WildTicTacToe-v0",
    "Snake-v0",
    "Snake-v0-standard",
    "Snake-v0-large",
    "Surround-v0",
    "Surround-v0-standard",
    "Surround-v0-large",
    "LiarsDice-v0-small",
    "LiarsDice-v0",
    "LiarsDice-v0-large",
    "Poker-v0-small",
    "Poker-v0",
    "Poker-v0-long",
    "Poker-v0-extreme",
    "PublicGoodsGame-v0",
    "MarketEntryGame-v0",
    "SantoriniBaseFixed-v0",
    "NewRecruit-v0",
)

#: Why the other registered games do not run here: the reason, and its games.
_UNSUPPORTED_BY_REASON: dict[str, tuple[str, ...]] = {
    (
        "RuntimeError: Countdown-v0: TextArena gave a reward that is not a number "
        "('Invalid action format. Use `[i j op]` where i,j are indices): a bug of the "
        "game"
    ): ("Countdown-v0",),
    (
        "RuntimeError: Cryptarithm-v0: TextArena gave a reward that is not a number "
        "('Bad action format. Use `[A 5]`.'): a bug of the game"
    ): ("Cryptarithm-v0",),
    ("it calls an online LLM (OpenRouter: a jury or game master), not offline"): (
        "GuessWho-v0",
        "TwentyQuestions-v0",
        "TwentyQuestions-v0-hardcore",
        "Debate-v0",
        "Debate-v0-medium",
        "Debate-v0-long",
        "ScenarioPlanning-v0",
    ),
    (
        "it needs the NLTK data 'words', which is not installed here (TextArena's "
        "download of it at import fails offline): python -m nltk.downloader words"
    ): (
        "Hangman-v0",
        "Hangman-v0-hardcore",
        "WordLadder-v0",
        "WordLadder-v0-medium",
        "WordLadder-v0-hard",
        "Wordle-v0",
        "Wordle-v0-hardcore",
        "Wordle-v0-long",
        "Wordle-v0-long-hardcore",
        "WordSearch-v0",
        "WordSearch-v0-hardcore",
        "DontSayIt-v0",
        "DontSayIt-v0-hardcore",
        "DontSayIt-v0-unlimited",
        "LetterAuction-v0",
        "LetterAuction-v0-medium",
        "LetterAuction-v0-hard",
        "SpellingBee-v0-small",
        "SpellingBee-v0",
        "SpellingBee-v0-large",
        "WordChains-v0",
        "Codenames-v0",
        "Codenames-v0-hardcore",
    ),
    ("its module does not parse on Python 3.11 (invalid syntax, Klondike/env.py line 119)"): (
        "Klondike-v0",
    ),
    (
        "RuntimeError: Slitherlink-v0: TextArena gave a reward that is not a number "
        "('Bad action format. Use [h row col] or [v row col].'): a bug of the game"
    ): ("Slitherlink-v0",),
    (
        "its module does not parse on Python 3.11 (f-string: unmatched '[', "
        "Checkers/env.py line 25: f-string syntax of Python 3.12 (PEP 701))"
    ): (
        "Checkers-v0",
        "Checkers-v0-long",
    ),
    (
        "its module does not parse on Python 3.11 (f-string: unmatched '[', "
        "Chess/env.py line 62: f-string syntax of Python 3.12 (PEP 701))"
    ): (
        "Chess-v0",
        "Chess-v0-long",
        "Chess-v0-blind",
    ),
    (
        "its module does not parse on Python 3.11 (f-string: unmatched '[', "
        "IteratedStagHunt/env.py line 114: f-string syntax of Python 3.12 (PEP 701))"
    ): (
        "IteratedStagHunt-v0",
        "IteratedStagHunt-v0-randomized",
    ),
    (
        "its module does not parse on Python 3.11 (f-string: unmatched '[', "
        "ReverseTicTacToe/env.py line 24: f-string syntax of Python 3.12 (PEP 701))"
    ): ("ReverseTicTacToe-v0",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/UsedCarNegotiation/instructions/blue_book.txt"
    ): (
        "UsedCarNegotiation-v0",
        "UsedCarNegotiation-v0-strong-buyer",
        "UsedCarNegotiation-v0-strong-seller",
    ),
    (
        "its module fails to import: Could not import "
        "textarena.envs.UsedCar.env.UsedCarEnv. Error: No module named "
        "'textarena.envs.UsedCar'"
    ): ("UsedCar-v0-balanced",),
    ("it resets with no fewer than 4 players; the adapter plays games for one or two"): (
        "Taboo-v0",
        "Taboo-v0-animals",
        "Taboo-v0-cars",
        "Taboo-v0-city/country",
        "Taboo-v0-food",
        "Taboo-v0-literature",
        "Taboo-v0-people",
        "Taboo-v0-tv",
        "Taboo-v0-long",
        "Taboo-v0-full",
        "SettlersOfCatan-v0",
    ),
    ("it resets with no fewer than 3 players; the adapter plays games for one or two"): (
        "ThreePlayerTicTacToe-v0",
        "ThreePlayerGOPS-v0",
        "ThreePlayerIPD-v0",
        "CharacterConclave-v0",
        "CharacterConclave-v0-long",
        "CharacterConclave-v0-extreme",
    ),
    ("it resets with no fewer than 6 players; the adapter plays games for one or two"): (
        "SecretMafia-v0",
    ),
    (
        "its module fails to import: Could not import "
        "textarena.envs.BabyAiText.env.BabyAiTextEnv. Error: No module named 'gym'"
    ): ("BabyAiText-v0",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/base"
    ): (
        "ScorableGames-v0",
        "ScorableGames-v0-conservative",
    ),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/game1"
    ): ("ScorableGames-v0-game1",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/game2"
    ): ("ScorableGames-v0-game2",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/game3"
    ): ("ScorableGames-v0-game3",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/base_7players"
    ): ("ScorableGames-v0-7players",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/medical_ethics"
    ): ("ScorableGames-v0-medicalethics",),
    (
        "a data file it reads is missing from the installed textarena: "
        "envs/ScorableGames/games_descriptions/vendor_retailer"
    ): ("ScorableGames-v0-vendorretailer",),
    (
        "its module does not parse on Python 3.11 (f-string: unmatched '[', "
        "UltimateTexasHoldem/env.py line 228: f-string syntax of Python 3.12 (PEP "
        "701))"
    ): ("UltimateTexasHoldem-v0",),
}

#: Registered games that do not run here, and why.
UNSUPPORTED_GAMES: dict[str, str] = {
    game: reason for reason, games in _UNSUPPORTED_BY_REASON.items() for game in games
}


class UnsupportedGameError(ValueError):
    """A TextArena game that cannot be played here; the message names the game and why.

    Attributes:
        game: the id asked for.
        reason: why it cannot run (what to do, where there is something to do).
    """

    def __init__(self, game: str, reason: str) -> None:
        super().__init__(f"TextArena game {game!r} cannot run here: {reason}")
        self.game = game
        self.reason = reason


def textarena() -> ModuleType:
    """The ``textarena`` package, or :class:`~rlhf_env.extras.MissingExtraError` naming the
    ``textarena`` extra."""
    return require("textarena", "textarena", "the TextArena adapter")


def registered_games() -> list[str]:
    """Every registered game id, its variants left out, in TextArena's registration order."""
    registry = _registry()
    return [game for game in registry if base_game(game) == game]


def base_game(game: str) -> str:
    """The id whose variant ``game`` is (``"TicTacToe-v0-train"`` -> ``"TicTacToe-v0"``), or
    ``game`` itself."""
    for suffix in VARIANT_SUFFIXES:
        if game.endswith(suffix) and game[: -len(suffix)] in _registry():
            return game[: -len(suffix)]
    return game


def players(game: str) -> int | None:
    """The number of players the tables give ``game`` (1 or 2), or ``None`` when it is in
    neither table."""
    base = base_game(game)
    if base in SINGLE_PLAYER_GAMES:
        return 1
    if base in TWO_PLAYER_GAMES:
        return 2
    return None


def check_game(game: str, opponent: object | None = None) -> int:
    """The number of players of ``game`` (1 or 2) when it can be played here with
    ``opponent``.

    Raises:
        UnsupportedGameError: the id is not registered (the message lists close ids), the
            survey found that it does not run here (the message says why), it needs two
            players and ``opponent`` is ``None``, it is a game for one and an opponent was
            given, or the survey did not reach it.
    """
    registry = _registry()
    if game not in registry:
        close = difflib.get_close_matches(game, list(registry), n=5, cutoff=0.6)
        hint = f"close ids: {', '.join(close)}" if close else "see registered_games()"
        raise UnsupportedGameError(game, f"it is not a registered TextArena id ({hint})")
    base = base_game(game)
    if base in UNSUPPORTED_GAMES:
        raise UnsupportedGameError(game, UNSUPPORTED_GAMES[base])
    count = players(game)
    if count is None:
        raise UnsupportedGameError(
            game,
            "the survey of textarena "
            f"{TEXTARENA_VERSION} did not reach it; run benchmarks/textarena_survey.py, or "
            "pass num_players=... to TextArenaEnv to try it",
        )
    check_players(game, count, opponent)
    return count


def check_players(game: str, count: int, opponent: object | None) -> None:
    """Reject a game for ``count`` players that ``opponent`` cannot fill.

    Raises:
        UnsupportedGameError: two players and no opponent, one player and an opponent, or
            more than two players.
    """
    if count == 2 and opponent is None:
        raise UnsupportedGameError(
            game,
            "it is a game for two players: pass opponent=... (a ScriptedOpponent, a "
            "LanguageModelOpponent, or any function observation -> move)",
        )
    if count == 1 and opponent is not None:
        raise UnsupportedGameError(
            game, "it is a game for one player: it has no opponent; drop opponent=..."
        )
    if count not in (1, 2):
        raise UnsupportedGameError(
            game, f"it needs {count} players; the adapter plays games for one or two"
        )


#: The resource NLTK reports missing, in its LookupError's message (colour codes removed).
_NLTK_RESOURCE = re.compile(r"Resource\s+['\"]?([\w./-]+)")
#: ANSI colour codes (NLTK colours the missing resource's name).
_ANSI = re.compile(r"\x1b\[\d+m")


def explain(game: str, error: BaseException) -> UnsupportedGameError:
    """Why ``error``, raised while making or resetting ``game``, keeps it from running here.

    Missing NLTK corpora, a game that needs an online LLM (OpenRouter), a module that fails to
    import, or else the error's type and first line.
    """
    text = _ANSI.sub("", str(error))
    if isinstance(error, LookupError) and "nltk" in text.lower():
        found = _NLTK_RESOURCE.search(text)
        resource = found.group(1) if found else "a resource"
        return UnsupportedGameError(
            game,
            f"it needs the NLTK data {resource!r}, which is not installed here (TextArena's "
            "download of it at import fails offline): python -m nltk.downloader "
            f"{resource.split('/')[-1]}",
        )
    if "openrouter" in text.lower() or "api key" in text.lower() or "api_key" in text.lower():
        return UnsupportedGameError(
            game, "it calls an online LLM (OpenRouter: a jury or game master), not offline"
        )
    if isinstance(error, SyntaxError):
        path = Path(error.filename or "?")
        newer = (
            ": f-string syntax of Python 3.12 (PEP 701)"
            if str(error.msg).startswith("f-string") and sys.version_info < (3, 12)
            else ""
        )
        return UnsupportedGameError(
            game,
            f"its module does not parse on Python {sys.version_info.major}."
            f"{sys.version_info.minor} ({error.msg}, {path.parent.name}/{path.name} line "
            f"{error.lineno}{newer})",
        )
    if isinstance(error, FileNotFoundError) and "textarena" in text:
        path = str(error.filename or text)
        inside = path.split("textarena/", 1)[-1]
        return UnsupportedGameError(
            game, f"a data file it reads is missing from the installed textarena: {inside}"
        )
    if isinstance(error, ImportError):
        return UnsupportedGameError(game, f"its module fails to import: {_first_line(text)}")
    return UnsupportedGameError(game, f"{type(error).__name__}: {_first_line(text)}")


def _first_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "(no message)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _registry() -> dict[str, Any]:
    textarena()
    from textarena.envs.registration import ENV_REGISTRY

    return ENV_REGISTRY


__all__ = [
    "SINGLE_PLAYER_GAMES",
    "TEXTARENA_VERSION",
    "TWO_PLAYER_GAMES",
    "UNSUPPORTED_GAMES",
    "UnsupportedGameError",
    "base_game",
    "check_game",
    "check_players",
    "explain",
    "players",
    "registered_games",
    "textarena",
]
