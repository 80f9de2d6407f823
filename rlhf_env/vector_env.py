"""The batched text-generation environment: ``num_envs`` episodes stepped as one batch."""

from __future__ import annotations

import contextlib
import dataclasses
import textwrap
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_env.config import EnvConfig, VectorEnvConfig, options_table
from rlhf_env.env_core import GenerationEnvBase
from rlhf_env.episodes import EpisodeBatch, Started

ObsType = dict[str, np.ndarray]


class TextGenerationVectorEnv(GenerationEnvBase, VectorEnv):
    """``num_envs`` copies of :class:`rlhf_env.TextGenerationEnv` stepped as one batch.

    Same spec as the single env (spaces, reward formula, episode end), batched: observations are
    ``(num_envs, L)`` arrays, actions a ``(num_envs,)`` array of token ids, and each step runs
    one single-token forward of the policy and one of the reference for the whole batch, with
    KV caches. Prompts of different lengths are left-padded, with position ids from the mask.
    Responses that finish in the same step are scored by one ``reward_fn`` call.

    ## Autoreset

    ``autoreset_mode`` (also in ``metadata["autoreset_mode"]``), per Gymnasium 1.x:

    - ``AutoresetMode.NEXT_STEP`` (default): a sub-env that ended is reset by the next
      ``step``, which ignores its action and returns its first observation, reward 0 and
      ``info["prompt"]``.
    - ``AutoresetMode.SAME_STEP``: it is reset in the step where it ended; the returned
      observation is the new episode's, and ``info["final_obs"]`` / ``info["final_info"]``
      hold the last observation and info of the episode that ended.
    - ``AutoresetMode.DISABLED``: reset ended sub-envs with
      ``reset(options={"reset_mask": mask})``.

    Resetting some sub-envs encodes only their new prompts; the others' caches are kept.

    Inside ``with env.holding_ended():`` no sub-env is autoreset: one whose episode ended
    waits (action ignored, reward 0, no termination, no infos) until the next ``reset()``.
    Collecting one episode per sub-env this way costs no prefill of prompts that would never be
    used (see :meth:`holding_ended`).

    ## Dialogue

    With ``max_turns`` set, every sub-env plays a conversation as the single env's Dialogue
    section describes. In a step where some sub-envs end a turn, the user turns of all of them
    are appended to the KV caches in one batched, ragged forward per model (``engine.append``)
    while the others advance by their one token; nothing is re-encoded. Their infos
    (``inserted_ids``, ``user_turn``, ``turn``, ``turn_score``, ``turn_scores``,
    ``conversation``) come in the vector format below.

    ## Infos

    Gymnasium's vector format: ``info[key]`` is an array over sub-envs and ``info["_" + key]``
    a boolean mask of the sub-envs that have it. Keys as in the single env: ``kl``,
    ``policy_logprob``, ``ref_logprob`` (sub-envs that took an action), ``score`` and
    ``response`` (sub-envs whose episode ended), ``prompt`` (sub-envs that were reset).

    ## Fast Path

    ``policy_logits``: a float32 tensor ``(num_envs, V)`` on the policy's device with the
    policy's next-token logits for the current observations, valid after ``reset`` and after
    every ``step`` (rows awaiting a next-step autoreset hold stale values; their action is
    ignored). An agent that samples from it needs no policy forward of its own.
    ``reference_logits`` holds the reference's next-token logits the same way (the same tensor
    when the reference is the policy), for agents that sample from the reference. Both are
    updated in place by the next step (clone them to keep them). ``engine`` is the engine that
    steps the models (see :mod:`rlhf_env.engine`).
    ``sample_prompts(count, rng)`` draws prompts from the env's prompt source with the caller's
    generator, to pass back as ``reset(options={"prompts": ...})`` (grouped sampling).

    ## Arguments

    The single env's positional arguments, and by keyword the fields of
    :class:`rlhf_env.config.VectorEnvConfig` (or a whole one as ``config=``): the single env's
    and

    {options}

    Sub-env ``i`` is seeded with ``seed + i`` by ``reset(seed=seed)``. The static engine steps
    all sub-envs as one batch of fixed shape (``num_envs`` rounded up to a batch bucket).
    ``env.config`` holds the validated settings; ``env.device`` is where the env computes.
    """

    metadata = {
        "render_modes": list(VectorEnvConfig.render_modes()),
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    config_class = VectorEnvConfig
    config: VectorEnvConfig

    def _engine_rows(self) -> int:
        return self.config.num_envs

    def _setup(self) -> None:
        self.autoreset_mode = AutoresetMode(self.config.autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = n = self.config.num_envs
        self.single_observation_space = self._core.observation_space()
        self.single_action_space = self._core.action_space()
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._episodes = EpisodeBatch(self._core, self.engine, num_rows=n)
        self._labels = [f"sub-env {row}" for row in range(n)]  # rows in a failing reward's error
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._holding_ended = False  # ended sub-envs wait for reset() (see holding_ended)
        self._started = False

    @property
    def policy_logits(self) -> torch.Tensor | None:
        """The policy's next-token logits ``(num_envs, V)`` float32 (see Fast Path), ``None``
        before ``reset``."""
        return self.engine.policy_logits if self._started else None

    @property
    def reference_logits(self) -> torch.Tensor | None:
        """The reference's next-token logits ``(num_envs, V)`` (see Fast Path)."""
        return self.engine.reference_logits if self._started else None

    def keep_trunk_states(self, depth: int) -> bool:
        """Ask the engine to keep the output of the trunk that policy and reference share
        (``frozen:depth``) for every token, for :meth:`trunk_states`: an agent's update then
        starts from it instead of running the frozen blocks again. ``False`` when the engine
        cannot (no shared trunk of that depth, or the dynamic engine)."""
        return self.engine.keep_trunk_states(depth)

    def trunk_states(self) -> list[torch.Tensor] | None:
        """Per sub-env, the shared trunk's output ``(n, H)`` for the ``n`` tokens the models
        have read of its episode (the prompt's, then each token that was stepped or inserted:
        not an episode's last token, which nothing reads), or ``None`` (nothing kept, or some
        sub-env's lacking). Read it before the next ``step`` or ``reset``."""
        return self.engine.trunk_states() if self._started else None

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset all sub-envs, or those in ``options["reset_mask"]``.

        ``seed``: an int (sub-env ``i`` gets ``seed + i``) or a list of per-sub-env seeds.
        ``options["prompts"]``: one prompt per reset sub-env instead of drawing them.
        """
        options = options or {}
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), bool)
        if mask.shape != (self.num_envs,) or not mask.any():
            raise ValueError(
                f"reset_mask must be a bool array of shape ({self.num_envs},) with at least one "
                f"True, got {mask!r}"
            )
        if not self._started and not mask.all():
            raise RuntimeError("the first reset() must reset every sub-env; drop reset_mask")
        rows = np.flatnonzero(mask)
        seeds = self._seeds_for(seed, rows)
        for row, row_seed in zip(rows, seeds, strict=True):
            if row_seed is not None or not self._started:
                self._rngs[row] = seeding.np_random(row_seed)[0]
        prompts = options.get("prompts")
        if prompts is not None and len(prompts) != rows.size:
            raise ValueError(
                f"options['prompts'] has {len(prompts)} prompts for {rows.size} resets"
            )
        infos = self._reset_rows(rows, self._encode_prompts(rows, prompts))
        self._started = True
        return self._get_obs(), infos

    def step(
        self, actions: Any
    ) -> tuple[ObsType, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Append one token per sub-env; returns batched ``(obs, rewards, terminations,
        truncations, infos)``."""
        actions = self._core.check_actions(actions, count=self.num_envs)  # (N,)
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        n = self.num_envs
        holding = self._holding_ended
        episodes = self._episodes
        if self.autoreset_mode == AutoresetMode.DISABLED and episodes.ended.any() and not holding:
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(episodes.ended).tolist()} have ended and autoreset is "
                "disabled; call reset(options={'reset_mask': mask}) for them first"
            )
        # Rows that ended earlier: reset by this step (next-step autoreset) or held; not acting.
        waiting = episodes.ended.copy()
        acting = ~waiting  # (N,)

        # 1. Episode ends, and the scores of finished responses or turns (before any state
        # changes: a failing reward_fn or user_fn leaves the env as it was).
        plan = episodes.plan(actions, acting, labels=self._labels)
        finished = plan.finished
        # The rows to reset, and their new prompts (drawing or encoding may fail: still before
        # any state changes).
        if holding or self.autoreset_mode == AutoresetMode.DISABLED:
            to_reset = np.zeros(n, dtype=bool)
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            to_reset = finished | waiting  # waiting: rows a holding_ended() block left ended
        else:
            to_reset = waiting
        reset_rows = np.flatnonzero(to_reset)
        new_prompts = self._encode_prompts(reset_rows, None) if reset_rows.size else []

        # 2. One engine step over the rows that act, the rewards, the new observations.
        result = episodes.advance(plan)
        infos: dict[str, Any] = {}
        _add_rows(infos, "kl", result.kl, acting)
        _add_rows(infos, "policy_logprob", result.policy_logprob, acting)
        _add_rows(infos, "ref_logprob", result.ref_logprob, acting)
        if self._core.dialogue is None:
            _add_rows(infos, "score", result.scores, finished)
            _add_rows(infos, "response", result.responses, finished)
        else:
            _add_row_dicts(infos, result.dialogue_infos, n)

        # 3. Reset the rows due for it.
        if self.autoreset_mode == AutoresetMode.SAME_STEP and not holding and finished.any():
            self._add_final_infos(infos, finished)
        if reset_rows.size:
            infos.update(self._reset_rows(reset_rows, new_prompts))
        return self._get_obs(), result.rewards, plan.terminations, plan.truncations, infos

    @contextlib.contextmanager
    def holding_ended(self) -> Iterator[None]:
        """Within the block, sub-envs whose episode ended are not autoreset (in every
        ``autoreset_mode``): each waits, its action ignored, with reward 0, no termination and
        no infos, until the next ``reset()``. For collecting one episode per sub-env, as
        batched generation does: an autoreset would encode and prefill a new prompt (the
        costliest part of a step when prompts are long) for an episode nobody records.

        Example:
            >>> with env.holding_ended():  # doctest: +SKIP
            ...     obs, info = env.reset(seed=0)
            ...     while not done.all():
            ...         obs, rewards, terms, truncs, info = env.step(actions)
            ...         done |= terms | truncs
        """
        previous = self._holding_ended
        self._holding_ended = True
        try:
            yield
        finally:
            self._holding_ended = previous

    def sample_prompts(self, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` prompts drawn from the env's prompt source with ``rng`` (the env's own
        generators are left untouched)."""
        return [self._core.prompt_source.sample(rng) for _ in range(count)]

    def render(self) -> str | None:
        """``"ansi"``: the prompt and response (a dialogue: the conversation) so far of every
        sub-env, one block each."""
        if self.render_mode != "ansi":
            return None
        blocks = []
        for row in range(self.num_envs):
            conversation = self._episodes.conversations[row]
            if conversation is not None:
                turns = " | ".join(f"{m['role']}: {m['content']!r}" for m in conversation.messages)
                blocks.append(f"[{row}] {turns} (turn {conversation.turn + 1})")
                continue
            length = self._episodes.response_lengths[row]
            response = self._episodes.response_text(row)
            prompt = self._episodes.prompts[row]
            blocks.append(f"[{row}] {prompt!r} -> {response!r} ({length} tokens)")
        return "\n".join(blocks)

    def close_extras(self, **kwargs: Any) -> None:
        """Release the KV caches."""
        self.engine.release()
        self._started = False

    # -- helpers -------------------------------------------------------------------------------

    def _add_final_infos(self, infos: dict[str, Any], finished: np.ndarray) -> None:
        """Same-step autoreset: the ended episodes' last observations and infos."""
        infos["final_obs"] = np.full(self.num_envs, None, dtype=object)
        for row in np.flatnonzero(finished):
            infos["final_obs"][row] = self._episodes.observation(int(row))
        infos["_final_obs"] = finished.copy()
        infos["final_info"] = {
            key: (value & finished if key.startswith("_") else value)
            for key, value in infos.items()
            if not key.endswith("final_obs")
        }
        infos["_final_info"] = finished.copy()

    def _seeds_for(self, seed: int | list[int | None] | None, rows: np.ndarray) -> list:
        if seed is None:
            return [None] * rows.size
        if isinstance(seed, int):
            return [seed + int(row) for row in rows]
        if len(seed) != rows.size:
            raise ValueError(f"got {len(seed)} seeds for {rows.size} sub-envs being reset")
        return list(seed)

    def _encode_prompts(self, rows: np.ndarray, prompts: list[str] | None) -> list[Started]:
        """``(token ids, text, conversation)`` of the first observations of ``rows``: of
        ``prompts``, or of prompts drawn with each row's generator. Changes no state but the
        generators."""
        if prompts is None:
            prompts = [self._core.prompt_source.sample(self._rngs[row]) for row in rows]
        return [self._core.start_episode(prompt) for prompt in prompts]

    def _reset_rows(self, rows: np.ndarray, started: list[Started]) -> dict[str, Any]:
        """Start ``rows`` on their first observations; returns the reset infos."""
        self._episodes.start(rows, started)
        texts = [text for _, text, _ in started]
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[rows] = True
        infos: dict[str, Any] = {}
        _add_rows(infos, "prompt", _scatter(texts, rows, self.num_envs, None, object), mask)
        return infos

    def _get_obs(self) -> ObsType:
        return self._episodes.observation()


def _scatter(
    values: Iterable[Any], rows: np.ndarray, size: int, fill: Any, dtype: Any = np.float64
) -> np.ndarray:
    """An array of ``size`` filled with ``fill``, with ``values`` placed at ``rows``."""
    array = np.full(size, fill, dtype=dtype)
    for row, value in zip(rows, values, strict=True):
        array[row] = value
    return array


def _add_row_dicts(infos: dict[str, Any], per_row: dict[int, dict[str, Any]], size: int) -> None:
    """Add per-row info dicts in Gymnasium's vector-info format: numbers as float or int
    arrays, anything else as object arrays."""
    keys = dict.fromkeys(key for info in per_row.values() for key in info)
    for key in keys:
        rows = [row for row, info in per_row.items() if key in info]
        values = [per_row[row][key] for row in rows]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            dtype: Any = np.int64
        elif all(isinstance(v, (float, int, np.floating, np.integer)) for v in values):
            dtype = np.float64
        else:
            dtype = object
        mask = np.zeros(size, dtype=bool)
        mask[rows] = True
        _add_rows(
            infos,
            key,
            _scatter(values, np.asarray(rows), size, None if dtype is object else 0, dtype),
            mask,
        )


def _add_rows(infos: dict[str, Any], key: str, values: np.ndarray, mask: np.ndarray) -> None:
    """Add ``key`` in Gymnasium's vector-info format, if any sub-env has it."""
    if not mask.any():
        return
    if values.dtype != object:
        values = np.where(mask, values, 0).astype(values.dtype)
    infos[key] = values
    infos[f"_{key}"] = mask.copy()


def _vector_options_table() -> str:
    """The rows of the fields the vector env adds to the single env's."""
    table = options_table(VectorEnvConfig).splitlines()
    added = {item.name for item in dataclasses.fields(VectorEnvConfig)} - {
        item.name for item in dataclasses.fields(EnvConfig)
    }
    return "\n".join(table[:2] + [row for row in table[2:] if row.split("`")[1] in added])


TextGenerationVectorEnv.__doc__ = (TextGenerationVectorEnv.__doc__ or "").replace(
    "    {options}", textwrap.indent(_vector_options_table(), "    ")
)
