"""Small helpers about modules and masks that every layer uses: eval mode, a module's device,
the arguments of its forward, position ids of left-padded rows."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout) and restore its training flag afterwards."""
    was_training = module.training
    if was_training:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train()


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters."""
    return next(model.parameters()).device


def forward_parameters(model: torch.nn.Module) -> set[str]:
    """Names of the arguments of ``model``'s forward; for a peft model (or a view of one), which
    passes ``**kwargs`` on, those of the Hugging Face model underneath."""
    owner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(owner.forward).parameters)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. ``(B, T)``."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
