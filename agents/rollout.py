"""Rollout collection: complete episodes from a vector env, stored as padded token tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlhf_env.vector_env import TextGenerationVectorEnv

#: Chooses one action per sub-env from the env (its fast-path logits) and the observation.
ActionChooser = Callable[[TextGenerationVectorEnv, dict[str, np.ndarray]], np.ndarray]


@dataclass
class Rollout:
    """Complete episodes: ``E`` continuations of at most ``R`` tokens to prompts of at most ``P``.

    The continuation of an episode is every token after its first prompt, in order: the
    actions (generated tokens) and, in a dialogue, the tokens the env inserted between them
    (the next user turn and the assistant header; observations, not actions). A single-turn
    episode's continuation is its response, with ``inserted_mask`` all zeros.

    Token tensors are ``(E, R)``, aligned with the continuation: position ``t`` holds its
    ``t``-th token, and for an action what the env reported for it; inserted tokens have no
    reward, log-prob or KL (0 there). ``action_mask`` marks the actions, so every count and
    masked mean over it (losses, timesteps, minibatch weights) counts actions only;
    ``context_mask`` marks what the model sees. ``logprobs`` are the behaviour policy's, as
    the env computed them while sampling, so importance ratios are exact.

    ``trunk_states``, when the env kept them (:meth:`TextGenerationVectorEnv.keep_trunk_states`,
    ``frozen:N`` with a shared trunk), are the policy's hidden states after its frozen block
    ``N - 1`` for every ``[prompt | continuation]`` column, in this layout (zeros at padding
    and at each episode's last token, which the env never reads and no loss uses): the update
    starts from them instead of running the frozen blocks again.
    """

    prompt_ids: torch.Tensor  # (E, P) left-padded
    prompt_mask: torch.Tensor  # (E, P) 1 on prompt tokens
    continuation_ids: torch.Tensor  # (E, R) right-padded continuation: actions and inserted tokens
    action_mask: torch.Tensor  # (E, R) float, 1 on generated tokens (actions)
    inserted_mask: torch.Tensor  # (E, R) float, 1 on tokens the env inserted (not actions)
    rewards: torch.Tensor  # (E, R) the env's per-token rewards
    logprobs: torch.Tensor  # (E, R) log pi_behaviour(a_t)
    kl: torch.Tensor  # (E, R) the env's per-token KL estimates
    scores: torch.Tensor  # (E,) reward_fn scores of the finished responses (sum over turns)
    prompts: list[str]  # the first prompt's text
    responses: list[str]  # the response (dialogue: the last assistant turn)
    turn_scores: list[list[float]]  # dialogue scoring every turn: each turn's score, else []
    conversations: list[list[dict[str, str]]]  # dialogue: the messages, else []
    # Turn-level episodes: each one's outcome figures (info["outcome"]: {"win": 1.0}), else {}.
    outcomes: list[dict[str, float]] = dataclass_field(default_factory=list)
    trunk_states: torch.Tensor | None = None  # (E, P + R, H) the frozen trunk's output, if kept

    def __post_init__(self) -> None:
        if not self.outcomes:  # built without them: no episode reported one
            self.outcomes = [{} for _ in range(self.num_episodes)]

    @property
    def num_episodes(self) -> int:
        """Number of responses ``E``."""
        return int(self.continuation_ids.shape[0])

    @property
    def context_mask(self) -> torch.Tensor:
        """``(E, R)`` float, 1 on every continuation token (actions and inserted tokens): the
        attention mask of the continuation."""
        return self.action_mask + self.inserted_mask

    @property
    def lengths(self) -> torch.Tensor:
        """Generated tokens (actions) per episode ``(E,)``, inserted tokens not counted; the
        response length of a single-turn episode."""
        return self.action_mask.sum(dim=1).long()

    @property
    def context_lengths(self) -> torch.Tensor:
        """Continuation tokens per episode ``(E,)``, actions and inserted tokens: the extent of
        its continuation (it fills positions ``0 ... context_lengths - 1``)."""
        return self.context_mask.sum(dim=1).long()

    @property
    def num_tokens(self) -> int:
        """Generated tokens (actions) in all episodes, inserted tokens not counted."""
        return int(self.action_mask.sum())

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted episode returns ``(E,)``: ``score - beta * sum_t KL_t`` (+ penalties)."""
        return (self.rewards * self.action_mask).sum(dim=1)

    @property
    def sequence_kl(self) -> torch.Tensor:
        """Per-response KL ``(E,)``: the sum of the per-token estimates, in nats."""
        return (self.kl * self.action_mask).sum(dim=1)

    def select(self, index: torch.Tensor | np.ndarray) -> Rollout:
        """The episodes at ``index``, trimmed to their own padding widths (the extent of their
        continuations, inserted tokens included)."""
        index_list = [int(i) for i in index]
        index_tensor = torch.as_tensor(index_list, dtype=torch.long)
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                values[field.name] = [value[i] for i in index_list]
            elif value is not None:
                values[field.name] = value[index_tensor.to(value.device)]
        subset = Rollout(**values)
        return subset._trimmed()

    @staticmethod
    def concatenate(rollouts: list[Rollout]) -> Rollout:
        """One rollout holding the episodes of all ``rollouts`` (re-padded to common widths)."""
        prompt_width = max(r.prompt_ids.shape[1] for r in rollouts)
        response_width = max(r.continuation_ids.shape[1] for r in rollouts)
        values = {}
        for field in fields(Rollout):
            parts = [getattr(r, field.name) for r in rollouts]
            if field.name == "trunk_states":
                values[field.name] = _concatenate_trunk_states(rollouts, prompt_width)
            elif isinstance(parts[0], list):
                values[field.name] = [item for part in parts for item in part]
            elif field.name.startswith("prompt"):
                values[field.name] = torch.cat([_pad_left(p, prompt_width) for p in parts])
            elif parts[0].dim() == 2:
                values[field.name] = torch.cat([_pad_right(p, response_width) for p in parts])
            else:
                values[field.name] = torch.cat(parts)
        # Padding of prompt_ids / continuation_ids is 0 here (and of every mask: not a token).
        return Rollout(**values)

    def _trimmed(self) -> Rollout:
        prompt_start = int(self.prompt_mask.any(dim=0).int().argmax())
        # The end of the longest continuation, inserted tokens included (not the action count).
        response_end = max(int(self.context_lengths.max()), 1) if self.num_episodes else 0
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "trunk_states" and value is not None:
                value = value[:, prompt_start : self.prompt_ids.shape[1] + response_end]
            elif field.name.startswith("prompt") and isinstance(value, torch.Tensor):
                value = value[:, prompt_start:]
            elif isinstance(value, torch.Tensor) and value.dim() == 2:
                value = value[:, :response_end]
            values[field.name] = value
        return Rollout(**values)


def _concatenate_trunk_states(rollouts: list[Rollout], prompt_width: int) -> torch.Tensor | None:
    """The rollouts' ``trunk_states`` in the layout of their concatenation (prompt columns
    padded on the left, continuation columns on the right), or ``None`` if one lacks them."""
    if any(r.trunk_states is None for r in rollouts):
        return None
    response_width = max(r.continuation_ids.shape[1] for r in rollouts)
    parts = []
    for r in rollouts:
        states, width = r.trunk_states, r.prompt_ids.shape[1]
        assert states is not None
        parts.append(torch.nn.functional.pad(
            states, (0, 0, prompt_width - width, response_width - r.continuation_ids.shape[1])
        ))  # fmt: skip
    return torch.cat(parts)


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (width - tensor.shape[1], 0))


