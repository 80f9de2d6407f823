"""Multi-turn dialogue episodes: the assistant's tokens are the actions, the user's turns come
from the env, inserted as observation tokens with the chat template applied incrementally.

- :mod:`.script`: what an episode starts from (:class:`DialogueScript`, :func:`as_script`) and
  the transcript reward functions read (:func:`transcript`);
- :mod:`.template`: the chat template applied turn by turn (:class:`IncrementalChatTemplate`);
- :mod:`.conversation`: the rules of an episode, shared by both envs (:class:`DialogueRules`);
- :mod:`.info`: the ``info`` entries of a dialogue step;
- :mod:`.turn_level`: the bridge from turn-level text envs (TextArena, reasoning-gym): their
  observations as user turns, the agent's turns as their actions, their rewards as the turns'
  scores.
"""

from rlhf_env.dialogue.conversation import (
    TURN_REWARDS,
    Conversation,
    DialogueRules,
    TurnOutcome,
    UserFn,
)
from rlhf_env.dialogue.script import DialogueScript, as_script, transcript
from rlhf_env.dialogue.template import IncrementalChatTemplate, TemplateError

__all__ = [
    "TURN_REWARDS",
    "Conversation",
    "DialogueRules",
    "DialogueScript",
    "IncrementalChatTemplate",
    "TemplateError",
    "TurnOutcome",
    "UserFn",
    "as_script",
    "transcript",
]
