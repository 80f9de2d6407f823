"""Preallocated key/value storage for the static engine, and the cache layers that write into it.

One :class:`SlotStorage` per model holds, for every layer, keys and values of fixed shape
``(rows, kv_heads, slots, head_dim)``. Slot ``s`` of a row holds the token at position ``s`` of
the row's context (see :mod:`.static`: each row has its own write slot, its next position).
Three Hugging Face cache layers write into it:

- :class:`StepLayer` for the one-token step: each row writes its new key and value into its
  own write slot (``write_slots`` ``(rows,)``, a device tensor: one ``index_copy_`` over the
  flattened rows, heads and slots, as cheap on CPU as the write into one shared slot it
  replaced; a ``scatter_`` along the slots costs 4x more) and attends over the slots through
  the mask the engine passes;
- :class:`PrefillLayer` for starting rows on new prompts: it writes the prompts' keys and values
  of the given rows into the given slots and returns the prompts' own states, so the prefill
  attends over the prompt only (its mask is built by the model from the 2-D padding mask);
- :class:`AppendLayer` for appending tokens to some rows' contexts: it writes the new keys and
  values of those rows into their slots and returns those rows' first slots (a copy), which
  the new tokens attend over through the engine's mask.

All implement the public ``transformers.cache_utils.CacheLayerMixin`` interface; the model
calls ``Cache.update(key, value, layer_idx)`` and never sees the storage.

A model whose bottom blocks another model computes for it (a shared trunk, see
:mod:`rlhf_env.models.trunk`) has no storage for those layers (``first_layer``): its caches
hold a :class:`BorrowedLayer` there, which answers for the layer's sizes and is never written.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotStorage:
    """Keys and values of every layer of one model, ``(rows, kv_heads, slots, head_dim)`` each.

    The tensors are allocated by the first prefill, which sees the shapes and the dtype the
    model produces (bf16 under autocast, for instance), and keep their addresses afterwards (a
    compiled step reads them as static inputs). Later writes are cast to that dtype.
    """

    def __init__(self, num_layers: int, rows: int, slots: int, first_layer: int = 0) -> None:
        self.rows, self.slots = rows, slots
        self.first_layer = first_layer  # layers below it are another model's (a shared trunk)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def allocated(self) -> bool:
        """Every layer of this storage has its tensors (after the first prefill)."""
        return all(keys is not None for keys in self.keys[self.first_layer :])

    def allocate(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Allocate layer ``layer`` shaped after its first states ``(k, kv_heads, P, head_dim)``."""
        heads = keys.shape[1]
        for store, states in ((self.keys, keys), (self.values, values)):
            tensor = states.new_zeros((self.rows, heads, self.slots, states.shape[-1]))
            if not torch.compiler.is_compiling():
                torch._dynamo.mark_static_address(tensor)
            store[layer] = tensor

    def nbytes(self) -> int:
        """Bytes held by the allocated tensors."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


class StepWindow:
    """What the eager one-token step may skip, shared by every layer. ``span``: the slots it
    attends over, all of them (``None``, as in the compiled step) or a prefix ``slice(0, n)``
    that holds every row's context and write slot. ``every_row_advances``: no row keeps its
    old logits."""

    def __init__(self) -> None:
        self.span: slice | None = None
        self.every_row_advances = False


class StepLayer(CacheLayerMixin):
    """One layer's storage for the one-token step: row ``r`` writes at slot ``write_slots[r]``
    (``write_slots`` ``(rows,)``, read at every step) and attends over the slots of
    ``window``; the engine's 4-D mask says which of them each row attends to."""

    is_compileable = True
    is_sliding = False

    def __init__(
        self, storage: SlotStorage, layer: int, write_slots: torch.Tensor, window: StepWindow
    ) -> None:
        super().__init__()
        keys, values = storage.keys[layer], storage.values[layer]
        if keys is None or values is None:
            raise RuntimeError("the slot storage is stepped before any prefill allocated it")
        self.keys, self.values = keys, values
        self.write_slots, self.window = write_slots, window
        rows, heads, slots, _ = keys.shape
        # Where each (row, head) starts in the flattened (rows * heads * slots, head_dim) states.
        self.offsets = torch.arange(rows * heads, device=keys.device).view(rows, heads) * slots
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(self.offsets)
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never needed: the storage is allocated by the prefill."""
        raise RuntimeError("StepLayer storage is allocated by the prefill")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's ``(B, kv_heads, 1, head_dim)`` states into each row's write slot;
        return the window's slots ``(B, kv_heads, L', head_dim)`` (views, no copy)."""
        assert self.keys is not None and self.values is not None
        dim = key_states.shape[-1]
        index = (self.offsets + self.write_slots[:, None]).view(-1)  # (B * kv_heads,)
        for store, states in ((self.keys, key_states), (self.values, value_states)):
            flat = states.reshape(-1, dim).to(store.dtype)  # (B * kv_heads, head_dim)
            store.view(-1, dim).index_copy_(0, index, flat)
        span = self.window.span
        if span is None:
            return self.keys, self.values
        return self.keys[:, :, span], self.values[:, :, span]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Every slot (the mask itself comes from the engine)."""
        return self.get_max_length(), 0

    def get_seq_length(self) -> int:
        """0: positions are always given explicitly, per row."""
        return 0

    def get_max_length(self) -> int:
        """The number of slots."""
        assert self.keys is not None
        return int(self.keys.shape[2])


#: Rows or slots of the storage: a range (written as a view, the common case) or index tensor.
Index = slice | torch.Tensor


def write_rows(tensor: torch.Tensor, rows: Index, slots: Index, states: torch.Tensor) -> None:
    """``tensor[rows, :, slots] = states`` for ``tensor`` ``(B, H, L, D)`` and ``states``
    ``(k, H, P, D)``, through a view where ``rows`` or ``slots`` is a range. ``slots`` is
    ``(P,)`` (the same slots for every row) or ``(k, P)`` (each row its own)."""
    if isinstance(slots, torch.Tensor) and slots.dim() == 2:
        if isinstance(rows, slice):
            rows = torch.arange(tensor.shape[0], device=tensor.device)[rows]
        # (k, 1) and (k, P) broadcast to (k, P) around a slice: (k, P, H, D).
        tensor[rows[:, None], :, slots] = states.transpose(1, 2).to(tensor.dtype)
    elif isinstance(rows, torch.Tensor) and isinstance(slots, torch.Tensor):
        # Advanced indices around a slice put their dimensions first: (k, P, H, D).
        tensor[rows[:, None], :, slots[None, :]] = states.transpose(1, 2).to(tensor.dtype)
    else:
        tensor[rows, :, slots] = states.to(tensor.dtype)


class PrefillLayer(CacheLayerMixin):
    """One layer's prefill writer: stores the prompt states of ``rows`` (``k``) in ``slots``
    (``P``) of the storage and returns the prompt's own states."""

    is_compileable = False
    is_sliding = False

    def __init__(self, storage: SlotStorage, layer: int, rows: Index, slots: Index) -> None:
        super().__init__()
        self.storage, self.layer = storage, layer
        self.rows, self.slots = rows, slots
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the storage tensors of this layer if this is the first prefill."""
        if self.storage.keys[self.layer] is None:
            self.storage.allocate(self.layer, key_states, value_states)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(k, kv_heads, P, head_dim)`` states; return them unchanged for attention."""
        self.lazy_initialization(key_states, value_states)
        for store, states in ((self.storage.keys, key_states), (self.storage.values, value_states)):
            tensor = store[self.layer]
            assert tensor is not None
            write_rows(tensor, self.rows, self.slots, states)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The prompt attends to itself only."""
        return query_length, 0

    def get_seq_length(self) -> int:
        """Nothing before the prompt."""
        return 0

    def get_max_length(self) -> int:
        """No fixed maximum for the prompt's own states."""
        return -1


