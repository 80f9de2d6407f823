"""Turn-level text environments, played at the token level: the bridge to dialogue mode.

The field's environment hubs (TextArena, reasoning-gym, verifiers, ...) are *turn-level*: the
agent hands the env a string, the env answers with the next observation's string and a reward.
Any such env plays here as a dialogue episode whose actions are tokens:

- the env's first observation is the first user turn, ``info["system_prompt"]`` of its
  reset (if any) the system message, and ``info["history"]`` (if any: chat messages, e.g.
  worked examples as earlier user and assistant turns) comes between them;
- the agent writes its turn token by token; when the turn ends (its end-of-turn or EOS token,
  or the env closing a turn cut at ``max_new_tokens`` with ``turn_cut="end_turn"``), the turn's
  text is decoded and passed to the env's :meth:`TurnLevelEnv.step`;
- the step's reward is the turn's score (paid on the turn's last token, beside ``-beta * KL``
  on every agent token); its observation is the next user turn, which the token env inserts
  (templated incrementally, so the ids stay exact); its ``terminated`` / ``truncated`` end
  the episode as they say.

A turn-level env is any object with Gymnasium's text-env methods (:class:`TurnLevelEnv`), and
optionally ``fork()``: an independent copy. The token env steps a copy and keeps it only when
the whole step succeeded, so a failing step (the env's, or another row's reward) loses nothing;
without ``fork`` the copy is :func:`copy.deepcopy`. An env that holds a model (a language-model
opponent) defines ``fork`` to share it rather than copy it.

An episode is given to the token env as a prompt: a :class:`TurnLevelEpisode` (how to make the
env, and the seed of its reset), so held-out problems are held-out seeds.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The key of a turn-level step's ``info`` whose named numbers (``{"win": 1.0}``) are the
#: episode's outcome: recorded in the token env's final ``info`` and read by gold metrics.
OUTCOME_KEY = "outcome"


@runtime_checkable
class TurnLevelEnv(Protocol):
    """A turn-level text env: string observations, string actions (Gymnasium's methods).

    ``reset(seed=...)`` returns ``(observation, info)``: the first user turn, and ``info``
    (``"system_prompt"``: the system message; ``"history"``: earlier chat messages, user and
    assistant turns alternating from a user turn, such as worked examples; both optional).
    ``step(action)`` takes the agent's turn and returns ``(observation, reward, terminated,
    truncated, info)``: the next user turn (unused once the episode is over), the turn's
    reward, the two ends, and ``info`` (:data:`OUTCOME_KEY`: the episode's named outcome
    figures, optional).
    """

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: its first observation and info."""
        ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play the agent's turn ``action``."""
        ...


@dataclass(frozen=True)
class TurnLevelEpisode:
    """One episode of a turn-level env, as a prompt of a dialogue env.

    Attributes:
        make_env: builds the env to play (called once per episode; it may return a shared,
            prebuilt env's :func:`fork`).
        seed: the seed of the env's reset: which problem or game (held-out problems are
            held-out seeds).
        name: what the episode is, for reports (``"GuessTheNumber-v0 #17"``).
    """

    make_env: Callable[[], TurnLevelEnv]
    seed: int | None = None
    name: str = ""


@dataclass
class TurnLevelStart:
    """A turn-level episode after its env's reset: the env, the system message, the earlier
    turns and the first user turn."""

    env: TurnLevelEnv
    system: str | None
    user_turn: str
    history: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        """The chat of the first observation: system message, history, first user turn."""
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, *self.history, {"role": "user", "content": self.user_turn}]


@dataclass(frozen=True)
class TurnLevelStep:
    """What the env said to one agent turn (the env that said it is a fork: see the module
    docstring)."""

    env: TurnLevelEnv
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def outcome(self) -> dict[str, float]:
        """The episode's named outcome figures the step reported (``info["outcome"]``)."""
        return dict(self.info.get(OUTCOME_KEY) or {})