def _pad_right(tensor: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))


def check_rollout_env(env: object) -> TextGenerationVectorEnv:
    """``env`` if the agents can collect episodes from it, else a ``TypeError``/``ValueError``
    that says what to pass instead."""
    if not isinstance(env, TextGenerationVectorEnv):
        raise TypeError(
            f"agents train on a rlhf_env.TextGenerationVectorEnv, got {type(env).__name__}; "
            "build one with TextGenerationVectorEnv(...) or gymnasium.make_vec("
            "'rlhf_env/TextGeneration-v0', num_envs=..., ...)"
        )
    if env.autoreset_mode == AutoresetMode.DISABLED:
        raise ValueError(
            "the agents need autoreset: build the env with autoreset_mode='NextStep' (default) "
            "or 'SameStep'"
        )
    return env


def collect_episodes(
    env: TextGenerationVectorEnv,
    choose_actions: ActionChooser,
    prompts: list[Any] | None = None,
    seed: int | None = None,
) -> Rollout:
    """Reset every sub-env and step until each has finished one episode.

    All sub-envs start together, so the ``t``-th step generates token ``t`` of every response
    still going; a sub-env that finished early waits without an autoreset
    (:meth:`~rlhf_env.TextGenerationVectorEnv.holding_ended`: no prompt is prefilled for an
    episode nobody records) until the longest response ends, as in batched generation.

    Args:
        env: the vector env (autoreset NEXT_STEP or SAME_STEP).
        choose_actions: ``(env, observation) -> (num_envs,)`` token ids.
        prompts: one prompt per sub-env, or ``None`` to draw them.
        seed: passed to ``env.reset`` (draws reproducible prompts when ``prompts`` is None).
    """
    options = {"prompts": prompts} if prompts is not None else None
    with env.holding_ended():
        return _collect(env, choose_actions, options, seed)