class AppendLayer(PrefillLayer):
    """One layer's append writer: stores the new states of ``rows`` (``k``) in ``slots``
    (``(k, U)``) and returns those rows' first ``length`` slots, new states included."""

    def __init__(
        self, storage: SlotStorage, layer: int, rows: torch.Tensor, slots: torch.Tensor, length: int
    ) -> None:
        super().__init__(storage, layer, rows, slots)
        self.length = length

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never needed: the storage is allocated by the prefill."""
        raise RuntimeError("AppendLayer storage is allocated by the prefill")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(k, kv_heads, U, head_dim)`` states; return the rows' slots
        ``(k, kv_heads, length, head_dim)`` (a copy) for attention."""
        attended = []
        for store, states in ((self.storage.keys, key_states), (self.storage.values, value_states)):
            tensor = store[self.layer]
            if tensor is None:
                raise RuntimeError("tokens are appended before any prefill allocated the storage")
            write_rows(tensor, self.rows, self.slots, states)
            attended.append(tensor[self.rows, :, : self.length])  # (k, H, length, D)
        return attended[0], attended[1]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The rows' first ``length`` slots (the mask itself comes from the engine)."""
        return self.length, 0


class BorrowedLayer(CacheLayerMixin):
    """A layer another model computes and caches (a shared trunk's): never written; answers
    for its sizes as the layer of a prompt with nothing before it would (``seen`` tokens
    before the query, 0 unless set), for masks the model builds itself."""

    is_compileable = True
    is_sliding = False

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never needed: nothing is stored."""
        raise RuntimeError("a borrowed cache layer stores nothing")

    def update(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Refused: the model that shares the layer computes and caches it."""
        raise RuntimeError(
            "a forward computed a layer whose cache another model keeps (a shared trunk): "
            "run it through its replaying view (rlhf_env.models.trunk)"
        )

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``seen`` tokens and the query."""
        return self.seen + query_length, 0

    def get_seq_length(self) -> int:
        """The ``seen`` tokens."""
        return self.seen

    def get_max_length(self) -> int:
        """No fixed maximum."""
        return -1


def _with_borrowed(storage: SlotStorage, make_layer) -> Cache:
    layers = [
        BorrowedLayer() if i < storage.first_layer else make_layer(i)
        for i in range(len(storage.keys))
    ]
    return Cache(layers=layers)


def stepping_cache(storage: SlotStorage, write_slots: torch.Tensor, window: StepWindow) -> Cache:
    """A cache whose layers step the storage (see :class:`StepLayer`)."""
    return _with_borrowed(storage, lambda i: StepLayer(storage, i, write_slots, window))


def prefill_cache(storage: SlotStorage, rows: Index, slots: Index) -> Cache:
    """A cache whose layers write a prefill into the storage (see :class:`PrefillLayer`)."""
    return _with_borrowed(storage, lambda i: PrefillLayer(storage, i, rows, slots))


def append_cache(
    storage: SlotStorage, rows: torch.Tensor, slots: torch.Tensor, length: int
) -> Cache:
    """A cache whose layers append tokens to rows of the storage (see :class:`AppendLayer`)."""
    return _with_borrowed(storage, lambda i: AppendLayer(storage, i, rows, slots, length))
