"""Adapters from the field's turn-level environment hubs to rlhf_env's turn-level protocol.

Each adapter wraps a hub's problems or games as
:class:`rlhf_env.dialogue.turn_level.TurnLevelEnv`\\ s (``reset(seed=...)`` and ``step(text)``
on strings), which dialogue mode plays token by token:

- :mod:`.reasoning_gym_env`: reasoning-gym's datasets, one question and one tagged answer;
  :mod:`.reasoning_gym_problems` says which problems it asks (mixes of kinds in fixed shares)
  and how it grades an answer;
- :mod:`.textarena_env`: TextArena's games (``pip install 'rlhf_env[textarena]'``), the agent
  as player 0 and, in two-player games, an opponent from :mod:`.opponents`;
  :mod:`.textarena_games` says which games run offline here and why the others do not.

``import rlhf_env.hubs`` imports none of them (each needs its hub's package): import the
adapter's module.
"""
