"""Step a causal LM one token at a time over a batch of left-padded contexts, with a KV cache.

This is the per-token engine under the environments: one prefill forward over the prompts, then
one single-token forward per step. Positions come from the attention mask, so left-padded rows
see the same positions as unpadded ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache


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


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. ``(B, T)``."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


class IncrementalLM:
    """A causal LM read under ``no_grad`` one token at a time, keeping a KV cache.

    The model is held by reference: if it is being trained, every forward reads its current
    weights (cached keys/values of earlier tokens were computed with the weights of their time).

    Example:
        >>> lm = IncrementalLM(model)
        >>> logits = lm.start(input_ids, attention_mask)   # (B, V), next-token logits
        >>> logits = lm.extend(next_tokens)                # (B, V), after appending (B,) tokens
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        parameters = inspect.signature(model.forward).parameters
        self._accepts_logits_to_keep = "logits_to_keep" in parameters
        # transformers renamed ``past_key_values`` to ``cache``; use whichever this one takes.
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None  # (B, T) over cache + current tokens
        self._next_position: torch.Tensor | None = None  # (B,)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self._cache_argument: self.cache}
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad(), eval_mode(self.model):
            output = self.model(
                input_ids=input_ids,
                attention_mask=self.attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **kwargs,
            )
        return output.logits[:, -1].float()  # (B, V)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode left-padded contexts ``(B, T)``; returns next-token logits ``(B, V)``, float32."""
        self.cache = DynamicCache(config=getattr(self.model, "config", None))
        self.attention_mask = attention_mask
        positions = positions_from_mask(attention_mask)  # (B, T)
        self._next_position = positions[:, -1] + 1  # (B,)
        return self._forward(input_ids, positions)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row ``(B,)``; returns the next-token logits ``(B, V)``."""
        if self.cache is None or self.attention_mask is None or self._next_position is None:
            raise RuntimeError("IncrementalLM.extend() called before start()")
        ones = self.attention_mask.new_ones((tokens.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # (B, T + 1)
        logits = self._forward(tokens.unsqueeze(-1), self._next_position.unsqueeze(-1))
        self._next_position = self._next_position + 1
        return logits

    def release(self) -> None:
        """Drop the KV cache and masks so their memory can be freed."""
        self.cache = None
        self.attention_mask = None
        self._next_position = None
