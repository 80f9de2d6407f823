"""Step a causal LM one token at a time over a batch of left-padded contexts, with a KV cache.

This is what the dynamic engine (:mod:`rlhf_env.engine.dynamic`) steps for each model: one
prefill forward over the prompts, then one single-token forward per step, the cache growing by
one column per step. Positions come from the attention mask, so left-padded rows see the same
positions as unpadded ones. Every layer keeps every token (sliding-window models apply their
windows through their own masks), so rows can be replaced by splicing.

A model whose bottom blocks another model computes for it (a shared trunk: a replaying view
of :mod:`rlhf_env.models.trunk`, ``shared_layers`` > 0) caches nothing for those layers: its
cache holds a :class:`~rlhf_env.engine.slots.BorrowedLayer` there, told before each forward
how many tokens precede the input, so that the masks the model builds are the same.

Every row's context is kept right-aligned and contiguous in the cache (its real tokens are
its last columns), except for the placeholder columns of rows that did not advance: Hugging
Face's sliding windows count cache columns, so a hole inside a context would widen them.
Starting rows (:meth:`IncrementalLM.replace_rows`) and appending several tokens to some rows
(:meth:`IncrementalLM.append_rows`) keep that layout; leading columns masked in every row are
then the only waste, and they are dropped.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rlhf_env.engine.slots import BorrowedLayer
from rlhf_env.models.modules import device_of, eval_mode, forward_parameters, positions_from_mask


class IncrementalLM:
    """A causal LM read under ``no_grad`` one token at a time, keeping a KV cache.

    The model is held by reference: if it is being trained, every forward reads its current
    weights (cached keys/values of earlier tokens were computed with the weights of their time).
    With ``with_hidden=True`` each call also leaves the last layer's hidden states of the rows it
    returned logits for in ``last_hidden`` ``(B, H)`` (for a value head).

    Example:
        >>> lm = IncrementalLM(model)
        >>> logits = lm.start(input_ids, attention_mask)   # (B, V), next-token logits
        >>> logits = lm.extend(next_tokens)                # (B, V), after appending (B,) tokens
        >>> logits = lm.append_rows(rows, ids, mask)       # (k, V), after (k, U) more tokens
    """

    def __init__(
        self, model: torch.nn.Module, with_hidden: bool = False, shared_layers: int = 0
    ) -> None:
        self.model = model
        self.with_hidden = with_hidden
        self.shared_layers = shared_layers
        self.last_hidden: torch.Tensor | None = None
        parameters = forward_parameters(model)
        self._accepts_logits_to_keep = "logits_to_keep" in parameters
        # transformers renamed ``past_key_values`` to ``cache``; use whichever this one takes.
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None  # (B, T) over cache + current tokens
        self._next_position: torch.Tensor | None = None  # (B,)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return device_of(self.model)

    def _forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache | None = None,
        attention_mask: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits ``(B, V)`` float32 at column ``last`` ``(B,)`` of the input
        (the last column when ``None``); the cache and mask are this object's unless given."""
        cache = self.cache if cache is None else cache
        attention_mask = self.attention_mask if attention_mask is None else attention_mask
        for layer in cache.layers[: self.shared_layers]:
            layer.seen = attention_mask.shape[1] - input_ids.shape[1]
        kwargs = {self._cache_argument: cache}
        keep = 1 if last is None else input_ids.shape[1] - int(last.min())
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = keep
        with torch.no_grad(), eval_mode(self.model):
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                output_hidden_states=self.with_hidden,
                **kwargs,
            )
        if last is None:
            if self.with_hidden:
                self.last_hidden = output.hidden_states[-1][:, -1]  # (B, H)
            return output.logits[:, -1].float()  # (B, V)
        batch = torch.arange(input_ids.shape[0], device=last.device)
        if self.with_hidden:
            self.last_hidden = output.hidden_states[-1][batch, last]  # (B, H)
        logits = output.logits  # (B, kept, V)
        return logits[batch, last - (input_ids.shape[1] - logits.shape[1])].float()  # (B, V)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode left-padded contexts ``(B, T)``; returns next-token logits ``(B, V)``, float32."""
        # Full-attention layers for every model (no config): sliding-window models keep every
        # token too and apply their windows through their masks, so rows can be spliced.
        self.cache = self._new_cache()
        self.attention_mask = attention_mask.clone()
        positions = positions_from_mask(attention_mask)  # (B, T)
        self._next_position = positions[:, -1] + 1  # (B,)
        return self._forward(input_ids, positions)

    def extend(self, tokens: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
        """Append one token per row ``(B,)``; returns the next-token logits ``(B, V)``.

        ``live`` (bool ``(B,)``) marks the rows that really advance; the others get a masked-out
        placeholder column and keep their positions (use it for rows about to be replaced).
        """
        if self.cache is None or self.attention_mask is None or self._next_position is None:
            raise RuntimeError("IncrementalLM.extend() called before start()")
        if live is None:
            column = self.attention_mask.new_ones((tokens.shape[0], 1))  # (B, 1)
            positions = self._next_position
        else:
            column = live.to(self.attention_mask.dtype).unsqueeze(-1)  # (B, 1)
            positions = torch.where(live, self._next_position, 0)  # (B,)
        self.attention_mask = torch.cat([self.attention_mask, column], dim=1)  # (B, T + 1)
        logits = self._forward(tokens.unsqueeze(-1), positions.unsqueeze(-1))
        self._next_position = self._next_position + column.squeeze(-1)
        return logits

    def replace_rows(
        self, rows: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Start new contexts ``(k, P)`` in ``rows`` ``(k,)`` without re-running the other rows.

        The new rows are encoded on their own, then their keys and values are written
        right-aligned into the batch cache. Returns their next-token logits ``(k, V)``.
        """
        fresh = IncrementalLM(self.model, self.with_hidden, self.shared_layers)
        logits = fresh.start(input_ids, attention_mask)
        self.splice(rows, fresh)
        return logits

    def replace_rows_from_prefix(
        self,
        rows: torch.Tensor,
        prefix: list[tuple[torch.Tensor, torch.Tensor]],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Start ``rows`` ``(k,)`` on a shared prefix followed by their own remainders.

        ``prefix`` holds the prefix's keys and values, ``(1, H, p, D)`` per layer this model
        caches (:meth:`own_states` of a model that started on the prefix alone); the
        remainders are a left-padded block ``(k, U)`` with at least one token a row. The rows
        are built on their own (the prefix broadcast, the remainders appended), then spliced
        in as by :meth:`replace_rows`. Returns their next-token logits ``(k, V)``.
        """
        count, length = input_ids.shape[0], prefix[0][0].shape[2]
        fresh = IncrementalLM(self.model, self.with_hidden, self.shared_layers)
        fresh.cache = fresh._new_cache(
            [(keys.expand(count, -1, -1, -1), values.expand(count, -1, -1, -1))
             for keys, values in prefix]
        )  # fmt: skip
        fresh.attention_mask = attention_mask.new_ones((count, length))
        fresh._next_position = torch.full((count,), length, device=input_ids.device)
        every = torch.arange(count, device=input_ids.device)
        logits = fresh.append_rows(every, input_ids, attention_mask)
        self.splice(rows, fresh)
        return logits

    def own_states(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values ``(B, H, T, D)`` of each layer this model caches (not the
        borrowed ones of a shared trunk)."""
        if self.cache is None:
            raise RuntimeError("IncrementalLM.own_states() called before start()")
        return [(layer.keys, layer.values) for layer in _full_attention_layers(self.cache)]

    def copy_rows(self, sources: torch.Tensor, targets: torch.Tensor) -> None:
        """Give rows ``targets`` ``(k,)`` the contexts of rows ``sources`` ``(k,)`` of this
        batch: their cache columns, masks and positions."""
        if self.cache is None or self.attention_mask is None or self._next_position is None:
            raise RuntimeError("IncrementalLM.copy_rows() called before start()")
        for layer in _full_attention_layers(self.cache):
            layer.keys[targets] = layer.keys[sources]
            layer.values[targets] = layer.values[sources]
        self.attention_mask[targets] = self.attention_mask[sources]
        self._next_position[targets] = self._next_position[sources]
        self._trim()  # the targets' old contexts may have been the only ones in some columns

    def begin(self, num_rows: int, device: torch.device) -> None:
        """An empty batch of ``num_rows`` contexts, for rows to be spliced in (every row must
        be before a step)."""
        self.cache = None
        self.attention_mask = torch.zeros((num_rows, 0), dtype=torch.long, device=device)
        self._next_position = torch.zeros(num_rows, dtype=torch.long, device=device)

    def splice(self, rows: torch.Tensor, fresh: IncrementalLM) -> None:
        """Write the contexts of ``fresh`` (``k`` rows) into ``rows`` ``(k,)`` of this batch,
        right-aligned; the other rows are untouched."""
        if self.attention_mask is None or self._next_position is None:
            raise RuntimeError("IncrementalLM.splice() called before start() or begin()")
        assert fresh.cache is not None and fresh.attention_mask is not None
        self.last_hidden = fresh.last_hidden
        new_layers = _full_attention_layers(fresh.cache)
        if self.cache is None:  # after begin(): empty layers shaped as the fresh ones
            rows_total = self.attention_mask.shape[0]
            self.cache = self._new_cache(
                [(keys.new_zeros((rows_total, *keys.shape[1:2], 0, keys.shape[3])),
                  values.new_zeros((rows_total, *values.shape[1:2], 0, values.shape[3])))
                 for keys, values in ((layer.keys, layer.values) for layer in new_layers)]
            )  # fmt: skip
        new_length = fresh.attention_mask.shape[1]
        self._left_pad_to(new_length)
        length = self.attention_mask.shape[1]
        for layer, new_layer in zip(_full_attention_layers(self.cache), new_layers, strict=True):
            for name in ("keys", "values"):
                states = getattr(layer, name)  # (B, H, T, D)
                states[rows] = 0
                states[rows, :, length - new_length :] = getattr(new_layer, name)
        self.attention_mask[rows] = 0
        self.attention_mask[rows, length - new_length :] = fresh.attention_mask
        self._next_position[rows] = fresh._next_position
        self._trim()

    def append_rows(
        self, rows: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Append tokens to the contexts of ``rows`` ``(k,)``: ``input_ids`` ``(k, U)``
        left-padded, ``attention_mask`` ``(k, U)`` 1 on the real tokens (at least one per row).
        Returns the next-token logits ``(k, V)`` after each row's last new token.

        One forward over the ``k`` rows (their cache rows gathered, positions continuing each
        row's), the block turned real-tokens-first so that each row's context stays contiguous;
        then every row of the batch cache grows by ``U`` columns: the ``k`` rows by their new
        tokens, each shifted right by its block's padding, the others by masked columns on
        the left (the layout of the module docstring). Other rows' logits are not computed.
        """
        if self.cache is None or self.attention_mask is None or self._next_position is None:
            raise RuntimeError("IncrementalLM.append_rows() called before start()")
        width = input_ids.shape[1]
        mask = attention_mask.bool()
        counts = mask.sum(dim=1)  # (k,) real tokens per row
        columns = torch.arange(width, device=input_ids.device)  # (U,)
        # Real tokens first: column j of row r is column j + pad_r (mod U) of the block.
        pads = width - counts  # (k,)
        gather = (columns + pads[:, None]) % width  # (k, U)
        input_ids = input_ids.gather(1, gather)  # (k, U), padding last
        new_mask = (columns < counts[:, None]).to(self.attention_mask.dtype)  # (k, U)
        # Positions go on from each row's; padding columns repeat the last real one.
        first = self._next_position[rows]  # (k,)
        positions = first[:, None] + torch.minimum(columns, counts[:, None] - 1)  # (k, U)
        layers = _full_attention_layers(self.cache)
        cache = self._new_cache([(layer.keys[rows], layer.values[rows]) for layer in layers])
        mask_rows = torch.cat([self.attention_mask[rows], new_mask], dim=1)  # (k, T + U)
        logits = self._forward(input_ids, positions, cache, mask_rows, last=counts - 1)
        # Shift each appended row right by its padding, so its new tokens end the cache.
        total = mask_rows.shape[1]
        source = (torch.arange(total, device=pads.device) - pads[:, None]) % total  # (k, T + U)
        self._left_pad_to(total)  # every row: U masked columns on the left
        for layer, new_layer in zip(layers, _full_attention_layers(cache), strict=True):
            for name in ("keys", "values"):
                states = getattr(new_layer, name)  # (k, H, T + U, D)
                index = source[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
                getattr(layer, name)[rows] = states.gather(2, index)
        self.attention_mask[rows] = mask_rows.gather(1, source)
        self._next_position[rows] = first + counts
        self._trim()
        return logits

    def _new_cache(
        self, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> DynamicCache:
        """A cache of this model's layers (holding ``data``, one ``(keys, values)`` per layer
        from ``shared_layers`` on), borrowed layers below."""
        cache = DynamicCache() if data is None else DynamicCache(ddp_cache_data=data)
        cache.layers[:0] = [BorrowedLayer() for _ in range(self.shared_layers)]
        return cache

    def _left_pad_to(self, length: int) -> None:
        """Grow the cache and mask with masked-out columns on the left to at least ``length``."""
        assert self.cache is not None and self.attention_mask is not None
        missing = length - self.attention_mask.shape[1]
        if missing <= 0:
            return
        for layer in _full_attention_layers(self.cache):
            for name in ("keys", "values"):
                states = getattr(layer, name)  # (B, H, T, D)
                setattr(layer, name, torch.nn.functional.pad(states, (0, 0, missing, 0)))
        self.attention_mask = torch.nn.functional.pad(self.attention_mask, (missing, 0))

    def _trim(self) -> None:
        """Drop leading columns that are padding in every row (views: no copy)."""
        assert self.cache is not None and self.attention_mask is not None
        first = int(self.attention_mask.any(dim=0).int().argmax())
        if first == 0:
            return
        for layer in _full_attention_layers(self.cache):
            layer.keys = layer.keys[:, :, first:]
            layer.values = layer.values[:, :, first:]
        self.attention_mask = self.attention_mask[:, first:]

    @property
    def length(self) -> int:
        """Columns in the cache (the longest context in the batch, plus placeholders)."""
        return 0 if self.attention_mask is None else int(self.attention_mask.shape[1])

    def release(self) -> None:
        """Drop the KV cache and masks so their memory can be freed."""
        self.cache = None
        self.attention_mask = None
        self._next_position = None
        self.last_hidden = None


def _full_attention_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's own layers (not borrowed), which must all be plain full-attention
    ``DynamicLayer`` s."""
    layers = [layer for layer in cache.layers if not isinstance(layer, BorrowedLayer)]
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(
                f"per-row cache replacement supports attention layers only, got "
                f"{type(layer).__name__}; linear-attention (recurrent) models are not supported "
                "by the environments yet"
            )
    return layers
