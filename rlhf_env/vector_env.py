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
from rlhf_env.dialogue.conversation import Conversation, TurnOutcome
from rlhf_env.dialogue.info import dialogue_info
from rlhf_env.env_core import GenerationEnvBase
from rlhf_env.rewards.base import score_responses

ObsType = dict[str, np.ndarray]
#: A sub-env's first observation: its token ids, its text and (dialogue mode) its conversation.
Started = tuple[list[int], str, Conversation | None]


@dataclasses.dataclass
class _StepPlan:
    """What a step will do, worked out before any state changes: episode ends, the rows whose
    response or turn is scored (with the prompts and texts the reward function gets), and
    either the single-response buffers or the dialogue outcomes and inserted ids by row."""

    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    cut: np.ndarray  # (N,) bool: responses or turns cut without EOS (missing_eos_penalty)
    scored_rows: np.ndarray  # (k,) int
    score_prompts: list[str]
    score_texts: list[str]
    responses: np.ndarray | None = None  # (N, max_new_tokens), single-response mode
    response_lengths: np.ndarray | None = None  # (N,)
    inserted: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    outcomes: dict[int, TurnOutcome] = dataclasses.field(default_factory=dict)


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
        length = self.config.context_length
        self._eos_ids = np.array(sorted(self._core.eos_token_ids), dtype=np.int64)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._input_ids = np.full((n, length), self._core.pad_token_id, dtype=np.int64)
        self._attention_mask = np.zeros((n, length), dtype=np.int64)
        self._responses = np.zeros((n, self.max_new_tokens), dtype=np.int64)
        self._response_lengths = np.zeros(n, dtype=np.int64)
        self._prompts: list[str] = [""] * n
        self._conversations: list[Conversation | None] = [None] * n  # dialogue mode
        self._ended = np.zeros(n, dtype=bool)  # episode over (awaiting reset)
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
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any() and not holding:
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(self._ended).tolist()} have ended and autoreset is "
                "disabled; call reset(options={'reset_mask': mask}) for them first"
            )
        # Rows that ended earlier: reset by this step (next-step autoreset) or held; not acting.
        waiting = self._ended.copy()
        acting = ~waiting  # (N,)

        # 1. Episode ends, and the scores of finished responses or turns (before any state
        # changes: a failing reward_fn or user_fn leaves the env as it was).
        if self._core.dialogue is None:
            plan = self._plan_responses(actions, acting)
        else:
            plan = self._plan_turns(actions, acting)
        terminations, truncations = plan.terminations, plan.truncations
        finished = terminations | truncations
        scores = self._score(plan.scored_rows, plan.score_prompts, plan.score_texts)
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

        # 2. KL and log-probs of the taken tokens under the current distributions, then one
        # forward of each model over the rows that go on (one engine step, one device sync),
        # and one over the rows whose next user turn is inserted (dialogue).
        going_on = acting & ~finished
        kl_np, logp_np, ref_logp_np = self.engine.step(np.where(acting, actions, 0), going_on)
        if plan.inserted:
            self._append_to_engine(plan.inserted)
        rewards = np.where(acting, -self.kl_coef * kl_np, 0.0)
        rewards[plan.scored_rows] += scores
        rewards[plan.cut] -= self._core.missing_eos_penalty

        # 3. Commit: responses or conversations, observations, infos.
        self._append_to_obs(acting, actions)
        infos: dict[str, Any] = {}
        _add_rows(infos, "kl", kl_np, acting)
        _add_rows(infos, "policy_logprob", logp_np, acting)
        _add_rows(infos, "ref_logprob", ref_logp_np, acting)
        if self._core.dialogue is None:
            self._responses, self._response_lengths = plan.responses, plan.response_lengths
            finished_rows = np.flatnonzero(finished)
            _add_rows(infos, "score", _scatter(scores, finished_rows, n, 0.0), finished)
            texts = _scatter(plan.score_texts, finished_rows, n, None, object)
            _add_rows(infos, "response", texts, finished)
        else:
            self._commit_turns(plan, scores, infos)
        self._ended |= finished

        # 4. Reset the rows due for it.
        if self.autoreset_mode == AutoresetMode.SAME_STEP and not holding and finished.any():
            self._add_final_infos(infos, finished)
        if reset_rows.size:
            infos.update(self._reset_rows(reset_rows, new_prompts))
        return self._get_obs(), rewards, terminations, truncations, infos

    def _plan_responses(self, actions: np.ndarray, acting: np.ndarray) -> _StepPlan:
        """Single-response episodes: which end with ``actions``, and their texts to score."""
        lengths = self._response_lengths + acting
        terminations = acting & np.isin(actions, self._eos_ids)
        truncations = acting & ~terminations & (lengths >= self._core.max_new_tokens)
        finished_rows = np.flatnonzero(terminations | truncations)
        responses = self._responses.copy()
        responses[acting, lengths[acting] - 1] = actions[acting]
        texts = [self._core.decode_response(responses[r, : lengths[r]]) for r in finished_rows]
        prompts = [self._prompts[row] for row in finished_rows]
        return _StepPlan(
            terminations, truncations, truncations, finished_rows, prompts, texts,
            responses=responses, response_lengths=lengths,
        )  # fmt: skip

    def _plan_turns(self, actions: np.ndarray, acting: np.ndarray) -> _StepPlan:
        """Dialogue episodes: what each acting row's token does to its conversation."""
        rules = self._core.dialogue
        assert rules is not None
        n = self.num_envs
        outcomes: dict[int, TurnOutcome] = {}
        for row in np.flatnonzero(acting):
            conversation = self._conversations[row]
            assert conversation is not None
            outcomes[int(row)] = rules.outcome(conversation, int(actions[row]))
        terminations = np.zeros(n, dtype=bool)
        truncations = np.zeros(n, dtype=bool)
        cut = np.zeros(n, dtype=bool)
        for row, outcome in outcomes.items():
            terminations[row], truncations[row] = outcome.terminated, outcome.truncated
            cut[row] = outcome.cut
        scored = [row for row, outcome in outcomes.items() if outcome.score_prompt is not None]
        return _StepPlan(
            terminations, truncations, cut, np.asarray(scored, dtype=np.int64),
            [outcomes[row].score_prompt or "" for row in scored],
            [outcomes[row].turn_text for row in scored],
            inserted={row: o.inserted_ids for row, o in outcomes.items() if o.inserted_ids},
            outcomes=outcomes,
        )  # fmt: skip

    def _commit_turns(self, plan: _StepPlan, scores: np.ndarray, infos: dict[str, Any]) -> None:
        """Apply a dialogue step's outcomes to the conversations and observations; add their
        infos (see :func:`rlhf_env.dialogue.info.dialogue_info`)."""
        rules = self._core.dialogue
        assert rules is not None
        score_of = dict(zip(plan.scored_rows.tolist(), scores.tolist(), strict=True))
        per_row: dict[int, dict[str, Any]] = {}
        for row, outcome in plan.outcomes.items():
            conversation = self._conversations[row]
            assert conversation is not None
            score = score_of.get(row)
            rules.commit(conversation, outcome, score)
            if outcome.inserted_ids:
                self._append_ids_to_obs(row, outcome.inserted_ids)
            per_row[row] = dialogue_info(conversation, outcome, score, rules.turn_rewards == "turn")
        _add_row_dicts(infos, per_row, self.num_envs)

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
            conversation = self._conversations[row]
            if conversation is not None:
                turns = " | ".join(f"{m['role']}: {m['content']!r}" for m in conversation.messages)
                blocks.append(f"[{row}] {turns} (turn {conversation.turn + 1})")
                continue
            length = self._response_lengths[row]
            response = self._core.decode_response(self._responses[row, :length])
            blocks.append(f"[{row}] {self._prompts[row]!r} -> {response!r} ({length} tokens)")
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
            infos["final_obs"][row] = {
                "input_ids": self._input_ids[row].copy(),
                "attention_mask": self._attention_mask[row].copy(),
            }
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

    def _reset_rows(self, rows: np.ndarray, encoded: list[Started]) -> dict[str, Any]:
        """Start ``rows`` on their encoded prompts (their caches too); returns the reset infos."""
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = np.full((rows.size, width), self._core.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((rows.size, width), dtype=np.int64)
        for i, (ids, _, _) in enumerate(encoded):
            input_ids[i, width - len(ids) :] = ids
            attention_mask[i, width - len(ids) :] = 1
        self.engine.start(rows, torch.from_numpy(input_ids), torch.from_numpy(attention_mask))

        length = self._core.context_length
        self._input_ids[rows] = self._core.pad_token_id
        self._attention_mask[rows] = 0
        self._input_ids[rows, length - width :] = input_ids
        self._attention_mask[rows, length - width :] = attention_mask
        self._response_lengths[rows] = 0
        self._ended[rows] = False
        texts = [text for _, text, _ in encoded]
        for row, (_, text, conversation) in zip(rows, encoded, strict=True):
            self._prompts[row] = text
            self._conversations[row] = conversation
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[rows] = True
        infos: dict[str, Any] = {}
        _add_rows(infos, "prompt", _scatter(texts, rows, self.num_envs, None, object), mask)
        return infos

    def _score(self, rows: np.ndarray, prompts: list[str], texts: list[str]) -> np.ndarray:
        if rows.size == 0:
            return np.zeros(0)
        labels = [f"sub-env {row}" for row in rows]
        return score_responses(self._core.reward_fn, prompts, texts, labels=labels)

    def _append_to_obs(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Shift the contexts of ``rows`` (bool mask) left by one and append their actions."""
        self._input_ids[rows, :-1] = self._input_ids[rows, 1:]
        self._input_ids[rows, -1] = actions[rows]
        self._attention_mask[rows, :-1] = self._attention_mask[rows, 1:]
        self._attention_mask[rows, -1] = 1

    def _append_ids_to_obs(self, row: int, ids: list[int]) -> None:
        """Shift the context of ``row`` left by ``len(ids)`` and append ``ids``."""
        k = len(ids)
        self._input_ids[row, :-k] = self._input_ids[row, k:]
        self._input_ids[row, -k:] = ids
        self._attention_mask[row, :-k] = self._attention_mask[row, k:]
        self._attention_mask[row, -k:] = 1

    def _append_to_engine(self, inserted: dict[int, list[int]]) -> None:
        """One batched, ragged, left-padded append of the inserted ids of their rows."""
        rows = np.asarray(sorted(inserted), dtype=np.int64)
        width = max(len(ids) for ids in inserted.values())
        input_ids = torch.full((rows.size, width), self._core.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((rows.size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = inserted[int(row)]
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
        self.engine.append(rows, input_ids, attention_mask)

    def _get_obs(self) -> ObsType:
        return {"input_ids": self._input_ids.copy(), "attention_mask": self._attention_mask.copy()}


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
