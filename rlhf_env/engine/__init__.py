"""Per-token engines: the policy and the frozen reference stepped together over a batch of rows.

Both environments hold one engine. Per step it returns the KL and log-probs of the taken tokens
under the current next-token distributions and appends the tokens (one forward of each model);
``policy_logits`` / ``reference_logits`` ``(rows, V)`` hold the distributions for the next step.
Both engines share one interface (:data:`TokenEngine`): ``start(rows, input_ids,
attention_mask)`` puts rows on new left-padded contexts, ``step(tokens, advance)`` takes one
token per row, and ``append(rows, input_ids, attention_mask)`` appends a left-padded block of
tokens to some rows' contexts (a dialogue's next user turn: observations, so no statistics; one
forward of each model over those rows, no re-encoding of their contexts).

- :class:`StaticEngine` (``engine="static"``): fixed-shape caches and one compiled step (one
  CUDA graph on CUDA); for the architectures in :data:`STATIC_ARCHITECTURES`.
- :class:`DynamicEngine` (``engine="dynamic"``): growing Hugging Face caches, any causal LM.
- ``engine="auto"`` (the environments' default): static where the models support it, else
  dynamic.
"""

from __future__ import annotations

from typing import Literal

import torch

from rlhf_env.engine.dynamic import DynamicEngine
from rlhf_env.engine.layout import STATIC_ARCHITECTURES, UnsupportedModelError, attention_layout
from rlhf_env.engine.prefix import PrefixCache
from rlhf_env.engine.static import BATCH_BUCKETS, StaticEngine, batch_bucket
from rlhf_env.kl import KLEstimator

EngineName = Literal["auto", "static", "dynamic"]
ENGINES: tuple[str, ...] = ("auto", "static", "dynamic")

TokenEngine = StaticEngine | DynamicEngine


def check_engine(engine: str) -> EngineName:
    """``engine`` if it names an engine, else a ``ValueError`` listing them."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    return engine  # type: ignore[return-value]


def static_support(model: torch.nn.Module) -> str | None:
    """``None`` if the static engine can step ``model``, else the reason it cannot."""
    try:
        attention_layout(model)
    except UnsupportedModelError as error:
        return str(error)
    return None


def make_engine(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    num_rows: int,
    num_slots: int,
    kl_estimator: KLEstimator = "k1",
    engine: EngineName = "auto",
    compile_step: bool | None = None,
    share_trunk: bool = True,
    prefix_cache: PrefixCache | None = None,
) -> TokenEngine:
    """The engine ``engine`` names for these models (see the module docstring).

    Raises:
        UnsupportedModelError: ``engine="static"`` for a model it cannot step.
    """
    check_engine(engine)
    if engine == "dynamic":
        return DynamicEngine(policy, reference, num_rows, kl_estimator, share_trunk, prefix_cache)
    models = [policy] if reference is policy else [policy, reference]
    reasons = [reason for model in models if (reason := static_support(model)) is not None]
    if reasons and engine == "auto":
        return DynamicEngine(policy, reference, num_rows, kl_estimator, share_trunk, prefix_cache)
    if reasons:
        raise UnsupportedModelError(reasons[0])
    return StaticEngine(
        policy, reference, num_rows, num_slots, kl_estimator, compile_step, share_trunk,
        prefix_cache,
    )  # fmt: skip


__all__ = [
    "BATCH_BUCKETS",
    "ENGINES",
    "STATIC_ARCHITECTURES",
    "DynamicEngine",
    "EngineName",
    "PrefixCache",
    "StaticEngine",
    "TokenEngine",
    "UnsupportedModelError",
    "batch_bucket",
    "check_engine",
    "make_engine",
]
