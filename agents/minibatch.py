"""The gradients of one optimiser step: micro-batches weighted by their tokens, across processes.

The loss of a micro-batch is a token mean. For the step to weigh every token as one process
holding the whole global minibatch would, each micro-batch's loss is scaled by its share of
the global minibatch's tokens (the token count is summed over the processes), and by the number
of processes, which ``DistributedDataParallel`` divides the summed gradients by.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch

from rlhf_agents.rollout import Rollout
from rlhf_env.distributed import GradientSync, all_reduce_sum, current_context, sum_over_processes

MicroBatch = tuple[Rollout, dict[str, torch.Tensor]]


def minibatch_gradients(
    loss: GradientSync,
    micro_batches: Sequence[MicroBatch],
    forward_context: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> dict[str, float]:
    """Accumulate the gradients of ``micro_batches`` (each a rollout slice and its loss
    targets) into the parameters' ``.grad``; returns the loss statistics as token-weighted
    means over every process's tokens.

    ``loss(batch, targets) -> (loss, stats)`` runs inside ``forward_context()`` (autocast,
    gradient checkpointing); the processes communicate once, after the last micro-batch.
    """
    processes = current_context().world_size
    local_tokens = sum(float(batch.action_mask.sum()) for batch, _ in micro_batches)
    global_tokens = float(all_reduce_sum(torch.tensor([local_tokens]))[0])
    stats: dict[str, float] = {}
    for batch, targets, synchronise in _with_last_flag(micro_batches):
        weight = float(batch.action_mask.sum()) / global_tokens
        with contextlib.nullcontext() if synchronise else loss.no_sync():
            with forward_context():
                value, micro_stats = loss(batch, targets)
            (value * (weight * processes)).backward()
        for name, statistic in micro_stats.items():
            stats[name] = stats.get(name, 0.0) + float(statistic) * weight
    return sum_over_processes(stats)


def _with_last_flag(
    micro_batches: Sequence[MicroBatch],
) -> Iterator[tuple[Rollout, dict[str, torch.Tensor], bool]]:
    for index, (batch, targets) in enumerate(micro_batches):
        yield batch, targets, index == len(micro_batches) - 1
