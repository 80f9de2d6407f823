"""Forwards of a causal LM for the agents: next-token logits for ``predict`` and the
teacher-forced scoring of whole continuations (responses, or the rest of a conversation) for
the updates (one forward per sequence)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from rlhf_env.models.modules import device_of, forward_parameters, positions_from_mask


def accepts_argument(model: torch.nn.Module, name: str) -> bool:
    """Whether the forward of ``model`` (of the HF model under a peft wrapper) takes ``name``."""
    return name in forward_parameters(model)


def observation_tensors(
    observation: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` as integer ``(B, L)`` tensors from one observation or a
    batch, given as arrays or tensors (SB3's buffers hold them as floats: rounded back)."""

    def as_ids(value: Any) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        return (tensor.round() if tensor.is_floating_point() else tensor).long().to(device)

    input_ids, mask = as_ids(observation["input_ids"]), as_ids(observation["attention_mask"])
    if input_ids.dim() == 1:
        input_ids, mask = input_ids.unsqueeze(0), mask.unsqueeze(0)
    return input_ids, mask


@torch.no_grad()
def next_token_logits(model: torch.nn.Module, observation: dict[str, Any]) -> torch.Tensor:
    """The model's next-token logits ``(B, V)`` (float32) for left-padded observations."""
    device = device_of(model)
    input_ids, mask = observation_tensors(observation, device)  # (B, L)
    kwargs = {"logits_to_keep": 1} if accepts_argument(model, "logits_to_keep") else {}
    output = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        use_cache=False,
        **kwargs,
    )
    return output.logits[:, -1].float()


def response_forward(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    continuation_ids: torch.Tensor,
    context_mask: torch.Tensor,
    with_logits: bool = True,
    with_hidden: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Score whole continuations in one forward (teacher forcing).

    The input is ``[left-padded prompt | right-padded continuation]`` ``(E, P + R)``, the
    continuation being every token after the prompt: the actions and, in a dialogue, the
    tokens the env inserted between them (:attr:`~rlhf_agents.rollout.Rollout.context_mask`
    marks both), all attended to, with position ids from ``prompt_mask`` and ``context_mask``:
    each row reads as the unpadded conversation would. Position ``P - 1 + t`` predicts
    continuation token ``t``, so the outputs are read at positions ``P - 1 ... P + R - 2``;
    the caller keeps those of the actions (``Rollout.action_mask``).

    Args:
        model: a causal LM (a Hugging Face model, or one under a peft wrapper).
        prompt_ids, prompt_mask: ``(E, P)`` left-padded prompts and their mask.
        continuation_ids: ``(E, R)`` right-padded continuations (``Rollout.continuation_ids``).
        context_mask: ``(E, R)`` 1 on every continuation token, actions and inserted ones
            (``Rollout.context_mask``; a single-turn rollout's ``action_mask``).
        with_logits, with_hidden: which outputs to compute.

    Returns:
        ``(logits, hidden)``: ``(E, R, V)`` float32 next-token logits for every continuation
        position (``None`` unless ``with_logits``) and ``(E, R, H)`` last hidden states there
        (``None`` unless ``with_hidden``).
    """
    prompt_width, response_width = prompt_ids.shape[1], continuation_ids.shape[1]
    input_ids = torch.cat([prompt_ids, continuation_ids], dim=1)  # (E, P + R)
    mask = torch.cat([prompt_mask.long(), context_mask.long()], dim=1)  # (E, P + R)
    kwargs: dict[str, Any] = {"output_hidden_states": with_hidden}
    if accepts_argument(model, "logits_to_keep"):
        # Only the last R + 1 positions' logits are needed (the last one is dropped below).
        kwargs["logits_to_keep"] = response_width + 1 if with_logits else 1
    output = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        use_cache=False,
        **kwargs,
    )
    logits = None
    if with_logits:
        logits = output.logits[:, -(response_width + 1) : -1].float()  # (E, R, V)
    hidden = None
    if with_hidden:
        last = output.hidden_states[-1]  # (E, P + R, H)
        hidden = last[:, prompt_width - 1 : prompt_width + response_width - 1]  # (E, R, H)
    return logits, hidden


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[token]`` per position: ``(E, R, V)``, ``(E, R)`` -> ``(E, R)``."""
    logprobs = torch.log_softmax(logits, dim=-1)  # (E, R, V)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def enable_gradient_checkpointing(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Turn on Hugging Face's activation checkpointing (non-reentrant) of ``model``'s decoder
    layers and return them. It acts only on layers in training mode with gradients enabled,
    so only inside :func:`checkpointing`: the environment's no-grad steps are unchanged.

    Raises:
        ValueError: the model does not support gradient checkpointing.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{type(base).__name__} does not support gradient checkpointing; set "
            "gradient_checkpointing=False"
        )
    # transformers >= 5.2x names it activation_checkpointing_enable.
    enable = getattr(base, "activation_checkpointing_enable", None)
    enable = enable if enable is not None else base.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    if hasattr(base, "_require_grads_hook"):  # only reentrant checkpointing needs it
        base.disable_input_require_grads()
    return [module for module in base.modules() if isinstance(module, GradientCheckpointingLayer)]


@contextmanager
def checkpointing(layers: list[torch.nn.Module]) -> Iterator[None]:
    """Recompute the activations of ``layers`` (from :func:`enable_gradient_checkpointing`)
    in the backward pass inside this block. The layers themselves are flagged as training
    (Hugging Face checkpoints training layers only); the modules inside them, dropout
    included, keep their modes, so the numbers are those of the plain forward."""
    flags = [layer.training for layer in layers]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer.training = flag
