"""One-token attention for grouped-query models, registered with Hugging Face's attention API.

For a one-token query and an explicit mask, Hugging Face's ``sdpa`` path repeats every key and
value head to all query heads (``repeat_kv``) whenever it is traced by ``torch.compile`` (its
reshaping alternative is off there): for SmolLM2, 9 query heads over 3 key/value heads, that is
3x the cache read per step. :func:`one_token_attention` folds the query heads of each key/value
head into the query axis instead, ``(B, H, 1, D) -> (B, kv_heads, H / kv_heads, D)``, so that
attention reads each cached key and value once, in the eager and the compiled step alike. The
static engine switches a model to it (:func:`attention_implementation`) only for its own
one-token steps; everything else, the prefill included, keeps the model's own implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from transformers import AttentionInterface

#: The name :func:`one_token_attention` is registered under in ``AttentionInterface``.
ONE_TOKEN_ATTENTION = "rlhf_env_one_token_sdpa"


def one_token_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention of one query token per row over the cache.

    Shapes: ``query`` ``(B, H, 1, D)``, ``key``/``value`` ``(B, G, L, D)`` with ``G`` key/value
    heads dividing ``H``; ``attention_mask`` bool ``(B, 1, 1, L)`` (True = attend). Returns
    ``(B, 1, H, D)`` and no weights, as Hugging Face's attention functions do.
    """
    batch, heads, length, dim = query.shape
    groups = key.shape[1]
    if length != 1:
        raise ValueError(f"one_token_attention takes one query token per row, got {length}")
    packed = query.reshape(batch, groups, heads // groups, dim)  # (B, G, H/G, D)
    output = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=scaling
    )  # (B, G, H/G, D): head h = g * H/G + r reads key/value head g, as repeat_kv pairs them
    return output.reshape(batch, heads, 1, dim).transpose(1, 2), None  # (B, 1, H, D)


AttentionInterface.register(ONE_TOKEN_ATTENTION, one_token_attention)


@contextmanager
def attention_implementation(models: list[torch.nn.Module], name: str) -> Iterator[None]:
    """Run ``models`` with attention implementation ``name`` inside the block (their configs'
    ``_attn_implementation``, restored afterwards; a config shared by two models is switched
    once)."""
    with ExitStack() as stack:
        seen: set[int] = set()
        for model in models:
            config = model.config
            if id(config) in seen:
                continue
            seen.add(id(config))
            previous = config._attn_implementation
            config._attn_implementation = name
            stack.callback(setattr, config, "_attn_implementation", previous)
        yield
