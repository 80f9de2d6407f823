"""The update's forwards under ``frozen:N``: the frozen bottom blocks run once per rollout.

No gradient reaches the embeddings and the bottom ``N`` blocks of a ``frozen:N`` policy, and
their weights do not change during an update, so their output for a rollout's sequences is
the same in every epoch and minibatch. :class:`FrozenTrunk` computes it once per rollout, under
``no_grad``, over the rollout's whole padded layout (:meth:`FrozenTrunk.states`), and every
forward of the update starts from it at block ``N`` (:meth:`FrozenTrunk.forward`), through the
views of :mod:`rlhf_env.models.trunk`. The gradients are those of the whole forward: the upper
blocks see the same hidden states (a row's padding columns, masked out of attention, aside).
"""

from __future__ import annotations

from typing import Any

import torch

from rlhf_agents.forward import response_forward
from rlhf_agents.rollout import Rollout
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
    """

    def __init__(self, model: torch.nn.Module, depth: int) -> None:
        self.depth = depth
        self.handoff = TrunkHandoff()
        self.trunk = trunk_view(model, depth, self.handoff)
        self.upper = replaying_view(model, depth, self.handoff)

    @classmethod
    def of(cls, model: torch.nn.Module) -> FrozenTrunk | None:
        """The frozen trunk of ``model``, or ``None`` when its embeddings or first block train.
        With every block frozen the last one still runs in each forward (Hugging Face reports
        the last hidden states, a value head's input, through its blocks' outputs)."""
        depth = min(frozen_trunk_depth(model), len(decoder_layers(model)) - 1)
        return cls(model, depth) if depth > 0 else None

    @torch.no_grad()
    def states(self, rollout: Rollout, chunk: int) -> torch.Tensor:
        """The trunk's output ``(E, P + R, H)`` for every episode of ``rollout`` over its
        whole (untrimmed) ``[prompt | continuation]`` layout, ``chunk`` episodes a forward."""
        parts = []
        for first in range(0, rollout.num_episodes, chunk):
            rows = slice(first, first + chunk)
            response_forward(
                self.trunk, rollout.prompt_ids[rows], rollout.prompt_mask[rows],
                rollout.response_ids[rows], rollout.context_mask[rows], with_logits=False,
            )  # fmt: skip
            parts.append(self.handoff.take())
            self.handoff.clear()
        return torch.cat(parts)

    @staticmethod
    def rows(
        states: torch.Tensor, rollout: Rollout, batch: Rollout, index: torch.Tensor
    ) -> torch.Tensor:
        """The trunk's output for ``batch``, the episodes ``index`` of ``rollout`` trimmed by
        :meth:`Rollout.select` (its prompt columns the last of the rollout's, its continuation
        columns the first)."""
        prompt_width = rollout.prompt_ids.shape[1]
        start = prompt_width - batch.prompt_ids.shape[1]
        return states[index, start : prompt_width + batch.response_ids.shape[1]]

    def forward(
        self, batch: Rollout, states: torch.Tensor, **options: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:func:`~rlhf_agents.forward.response_forward` of the policy over ``batch``,
        starting from the trunk's output ``states`` (the batch's, from :meth:`rows`)."""
        self.handoff.hidden = states
        try:
            return response_forward(
                self.upper, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                batch.context_mask, **options,
            )  # fmt: skip
        finally:
            self.handoff.clear()
