"""The update's forward with a micro-batch's common prompt prefix computed once, gradients and all.

The responses of an update often answer prompts that begin alike: a task's instructions and
worked examples (Arithmetic: 121 of 132 tokens), the ``group_size`` copies of an RLOO prompt.
:func:`prefix_shared_forward` runs that prefix through the model once (one row, caching its
keys and values, which stay in the autograd graph), then every episode's *tail*, the rest of
its prompt and its continuation, left-aligned, attending over the prefix's keys and values
broadcast to every row. The backward pass sums each row's gradient into the one prefix, as
the per-row forward sums the rows' gradients into the shared weights: the gradients are the
per-row forward's (up to float summation order). Positions are the per-row forward's, and no
context has a hole (the prefix fills cache columns ``0 .. p - 1``, the tail the next ones), so
sliding windows stay exact. Under ``frozen:N`` both forwards start from the kept trunk output
(:mod:`rlhf_agents.frozen_trunk`), the prefix's from its first row.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from rlhf_agents.forward import accepts_argument
from rlhf_agents.rollout import Rollout
from rlhf_env.engine.prefix import common_prefix, real_tokens
from rlhf_env.engine.slots import BorrowedLayer
from rlhf_env.models.trunk import TrunkHandoff

#: The shortest common prefix worth running once (shorter ones run with every episode).
MIN_SHARED_PREFIX = 16


def shared_prefix_length(batch: Rollout, minimum: int) -> int:
    """The length of the prompts' common prefix (shorter than the shortest prompt), or 0 when
    it is shorter than ``minimum`` or the batch holds one episode."""
    if batch.num_episodes < 2:
        return 0
    length = len(common_prefix(real_tokens(batch.prompt_ids, batch.prompt_mask)))
    return length if length >= minimum else 0


def prefix_shared_forward(
    model: torch.nn.Module,
    batch: Rollout,
    length: int,
    with_logits: bool = True,
    with_hidden: bool = False,
    trunk: tuple[TrunkHandoff, int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`~rlhf_agents.forward.response_forward` of ``batch`` with the prompts' common
    first ``length`` tokens (:func:`shared_prefix_length`) run once.

    Args:
        model: the causal LM (or the replaying view of a frozen trunk: then ``trunk``).
        batch: a micro-batch (``E`` episodes, ``[prompt | continuation]`` of ``P + R``).
        length: the common prefix, shorter than every prompt.
        with_logits, with_hidden: which outputs to compute.
        trunk: ``(handoff, depth, states)``: the view's handoff, its trunk depth and the
            batch's trunk output ``(E, P + R, H)`` in the batch's layout.

    Returns:
        ``(logits, hidden)`` as :func:`~rlhf_agents.forward.response_forward` returns them:
        ``(E, R, V)`` and ``(E, R, H)`` at the positions that predict each continuation token.
    """
    prompt_width = batch.prompt_ids.shape[1]
    prompt_lengths = batch.prompt_mask.sum(dim=1).long()  # (E,)
    tail_lengths = prompt_lengths - length + batch.context_lengths  # (E,)
    width = int(tail_lengths.max())
    device = batch.prompt_ids.device
    columns = torch.arange(width, device=device)  # (W,)
    # Each tail is one contiguous slice of [prompt | continuation]: from the prompt's token
    # ``length`` to the continuation's end.
    starts = prompt_width - prompt_lengths + length  # (E,)
    full_width = prompt_width + batch.continuation_ids.shape[1]
    index = (starts[:, None] + columns).clamp(max=full_width - 1)  # (E, W)
    real = columns < tail_lengths[:, None]  # (E, W)
    ids = torch.cat([batch.prompt_ids, batch.continuation_ids], dim=1).gather(1, index)
    ids = ids.masked_fill(~real, 0)
    first = int((prompt_width - prompt_lengths[0]).item())
    prefix_ids = batch.prompt_ids[:1, first : first + length]  # (1, p)
    cache_argument = "cache" if accepts_argument(model, "cache") else "past_key_values"
    depth = 0 if trunk is None else trunk[1]

    # 1. The prefix, one row: its keys and values (in the graph) for every computed layer.
    cache = DynamicCache()
    if trunk is not None:
        handoff, _, states = trunk
        handoff.hidden = states[:1, first : first + length]
    try:
        model(
            input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids),
            position_ids=torch.arange(length, device=device)[None], use_cache=True,
            logits_to_keep=1, **{cache_argument: cache},
        )  # fmt: skip
    finally:
        if trunk is not None:
            trunk[0].clear()
    rows = batch.num_episodes
    broadcast = [
        (layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
        for layer in cache.layers[depth:]
    ]
    tail_cache = DynamicCache(ddp_cache_data=broadcast)
    borrowed = [BorrowedLayer() for _ in range(depth)]
    for layer in borrowed:
        layer.seen = length
    tail_cache.layers[:0] = borrowed

    # 2. The tails, every row, after the prefix.
    mask = torch.cat([real.new_ones((rows, length)), real], dim=1).long()  # (E, p + W)
    if trunk is not None:
        hidden_index = index[:, :, None].expand(-1, -1, trunk[2].shape[-1])
        trunk[0].hidden = trunk[2].gather(1, hidden_index) * real[:, :, None]
    # The logits of continuation token t come from tail column u + t - 1 (u: the prompt's
    # tail); only the columns from the first such one on are needed.
    remainders = prompt_lengths - length  # (E,) >= 1
    keep = width - int(remainders.min()) + 1
    kwargs: dict[str, Any] = {"output_hidden_states": with_hidden, cache_argument: tail_cache}
    if accepts_argument(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep if with_logits else 1
    try:
        output = model(
            input_ids=ids, attention_mask=mask,
            position_ids=(length + columns).expand(rows, -1), use_cache=True, **kwargs,
        )  # fmt: skip
    finally:
        if trunk is not None:
            trunk[0].clear()
    response_width = batch.continuation_ids.shape[1]
    steps = torch.arange(response_width, device=device)
    read = (remainders[:, None] - 1 + steps).clamp(max=width - 1)  # (E, R) tail columns
    logits = None
    if with_logits:
        kept = output.logits[:, -keep:]  # (E, keep, V)
        local = (read - (width - keep))[:, :, None].expand(-1, -1, kept.shape[-1])
        logits = kept.gather(1, local).float()  # (E, R, V)
    hidden = None
    if with_hidden:
        last = output.hidden_states[-1]  # (E, W, H)
        hidden = last.gather(1, read[:, :, None].expand(-1, -1, last.shape[-1]))
    return logits, hidden
