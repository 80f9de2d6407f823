"""Which attention each layer of a causal LM uses, and whether the static engine can step it.

The static engine builds the attention masks itself (one 4-D mask per kind of layer) and hands
them to the Hugging Face forward, which passes a 4-D mask through unchanged. That needs to know,
per architecture, how the model takes its masks: one tensor for every layer, or a mapping
``{"full_attention": ..., "sliding_attention": ...}`` that the model indexes by
``config.layer_types``. :data:`STATIC_ARCHITECTURES` lists the architectures this is known for
(each is covered by the engine tests with a tiny random config); any other is refused with an
error that names it, and ``engine="auto"`` then uses the dynamic engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from rlhf_env.models.modules import forward_parameters

FULL = "full_attention"
SLIDING = "sliding_attention"

#: ``config.model_type`` -> how the model takes its attention masks: ``"tensor"`` (one mask for
#: every layer; all layers full, or all sliding when ``config.sliding_window`` is set) or
#: ``"mapping"`` (a dict by layer type, per ``config.layer_types``).
STATIC_ARCHITECTURES: dict[str, Literal["tensor", "mapping"]] = {
    "gpt2": "tensor",
    "llama": "tensor",
    "mistral": "tensor",
    "phi3": "tensor",
    "qwen2": "mapping",
    "qwen3": "mapping",
    "gemma2": "mapping",
    "gemma3_text": "mapping",
}

#: Attention implementations that take an explicit 4-D mask over the cache slots.
MASKED_ATTENTION = ("sdpa", "eager")


class UnsupportedModelError(NotImplementedError):
    """The static engine cannot step this model (the message names the architecture and the
    way on, usually ``engine="dynamic"``)."""


@dataclass(frozen=True)
class AttentionLayout:
    """How one model attends: the kinds of its layers and how it takes their masks.

    Attributes:
        kinds: the attention kinds present (``FULL`` and/or ``SLIDING``).
        sliding_window: tokens a sliding layer sees (itself included), or ``None``.
        as_mapping: the model takes ``{kind: mask}`` rather than one mask.
        additive: masks are float (0 / -inf, added to the scores; ``eager`` attention), else
            bool (True = attend; ``sdpa``).
    """

    kinds: tuple[str, ...]
    sliding_window: int | None
    as_mapping: bool
    additive: bool


def architecture_of(model: torch.nn.Module) -> str:
    """``config.model_type`` of ``model`` (of the Hugging Face model under a peft wrapper)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def attention_layout(model: torch.nn.Module) -> AttentionLayout:
    """The :class:`AttentionLayout` of ``model``.

    Raises:
        UnsupportedModelError: the architecture, its attention implementation or its
            configuration is not one the static engine steps.
    """
    architecture = architecture_of(model)
    how = STATIC_ARCHITECTURES.get(architecture)
    if how is None:
        raise UnsupportedModelError(
            f"the static engine does not support {architecture!r} models (supported: "
            f"{', '.join(sorted(STATIC_ARCHITECTURES))}); use engine='dynamic' for this model"
        )
    config = model.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in MASKED_ATTENTION:
        accepted = " or ".join(MASKED_ATTENTION)
        raise UnsupportedModelError(
            f"the static engine needs attention that takes a 4-D mask ({accepted}), this "
            f"{architecture} model uses {implementation!r}; load it with "
            "attn_implementation='sdpa' or use engine='dynamic'"
        )
    if getattr(config, "use_bidirectional_attention", False) or not getattr(
        config, "is_causal", True
    ):
        raise UnsupportedModelError(
            f"this {architecture} model attends bidirectionally; the environments step causal LMs"
        )
    if "logits_to_keep" not in forward_parameters(model):
        raise UnsupportedModelError(
            f"{type(model).__name__}.forward takes no logits_to_keep; use engine='dynamic'"
        )
    window = getattr(config, "sliding_window", None)
    if how == "mapping":
        kinds = tuple(sorted(set(config.layer_types)))
        unknown = set(kinds) - {FULL, SLIDING}
        if unknown:
            raise UnsupportedModelError(
                f"this {architecture} model has {sorted(unknown)} layers; the static engine "
                f"steps {FULL!r} and {SLIDING!r} layers only: use engine='dynamic'"
            )
    else:
        kinds = (SLIDING,) if window is not None else (FULL,)
    if SLIDING not in kinds:
        window = None
    elif not (isinstance(window, int) and window >= 1):
        raise UnsupportedModelError(
            f"this {architecture} model has sliding-window layers but sliding_window={window!r}"
        )
    return AttentionLayout(
        kinds=kinds,
        sliding_window=window,
        as_mapping=how == "mapping",
        additive=implementation == "eager",
    )