def _collect(
    env: TextGenerationVectorEnv,
    choose_actions: ActionChooser,
    options: dict[str, list[Any]] | None,
    seed: int | None,
) -> Rollout:
    n, width = env.num_envs, env.config.continuation_tokens
    obs, info = env.reset(seed=seed, options=options)
    prompt_texts = list(info["prompt"])
    prompt_rows = [obs["input_ids"][i][obs["attention_mask"][i] == 1] for i in range(n)]

    # The continuation of every row, filled at its own cursor: the action, then (dialogue)
    # the ids the env inserted after it in the same step.
    tokens = np.zeros((n, width), dtype=np.int64)
    actions_mask = np.zeros((n, width), dtype=bool)
    inserted_mask = np.zeros((n, width), dtype=bool)
    per_token = {key: np.zeros((n, width)) for key in ("rewards", "logprobs", "kl")}
    info_keys = {"logprobs": "policy_logprob", "kl": "kl"}
    cursor = np.zeros(n, dtype=np.int64)
    scores = np.zeros(n)
    responses: list[str] = [""] * n
    turn_scores: list[list[float]] = [[] for _ in range(n)]
    conversations: list[list[dict[str, str]]] = [[] for _ in range(n)]
    outcomes: list[dict[str, float]] = [{} for _ in range(n)]
    active = np.ones(n, dtype=bool)
    while active.any():
        actions = np.asarray(choose_actions(env, obs), dtype=np.int64)  # (N,)
        obs, rewards, terminations, truncations, info = env.step(actions)
        rows = np.flatnonzero(active)
        at = cursor[rows]
        tokens[rows, at] = actions[rows]
        actions_mask[rows, at] = True
        per_token["rewards"][rows, at] = rewards[rows]
        for key, info_key in info_keys.items():
            per_token[key][rows, at] = info[info_key][rows]
        cursor[rows] += 1
        for row in np.flatnonzero(info.get("_inserted_ids", np.zeros(n, bool)) & active):
            ids = info["inserted_ids"][row]
            tokens[row, cursor[row] : cursor[row] + len(ids)] = ids
            inserted_mask[row, cursor[row] : cursor[row] + len(ids)] = True
            cursor[row] += len(ids)
        done = (terminations | truncations) & active
        for row in np.flatnonzero(done):
            scores[row] = info["score"][row]
            responses[row] = info["response"][row]
            if "_turn_scores" in info and info["_turn_scores"][row]:
                turn_scores[row] = [float(x) for x in info["turn_scores"][row]]
            if "_conversation" in info and info["_conversation"][row]:
                conversations[row] = info["conversation"][row]
            if "_outcome" in info and info["_outcome"][row]:
                outcomes[row] = dict(info["outcome"][row])
        active &= ~done

    prompt_width = max(len(row) for row in prompt_rows)
    prompt_ids = np.zeros((n, prompt_width), dtype=np.int64)
    prompt_mask = np.zeros((n, prompt_width), dtype=np.int64)
    for i, row in enumerate(prompt_rows):
        prompt_ids[i, prompt_width - len(row) :] = row
        prompt_mask[i, prompt_width - len(row) :] = 1
    response_width = int(cursor.max())
    device = env.device

    def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array[:, :response_width] if array.ndim == 2 else array,
                               dtype=dtype, device=device)  # fmt: skip

    trunk_states = _kept_trunk_states(env, prompt_rows, cursor, prompt_width, response_width)

    return Rollout(
        prompt_ids=torch.as_tensor(prompt_ids, dtype=torch.long, device=device),
        prompt_mask=torch.as_tensor(prompt_mask, dtype=torch.long, device=device),
        continuation_ids=tensor(tokens, torch.long),
        action_mask=tensor(actions_mask, torch.float32),
        inserted_mask=tensor(inserted_mask, torch.float32),
        rewards=tensor(per_token["rewards"], torch.float32),
        logprobs=tensor(per_token["logprobs"], torch.float32),
        kl=tensor(per_token["kl"], torch.float32),
        scores=torch.as_tensor(scores, dtype=torch.float32, device=device),
        prompts=prompt_texts,
        responses=responses,
        turn_scores=turn_scores,
        conversations=conversations,
        outcomes=outcomes,
        trunk_states=trunk_states,
    )


def _kept_trunk_states(
    env: TextGenerationVectorEnv,
    prompt_rows: list[np.ndarray],
    context_lengths: np.ndarray,
    prompt_width: int,
    response_width: int,
) -> torch.Tensor | None:
    """The env's kept trunk output of each sub-env's episode, in the rollout's layout ``(E,
    P + R, H)``; ``None`` when it kept none, or when a sub-env's does not cover its prompt and
    every continuation token but the last (then the update computes it)."""
    kept = env.trunk_states()
    if kept is None:
        return None
    prompt_lengths = [len(row) for row in prompt_rows]
    for states, prompt, context in zip(kept, prompt_lengths, context_lengths, strict=True):
        if states.shape[0] not in (prompt + context - 1, prompt + context):
            return None
    states = kept[0].new_zeros((len(kept), prompt_width + response_width, kept[0].shape[1]))
    for row, (seen, prompt) in enumerate(zip(kept, prompt_lengths, strict=True)):
        read = min(seen.shape[0], prompt + response_width)
        states[row, prompt_width - prompt : prompt_width - prompt + read] = seen[:read]
    return states
