"""Adapt :class:`rlhf_env.TextGenerationVectorEnv` to stable-baselines3's ``VecEnv``.

SB3 algorithms then step the batched, KV-cached environment directly::

    from stable_baselines3 import PPO
    from rlhf_env.sb3_vec_env import SB3VecEnv

    venv = SB3VecEnv(TextGenerationVectorEnv(..., num_envs=8, autoreset_mode="SameStep"))
    PPO("MultiInputPolicy", venv).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from rlhf_env.extras import missing_extra
from rlhf_env.vector_env import TextGenerationVectorEnv

try:
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnv,
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as error:
    raise missing_extra("stable_baselines3", "sb3", "rlhf_env.sb3_vec_env (SB3VecEnv)") from error

# Per-step info keys copied from the vector env's batched infos into SB3's per-env dicts (the
# single-response keys, then dialogue mode's).
_INFO_KEYS = (
    "kl", "policy_logprob", "ref_logprob", "score", "response", "prompt",
    "inserted_ids", "user_turn", "turn", "turn_score", "turn_scores", "conversation",
)  # fmt: skip


class SB3VecEnv(VecEnv):
    """stable-baselines3 ``VecEnv`` view of a :class:`TextGenerationVectorEnv`.

    SB3's conventions: ``step`` returns ``(obs, rewards, dones, infos)`` with ``dones =
    terminated | truncated``, ``infos`` a list of dicts; a sub-env that ended is reset in the
    same step, its last observation in ``infos[i]["terminal_observation"]``. The vector env
    must therefore use ``AutoresetMode.SAME_STEP``.

    ``infos[i]["TimeLimit.truncated"]`` tells SB3 to bootstrap the return with the value of the
    last observation. A response cut at ``max_new_tokens`` has had its score paid in full, and
    no reward follows, so by default it is reported as ``False`` (no bootstrap; bootstrapping
    would count the score twice). ``bootstrap_truncated=True`` reports Gymnasium's truncation
    flag instead.

    Args:
        vector_env: the batched environment, built with ``autoreset_mode="SameStep"``.
        bootstrap_truncated: let SB3 bootstrap responses cut at ``max_new_tokens``.
    """

    def __init__(
        self, vector_env: TextGenerationVectorEnv, bootstrap_truncated: bool = False
    ) -> None:
        if vector_env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "SB3VecEnv needs a vector env that resets in the same step, as SB3 does; build "
                "it with TextGenerationVectorEnv(..., autoreset_mode='SameStep')"
            )
        self.vector_env = vector_env
        self.bootstrap_truncated = bootstrap_truncated
        self._actions: np.ndarray | None = None
        super().__init__(
            vector_env.num_envs,
            vector_env.single_observation_space,
            vector_env.single_action_space,
        )
        self.render_mode = vector_env.render_mode

    def reset(self) -> VecEnvObs:
        """Reset every sub-env (seeds from ``seed()``, if set, apply once)."""
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        obs, _ = self.vector_env.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the vector env with the stored actions, in SB3's format."""
        obs, rewards, terminations, truncations, infos = self.vector_env.step(self._actions)
        dones = terminations | truncations
        sb3_infos = self._split_infos(infos, terminations, truncations)
        return obs, rewards.astype(np.float32), dones, sb3_infos

    def _split_infos(
        self, infos: dict[str, Any], terminations: np.ndarray, truncations: np.ndarray
    ) -> list[dict[str, Any]]:
        split: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key in _INFO_KEYS:
            if key in infos:
                for row in np.flatnonzero(infos[f"_{key}"]):
                    split[row][key] = infos[key][row]
        for row in np.flatnonzero(terminations | truncations):
            # The reset info ("prompt") belongs to the new episode; the rest to the one that ended.
            split[row]["terminal_observation"] = infos["final_obs"][row]
            cut = bool(truncations[row] and not terminations[row])
            split[row]["TimeLimit.truncated"] = cut and self.bootstrap_truncated
        return split

    def close(self) -> None:
        """Close the vector env (releases its caches)."""
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per selected sub-env (they share one object)."""
        value = getattr(self.vector_env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env, e.g. ``kl_coef`` (shared by all sub-envs)."""
        setattr(self.vector_env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of the vector env once; its result is repeated per selected index."""
        result = getattr(self.vector_env, method_name)(*method_args, **kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Sub-envs are not Gymnasium-wrapped; always ``False``."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No image rendering for text."""
        return [None for _ in range(self.num_envs)]

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