def start(episode: TurnLevelEpisode) -> TurnLevelStart:
    """Make ``episode``'s env and reset it.

    Raises:
        TypeError: the env lacks ``reset``/``step``, or its reset does not return
            ``(str, dict)`` with an optional string ``"system_prompt"``.
        ValueError: the first observation is empty.
    """
    env = episode.make_env()
    if not isinstance(env, TurnLevelEnv):
        raise TypeError(
            f"make_env() returned {type(env).__name__}, which has no reset(seed=...) and "
            "step(text) methods of a turn-level env (rlhf_env.dialogue.turn_level.TurnLevelEnv)"
        )
    returned = env.reset(seed=episode.seed)
    if not (isinstance(returned, tuple) and len(returned) == 2):
        raise TypeError(
            f"{type(env).__name__}.reset must return (observation, info), got {returned!r:.120}"
        )
    observation, info = returned
    system = (info or {}).get("system_prompt")
    if not isinstance(observation, str) or not observation.strip():
        raise ValueError(
            f"{type(env).__name__}.reset returned no first user turn ({observation!r:.80}); a "
            "turn-level env's first observation is the conversation's opening user message"
        )
    if system is not None and not isinstance(system, str):
        raise TypeError(f"info['system_prompt'] must be a str, got {type(system).__name__}")
    history = _history((info or {}).get("history") or [], type(env).__name__)
    return TurnLevelStart(env, system or None, observation, history)


def _history(messages: Any, name: str) -> list[dict[str, str]]:
    """``info["history"]`` checked: user and assistant messages alternating from a user one."""
    checked = []
    for index, message in enumerate(messages):
        role = "user" if index % 2 == 0 else "assistant"
        if not (
            isinstance(message, Mapping)
            and message.get("role") == role
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(
                f"{name}.reset's info['history'][{index}] must be a {role!r} message "
                f"({{'role': {role!r}, 'content': str}}; user and assistant turns alternate, "
                f"from a user turn), got {message!r:.80}"
            )
        checked.append({"role": role, "content": message["content"]})
    if len(checked) % 2:
        raise ValueError(
            f"{name}.reset's info['history'] ends with a user turn; it must end with the "
            "assistant's answer (the first observation is the next user turn)"
        )
    return checked


def play_turn(env: TurnLevelEnv, text: str) -> TurnLevelStep:
    """Step a fork of ``env`` with the agent's turn ``text`` (``env`` itself is unchanged).

    Raises:
        TypeError: the step does not return ``(str, float, bool, bool, dict)``.
        ValueError: its reward is not a finite number.
    """
    forked = fork(env)
    returned = forked.step(text)
    if not (isinstance(returned, tuple) and len(returned) == 5):
        raise TypeError(
            f"{type(env).__name__}.step must return (observation, reward, terminated, "
            f"truncated, info), got {returned!r:.120}"
        )
    observation, reward, terminated, truncated, info = returned
    try:
        reward = float(reward)
    except (TypeError, ValueError):
        raise TypeError(
            f"{type(env).__name__}.step returned a reward of type {type(reward).__name__}"
        ) from None
    if not math.isfinite(reward):
        raise ValueError(
            f"{type(env).__name__}.step returned reward {reward} for the turn {text!r:.80}; a "
            "turn's reward must be finite (fix the env, or map its failures to a number)"
        )
    if not isinstance(observation, str):
        observation = "" if observation is None else str(observation)
    info = dict(info) if isinstance(info, Mapping) else {}
    return TurnLevelStep(forked, observation, reward, bool(terminated), bool(truncated), info)


def fork(env: TurnLevelEnv) -> TurnLevelEnv:
    """An independent copy of ``env``: its ``fork()`` where it has one, else a deep copy."""
    method = getattr(env, "fork", None)
    return method() if callable(method) else copy.deepcopy(env)


__all__ = [
    "OUTCOME_KEY",
    "TurnLevelEnv",
    "TurnLevelEpisode",
    "TurnLevelStart",
    "TurnLevelStep",
    "fork",
    "play_turn",
    "start",
]
