"""rlhf_env: RLHF on language models as a Gymnasium environment.

Importing the package registers ``rlhf_env/TextGeneration-v0`` and the ready-made tasks
(``rlhf_env/PositiveReview-v0``, ``rlhf_env/Arithmetic-v0``, ``rlhf_env/Harmless-v0``: see
:mod:`rlhf_env.tasks`) with Gymnasium::

    import gymnasium
    import rlhf_env

    env = gymnasium.make("rlhf_env/TextGeneration-v0", policy=model, tokenizer=tokenizer,
                         reward_fn=reward_fn, prompts=prompts)
"""

from gymnasium.envs.registration import register, registry

from rlhf_env.config import EnvConfig, VectorEnvConfig
from rlhf_env.env import TextGenerationEnv
from rlhf_env.vector_env import TextGenerationVectorEnv

__version__ = "0.1.0"
__all__ = [
    "ENV_ID",
    "EnvConfig",
    "TextGenerationEnv",
    "TextGenerationVectorEnv",
    "VectorEnvConfig",
    "__version__",
]

ENV_ID = "rlhf_env/TextGeneration-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="rlhf_env.env:TextGenerationEnv",
        vector_entry_point="rlhf_env.vector_env:TextGenerationVectorEnv",
    )

# The ready-made tasks register their ids (rlhf_env/<Task>-v0) when imported.
import rlhf_env.tasks  # noqa: E402, F401
