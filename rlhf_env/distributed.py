"""Data parallelism over processes with ``torch.distributed``: which process this is, and the
few collective steps the trainers share.

Launch a training script with ``torchrun`` or ``accelerate launch``; both set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The script calls
:func:`init_distributed` first, builds its vector env on its shard of the prompts
(:func:`shard`) and on its device (:attr:`DistributedContext.device`), then trains as usual:
``PPOAgent``, ``RLOOAgent`` and ``train_reward_model`` read :func:`current_context` and

- average gradients over the processes with ``DistributedDataParallel`` (each optimiser step
  sees the global batch: the per-process batch x the world size);
- agree on everything that decides the control flow (timesteps, KL coefficient, early stops);
- log, print and write checkpoints on rank 0 only.

Seeds differ per process (:func:`rank_seed`) and are reproducible. In a single process every
function here is a no-op, so the same script runs with ``python`` too::

    context = init_distributed()  # gloo on CPU, NCCL on CUDA
    env = TextGenerationVectorEnv(policy.to(context.device), tokenizer, reward_fn,
                                  shard(prompts, context), num_envs=16, device=context.device)
    PPOAgent(env, PPOConfig(checkpoint_dir="runs/ppo")).learn(100_000)
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """More than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, prints and writes files."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` under NCCL, else the CPU (or the one GPU of a single process)."""
        if self.backend == "nccl" or (not self.enabled and torch.cuda.is_available()):
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def launched_in_parallel() -> bool:
    """``torchrun`` or ``accelerate launch`` started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 when not launched), readable
    before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(backend: str | None = None) -> DistributedContext:
    """Join the process group the launcher describes (``WORLD_SIZE`` > 1), or do nothing.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available, else gloo.

    Returns:
        This process's context (also what :func:`current_context` returns from now on).
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    if not launched_in_parallel():
        return DistributedContext()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a standard build")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return current_context()


def current_context() -> DistributedContext:
    """The group this process joined with :func:`init_distributed` (one process if none).

    Raises:
        RuntimeError: a launcher started several processes but none joined the group yet.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            backend=str(dist.get_backend()),
        )
    if launched_in_parallel():
        raise RuntimeError(
            f"this is one of {os.environ['WORLD_SIZE']} processes, but it has not joined their "
            "group: call rlhf_env.distributed.init_distributed() before building the env"
        )
    return DistributedContext()


def shard(items: Sequence[T], context: DistributedContext | None = None) -> list[T]:
    """This process's disjoint share of ``items``: every ``world_size``-th from ``rank``.

    Raises:
        ValueError: fewer items than processes (a process would get none).
    """
    context = context or current_context()
    if len(items) < context.world_size:
        raise ValueError(
            f"{len(items)} items cannot be shared by {context.world_size} processes; "
            "give each process at least one"
        )
    return list(items[context.rank :: context.world_size])


def contiguous_share(items: Sequence[T], context: DistributedContext | None = None) -> list[T]:
    """This process's contiguous share of ``items`` (sizes differ by at most one; empty when
    there are fewer items than processes): keeps neighbours, e.g. a prompt's pairs, together."""
    context = context or current_context()
    count, rank, processes = len(items), context.rank, context.world_size
    return list(items[rank * count // processes : (rank + 1) * count // processes])


def rank_seed(seed: int, rank: int) -> int:
    """A per-process seed: ``seed`` itself on rank 0 (a one-process run is unchanged), and on
    other ranks a value derived from ``(seed, rank)``, distinct and reproducible."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]) & 0x7FFF_FFFF


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over the processes (a copy; float64 on the CPU
    under gloo)."""
    context = current_context()
    if not context.enabled:
        return values.clone()
    device = context.device
    total = values.detach().to(device=device, dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def sum_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the processes (the same keys on every process)."""
    if not current_context().enabled or not values:
        return dict(values)
    names = sorted(values)
    totals = all_reduce_sum(torch.tensor([values[name] for name in names], dtype=torch.float64))
    return {name: float(total) for name, total in zip(names, totals.tolist(), strict=True)}


def all_agree(flag: bool) -> bool:
    """``True`` only if ``flag`` is true on every process (so all stop or go on together)."""
    return bool(all_reduce_sum(torch.tensor([0.0 if flag else 1.0]))[0] == 0)


def gather_objects(value: Any) -> list[Any]:
    """``value`` from every process, by rank (picklable objects; ``[value]`` alone)."""
    context = current_context()
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if current_context().enabled:
        dist.barrier()


class _Call(torch.nn.Module):
    """Makes a loss function a module's ``forward``, for ``DistributedDataParallel``."""

    def __init__(self, modules: dict[str, torch.nn.Module], function: Callable[..., Any]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)
        self.function = function

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


class GradientSync:
    """Calls ``function`` (a loss computed with ``modules``) so that the backward of what it
    returns averages the gradients of the modules' trainable parameters over the processes:
    through ``DistributedDataParallel`` when several train, directly otherwise. Building it
    copies rank 0's parameters to every process. ``find_unused_parameters``: some trainable
    parameters get no gradient from ``function`` (DDP must then look for them every step).

    Example:
        >>> sync = GradientSync({"policy": policy}, agent.loss)
        >>> with sync.no_sync():  # an accumulation micro-batch: no communication
        ...     sync(batch, targets)[0].backward()
    """

    def __init__(
        self,
        modules: dict[str, torch.nn.Module],
        function: Callable[..., Any],
        find_unused_parameters: bool = False,
    ):
        self.function = function
        self.wrapped: torch.nn.parallel.DistributedDataParallel | None = None
        context = current_context()
        if context.enabled:
            device = context.device
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                _Call(modules, function),
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters,
                **_no_buffer_sync_per_step(),
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.wrapped is None:
            return self.function(*args, **kwargs)
        return self.wrapped(*args, **kwargs)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate this backward's gradients locally (the next synchronised one sends the
        sum)."""
        with self.wrapped.no_sync() if self.wrapped is not None else nullcontext():
            yield


def _no_buffer_sync_per_step() -> dict[str, bool]:
    """DDP's option not to re-send buffers (e.g. rotary tables, the same everywhere) at every
    forward: ``forward_sync_buffers`` in recent torch, ``broadcast_buffers`` before."""
    parameters = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
