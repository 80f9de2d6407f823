"""The update's forwards under ``frozen:N``: the frozen bottom blocks run once per rollout.

No gradient reaches the embeddings and the bottom ``N`` blocks of a ``frozen:N`` policy, and
their weights do not change during an update, so their output for a rollout's sequences is
the same in every epoch and minibatch. :class:`FrozenTrunk` computes it once per rollout, under
``no_grad``, in the rollout's padded layout (:meth:`FrozenTrunk.states`), and every
forward of the update starts from it at block ``N`` (:meth:`FrozenTrunk.forward`), through the
views of :mod:`rlhf_env.models.trunk`. The gradients are those of the whole forward: the upper
blocks see the same hidden states (a row's padding columns, masked out of attention, aside).
A prompt prefix common to the whole rollout (a task's instructions and examples) runs through
the trunk once, not once per episode.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from rlhf_agents.forward import accepts_argument, response_forward
from rlhf_agents.rollout import Rollout
from rlhf_env.engine.prefix import common_prefix, real_tokens
from rlhf_env.models.efficient import decoder_layers
from rlhf_env.models.trunk import (
    TrunkHandoff,
    frozen_trunk_depth,
    replaying_view,
    trunk_view,
)

#: The key under which a micro-batch's targets carry its rows of the trunk's output.
TRUNK_STATES = "trunk_states"


class FrozenTrunk:
    """A policy's frozen trunk, run once per rollout, and forwards that start from it.

    Args:
        model: the policy (its bottom ``depth`` blocks and its embeddings frozen).
        depth: the frozen blocks (:func:`~rlhf_env.models.trunk.frozen_trunk_depth`).
        min_prefix: the shortest common prompt prefix that :meth:`states` runs once.
    """

    def __init__(self, model: torch.nn.Module, depth: int, min_prefix: int = 16) -> None:
        self.depth = depth
        self.min_prefix = min_prefix
        self.handoff = TrunkHandoff()
        self.trunk = trunk_view(model, depth, self.handoff)
        self.upper = replaying_view(model, depth, self.handoff)
        self.cache_argument = "cache" if accepts_argument(model, "cache") else "past_key_values"

    @classmethod
    def of(cls, model: torch.nn.Module) -> FrozenTrunk | None:
        """The frozen trunk of ``model``, or ``None`` when its embeddings or first block train.
        With every block frozen the last one still runs in each forward (Hugging Face reports
        the last hidden states, a value head's input, through its blocks' outputs)."""
        depth = min(frozen_trunk_depth(model), len(decoder_layers(model)) - 1)
        return cls(model, depth) if depth > 0 else None

    @torch.no_grad()
    def states(self, rollout: Rollout, chunk: int, share_prefix: bool = True) -> torch.Tensor:
        """The trunk's output ``(E, P + R, H)`` for every episode of ``rollout`` in its
        ``[prompt | continuation]`` layout (zeros beyond each chunk's own widths), ``chunk``
        episodes a forward, each trimmed to its own widths.
        When every prompt starts with the same ``min_prefix`` tokens or more (and
        ``share_prefix``), that prefix runs through the trunk once and each episode's forward
        starts from its keys and values (padding columns hold zeros: masked out, they change
        no real position)."""
        prompts = real_tokens(rollout.prompt_ids, rollout.prompt_mask)
        prefix = common_prefix(prompts) if share_prefix else ()
        if len(prefix) >= self.min_prefix:
            device = rollout.prompt_ids.device
            tensors = [torch.tensor(prompt, device=device) for prompt in prompts]
            return self._states_after_prefix(rollout, tensors, len(prefix), chunk)
        states = None
        prompt_width = rollout.prompt_ids.shape[1]
        for first in range(0, rollout.num_episodes, chunk):
            rows = torch.arange(first, min(first + chunk, rollout.num_episodes))
            batch = rollout.select(rows)  # trimmed to its own widths
            response_forward(
                self.trunk, batch.prompt_ids, batch.prompt_mask, batch.continuation_ids,
                batch.context_mask, with_logits=False,
            )  # fmt: skip
            hidden = self.handoff.take()  # (k, P' + R', H)
            self.handoff.clear()
            if states is None:
                states = hidden.new_zeros(
                    (rollout.num_episodes, prompt_width + rollout.continuation_ids.shape[1],
                     hidden.shape[-1])
                )  # fmt: skip
            start = prompt_width - batch.prompt_ids.shape[1]
            states[rows, start : start + hidden.shape[1]] = hidden
        assert states is not None
        return states

    def _states_after_prefix(
        self, rollout: Rollout, prompts: list[torch.Tensor], length: int, chunk: int
    ) -> torch.Tensor:
        """:meth:`states` with the prompts' common first ``length`` tokens run once: each
        episode's remainder and continuation, left-aligned after the prefix (no hole in any
        context, so sliding windows stay exact), attend over its keys and values; the outputs
        go back to the rollout's layout."""
        prefix_hidden, prefix_states = self._run(prompts[0][None, :length], None)  # (1, p, H)
        prompt_width = rollout.prompt_ids.shape[1]
        states = prefix_hidden.new_zeros(
            (rollout.num_episodes, prompt_width + rollout.continuation_ids.shape[1],
             prefix_hidden.shape[-1])
        )  # fmt: skip
        contexts = rollout.context_lengths.tolist()
        for first in range(0, rollout.num_episodes, chunk):
            rows = range(first, min(first + chunk, rollout.num_episodes))
            tails = [
                torch.cat([prompts[r][length:], rollout.continuation_ids[r, : contexts[r]]])
                for r in rows
            ]
            width = max(len(tail) for tail in tails)
            ids = torch.zeros((len(tails), width), dtype=torch.long, device=states.device)
            mask = torch.zeros((len(tails), length + width), dtype=torch.long, device=ids.device)
            mask[:, :length] = 1
            for i, tail in enumerate(tails):
                ids[i, : len(tail)] = tail
                mask[i, length : length + len(tail)] = 1
            hidden, _ = self._run(ids, prefix_states, mask)  # (k, W, H)
            for i, r in enumerate(rows):
                begin, remainder = prompt_width - len(prompts[r]), len(prompts[r]) - length
                states[r, begin : begin + length] = prefix_hidden[0]
                states[r, begin + length : prompt_width] = hidden[i, :remainder]
                context = slice(prompt_width, prompt_width + contexts[r])
                states[r, context] = hidden[i, remainder : remainder + contexts[r]]
        return states

    def _run(
        self,
        input_ids: torch.Tensor,
        prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The trunk over ``input_ids`` ``(k, W)`` (right-padded, after ``prefix``'s keys and
        values when given, each ``(1, H, p, D)`` per trunk layer): its output ``(k, W, H)``
        and its keys and values (of ``prefix`` and the input, per trunk layer)."""
        count, width = input_ids.shape
        start = 0 if prefix is None else prefix[0][0].shape[2]
        if attention_mask is None:
            attention_mask = torch.ones((count, start + width), dtype=torch.long)
        data = None if prefix is None else [
            (keys.expand(count, -1, -1, -1), values.expand(count, -1, -1, -1))
            for keys, values in prefix
        ]  # fmt: skip
        cache = DynamicCache() if data is None else DynamicCache(ddp_cache_data=data)
        positions = torch.arange(start, start + width, device=input_ids.device)
        self.trunk(
            input_ids=input_ids, attention_mask=attention_mask.to(input_ids.device),
            position_ids=positions.expand(count, -1), use_cache=True, logits_to_keep=1,
            **{self.cache_argument: cache},
        )  # fmt: skip
        hidden = self.handoff.take()
        self.handoff.clear()
        return hidden, [(layer.keys, layer.values) for layer in cache.layers[: self.depth]]

    @staticmethod
    def rows(
        states: torch.Tensor, rollout: Rollout, batch: Rollout, index: torch.Tensor
    ) -> torch.Tensor:
        """The trunk's output for ``batch``, the episodes ``index`` of ``rollout`` trimmed by
        :meth:`Rollout.select` (its prompt columns the last of the rollout's, its continuation
        columns the first)."""
        prompt_width = rollout.prompt_ids.shape[1]
        start = prompt_width - batch.prompt_ids.shape[1]
        return states[index, start : prompt_width + batch.continuation_ids.shape[1]]

    def forward(
        self, batch: Rollout, states: torch.Tensor, **options: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:func:`~rlhf_agents.forward.response_forward` of the policy over ``batch``,
        starting from the trunk's output ``states`` (the batch's, from :meth:`rows`)."""
        self.handoff.hidden = states
        try:
            return response_forward(
                self.upper, batch.prompt_ids, batch.prompt_mask, batch.continuation_ids,
                batch.context_mask, **options,
            )  # fmt: skip
        finally:
            self.handoff.clear()
