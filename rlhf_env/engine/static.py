"""The static engine: fixed-shape KV caches and one compiled step for policy, reference and KL.

A per-token environment on a GPU is bound by kernel launches, not by arithmetic: two 30-layer
forwards issue hundreds of small kernels per token. This engine keeps every shape fixed so that
the whole step (both forwards, both log-softmaxes, the KL and the log-probs of the taken
tokens) is one ``torch.compile`` graph, replayed as one CUDA graph on CUDA
(``mode="reduce-overhead"``); on CPU the same graph is compiled in the default mode (optional,
``compile_step=True``), and the eager step already avoids the dynamic engine's per-step cache
reallocation.

## Layout and invariants

State lives on the device, in tensors allocated once (their addresses never change, so a
captured graph reads them in place):

- per model and layer, keys and values ``(C, kv_heads, L, head_dim)`` (:mod:`.slots`), with
  ``C`` the batch bucket (the number of rows rounded up, :func:`batch_bucket`) and ``L`` the
  number of slots (the environments' observation length: ``max_prompt_tokens`` plus
  ``max_new_tokens``, or ``max_total_tokens`` in dialogue mode);
- ``positions`` ``(C,)``: the position of each row's next token, which is also the slot it
  writes next (its write slot; a host copy, ``_host_lengths``, sizes windows and checks
  lengths without reading the device);
- the next-token logits of both models ``(C, V)``, the step's inputs (tokens, advance mask)
  and its outputs (KL and log-probs ``(3, C)``).

1. Keys are cached after the rotary embedding (or carry no position at all, as in GPT-2), and
   attention is a sum over keys, so only which slots a row attends to matters, which the
   mask says.
2. Slot ``s`` of row ``r`` holds the token at position ``s`` of its context, for
   ``s < positions[r]``: a context is a prefix of its row's slots, whatever was appended when.
   Slots from ``positions[r]`` on hold leftovers (of earlier contexts, padding, paused steps)
   that no real token attends to. A context has at most ``L - 1`` tokens (the environments
   guarantee it; ``start``, ``append`` and ``step`` refuse more with a ``ValueError``), so
   every row's write slot exists. No validity or per-slot position tensor is needed: the
   mask is a comparison of slot indices with positions.
3. A step writes every row's key and value into its own write slot (one indexed copy along the
   slots); the rows that advance then move their position on by one, the others (rows that
   finished, rows about to be reset, the bucket's padding rows) keep their positions, contexts
   and logits, so a row can pause and go on: what they wrote lies beyond their context and is
   overwritten by their next write. Each query attends to the slots up to its own position
   (its context and itself), so no row is ever fully masked.
4. Starting rows on new prompts (the prefill, outside the graph, batched) runs the models on
   the prompts alone and writes the real tokens of row ``r`` into slots ``[0, n_r)``,
   whatever its left padding (padding columns write slot ``n_r``, beyond the context); its
   position becomes ``n_r``. The other rows' caches, and the graph, are untouched.
5. Appending tokens to some rows (``append``, outside the graph, batched: one forward of each
   model over those ``k`` rows) writes row ``r``'s ``U_r`` real tokens of a left-padded block
   ``(k, U)`` into slots ``p_r .. p_r + U_r - 1`` (``p_r`` its position: real column ``j``
   goes to ``p_r + j - (U - U_r)``; padding columns write ``p_r + U_r``, the row's next write
   slot, beyond its context). The block's tokens attend over those rows' first
   ``max(p_r + U_r) + 1`` slots (gathered), through a ``(k, 1, U, ·)`` mask built like the
   step's: a query in slot ``q`` attends to the slots up to ``q``, that is the context and
   the block up to itself (a padding query, in ``p_r + U_r``, to the whole row: never to
   nothing; no real query sees a padding key). The block's last column is every row's last
   real token, so one column of logits is kept.
6. Sliding-window layers attend to the slots within the window of the query's position:
   ``slot > position - window`` (a slot's position is its index), as Hugging Face's masks do.
7. The compiled step attends over all ``L`` slots (fixed shapes); the eager step only over
   the prefix of slots up to the longest context's write slot, and copies the new logits
   without the select when every row advances: the same numbers, less work.

8. A shared trunk (``frozen:N``, :class:`rlhf_env.models.trunk.SharedTrunk`): the engine
   steps views of the two models in which the policy's block ``N - 1`` records its output
   and the reference's bottom blocks are skipped, its block ``N - 1`` returning that output.
   The policy's forward always runs first (prefill, append and step alike, in the graph
   too). The reference's storage has no tensors for the shared layers (its ``first_layer``
   is ``N``): its caches hold :class:`~rlhf_env.engine.slots.BorrowedLayer` s there, never
   written, and the shared blocks' keys and values live once, in the policy's storage.

9. A prefix cache (:mod:`rlhf_env.engine.prefix`): starting rows whose prompts begin with a
   cached prefix of ``p`` tokens writes its keys and values into their slots ``0 .. p - 1``
   (the states a prefill writes there: slot = position), puts their positions at ``p``, and
   appends their remainders (invariant 5); a new prefix is first prefilled alone in one of
   the rows it serves and read back from its slots. Rows started together on the same whole
   prompt are started once: the first of them as above, the others get copies of its slots,
   position and logits.

Why per-row write slots: each row writes at its own position, so appending ``U`` tokens to
some rows (a dialogue's inserted user turn) moves those rows alone, no context ever wraps
around, and the step is an indexed copy and a comparison. With one write pointer shared by
every row (a ring buffer), a row's context sits just behind the pointer, so an append to some
rows would move every other row's context by ``U`` slots, and rows appending at different
steps would overflow the ring.

Parameters are read in place by the graph: optimiser steps are seen at once. Anything that
reallocates them is picked up too: a new module structure or dtype makes dynamo trace again,
and a parameter at a new address makes torch's CUDA-graph trees record again (they check the
addresses of parameters at every replay).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from rlhf_env.engine.attention import ONE_TOKEN_ATTENTION, attention_implementation
from rlhf_env.engine.blocks import check_block
from rlhf_env.engine.layout import FULL, AttentionLayout, attention_layout
from rlhf_env.engine.prefix import (
    PrefixCache,
    PrefixStates,
    plan_starts,
    split_duplicates,
    weights_version,
)
from rlhf_env.engine.slots import (
    Index,
    SlotStorage,
    StepWindow,
    append_cache,
    prefill_cache,
    stepping_cache,
)
from rlhf_env.kl import KLEstimator, check_kl_estimator, kl_and_logprobs
from rlhf_env.models.loading import vocab_size_of
from rlhf_env.models.modules import device_of, eval_mode, forward_parameters, positions_from_mask
from rlhf_env.models.trunk import SharedTrunk

#: Batch sizes the step is compiled for; a batch is padded up to the next one (then to a
#: multiple of 128), so that engines of nearby sizes share shapes.
BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def batch_bucket(rows: int) -> int:
    """The smallest bucket that holds ``rows`` rows."""
    if rows < 1:
        raise ValueError(f"an engine needs at least one row, got {rows}")
    for bucket in BATCH_BUCKETS:
        if rows <= bucket:
            return bucket
    return -(-rows // 128) * 128


class _SteppedModel:
    """One model the engine steps: the module, its attention layout, its storage and cache
    (none for its bottom ``first_layer`` layers when another model computes them)."""

    def __init__(
        self, module: torch.nn.Module, rows: int, slots: int, first_layer: int = 0
    ) -> None:
        self.module = module
        self.layout: AttentionLayout = attention_layout(module)
        self.storage = SlotStorage(int(module.config.num_hidden_layers), rows, slots, first_layer)
        parameters = forward_parameters(module)
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.step_cache = None  # built once the storage is allocated

    def forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        """Next-token logits ``(B, V)`` float32 at the last position."""
        output = self.module(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_argument: cache},
        )
        return output.logits[:, -1].float()


class StaticEngine:
    """Policy and reference stepped one token at a time over ``num_rows`` rows, with fixed
    shapes and (optionally) one compiled step; see the module docstring for the design.

    Args:
        policy: the causal LM being trained (read under ``no_grad``, in place).
        reference: the frozen reference; the policy itself for KL = 0 (one forward).
        num_rows: rows stepped together (the vector env's ``num_envs``; 1 for the single env).
        num_slots: cache slots per row; a row's context must stay below it.
        kl_estimator: ``"k1"``, ``"k3"`` or ``"full"`` (see :mod:`rlhf_env.kl`).
        compile_step: compile the step with ``torch.compile`` (CUDA graphs on CUDA);
            ``None`` = on CUDA only. A compile failure falls back to the eager step with a
            warning.
        share_trunk: when policy and reference share their bottom blocks (``frozen:N``,
            detected by :func:`~rlhf_env.models.trunk.shared_trunk_depth`), compute them once
            per prefill, step and append, in the policy's forward, and start the reference's
            from their output; their keys and values are cached once, in the policy's
            storage. ``trunk.depth`` says how many blocks are shared (0: none).
        prefix_cache: start rows whose prompts share a prefix from its keys and values,
            computed once (:mod:`rlhf_env.engine.prefix`); ``None``: prefill every row whole.

    Raises:
        UnsupportedModelError: an architecture the engine cannot step (the message names it).

    Example:
        >>> engine = StaticEngine(policy, reference, num_rows=4, num_slots=64)
        >>> engine.start(np.arange(4), input_ids, attention_mask)   # (4, P) left-padded
        >>> stats = engine.step(tokens, advance)   # (3, 4): KL, log pi, log pi_ref of tokens
        >>> engine.policy_logits                   # (4, V) for the contexts with the tokens
        >>> engine.append(np.array([1, 3]), turn_ids, turn_mask)   # (2, U) more context
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module,
        num_rows: int,
        num_slots: int,
        kl_estimator: KLEstimator = "k1",
        compile_step: bool | None = None,
        share_trunk: bool = True,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.num_rows = int(num_rows)
        self.capacity = batch_bucket(self.num_rows)
        self.num_slots = int(num_slots)
        if self.num_slots < 2:
            raise ValueError(f"num_slots must be >= 2, got {num_slots}")
        self.kl_estimator = check_kl_estimator(kl_estimator)
        self.device = device_of(policy)
        if reference is not policy and device_of(reference) != self.device:
            raise ValueError(
                f"the reference is on {device_of(reference)}, the policy on {self.device}; "
                "put both on one device"
            )
        self.trunk = SharedTrunk(policy, reference, share_trunk)
        self.prefix_cache = prefix_cache
        self._policy = _SteppedModel(self.trunk.policy, self.capacity, self.num_slots)
        self._reference = None
        if reference is not policy:
            self._reference = _SteppedModel(
                self.trunk.reference, self.capacity, self.num_slots, self.trunk.depth
            )
        rows, slots, device = self.capacity, self.num_slots, self.device
        vocab = vocab_size_of(policy)
        self._host_lengths = np.zeros(rows, dtype=np.int64)  # ``_positions`` on host
        self._advance_host = np.zeros(0, dtype=bool)  # the step's advance mask, on host
        self._window = StepWindow()  # the slots the eager step attends over (invariant 7)
        self._slot_index = torch.arange(slots, device=device)  # (L,)
        self._row_index = torch.arange(rows, device=device)  # (C,)
        # The next position of each row, and its write slot (invariant 2).
        self._positions = torch.zeros(rows, dtype=torch.long, device=device)
        self._tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self._advance = torch.zeros(rows, dtype=torch.bool, device=device)
        self._stats = torch.zeros(3, rows, dtype=torch.float32, device=device)
        self._policy_logits = torch.zeros(rows, vocab, dtype=torch.float32, device=device)
        self._reference_logits = self._policy_logits
        if self._reference is not None:
            self._reference_logits = torch.zeros_like(self._policy_logits)
        # The shared trunk's output at every slot of every row, when kept (keep_trunk_states),
        # and which rows hold it for every token of their contexts.
        self._trunk_states: torch.Tensor | None = None  # (C, L, H)
        self._trunk_complete = np.zeros(rows, dtype=bool)
        for tensor in self._state_tensors():
            torch._dynamo.mark_static_address(tensor)
        if compile_step is None:
            compile_step = device.type == "cuda"
        self._compiled: Callable[[], None] | None = self._compile() if compile_step else None
        self._warmed_up = False
        self._started = False

    # -- what the environments use ------------------------------------------------------------

    @property
    def policy_logits(self) -> torch.Tensor:
        """The policy's next-token logits ``(num_rows, V)``, float32 (a view, updated in place
        by every step: clone it to keep it)."""
        return self._policy_logits[: self.num_rows]

    @property
    def reference_logits(self) -> torch.Tensor:
        """The reference's next-token logits ``(num_rows, V)`` (the policy's when the
        reference is the policy)."""
        return self._reference_logits[: self.num_rows]

    @property
    def compiled(self) -> bool:
        """Whether steps run through the compiled graph (False when compiling is off or
        failed)."""
        return self._compiled is not None

    def keep_trunk_states(self, depth: int) -> bool:
        """From now on keep the output of the shared trunk (the policy's block ``depth - 1``)
        for every token each row holds, for :meth:`trunk_states`; an update under
        ``frozen:depth`` then starts from it instead of running the frozen blocks again.
        Returns ``False`` (and keeps nothing) when the engine shares no trunk of that depth.
        Costs ``num_rows x num_slots x hidden_size`` numbers, and a write per token."""
        if depth <= 0 or depth != self.trunk.depth:
            return False
        if self._trunk_states is None:
            embeddings = self._policy.module.get_input_embeddings().weight
            self._trunk_states = torch.zeros(
                (self.capacity, self.num_slots, embeddings.shape[1]),
                dtype=embeddings.dtype, device=self.device,
            )  # fmt: skip
            torch._dynamo.mark_static_address(self._trunk_states)
            self._trunk_complete[:] = False
            if self._compiled is not None:  # the step writes it: trace the step again
                self._compiled, self._warmed_up = self._compile(), False
        return True

    def trunk_states(self) -> list[torch.Tensor] | None:
        """Per row, the shared trunk's output ``(n, H)`` for the ``n`` tokens of its context,
        in order (what :meth:`keep_trunk_states` kept); ``None`` when nothing is kept or some
        row lacks them (it started from a prefix cached before, whose trunk output was not
        kept). Views into the engine's buffer: the next start, step or append overwrites
        them."""
        if self._trunk_states is None or not self._trunk_complete[: self.num_rows].all():
            return None
        lengths = self._host_lengths[: self.num_rows]
        return [self._trunk_states[row, : int(n)] for row, n in enumerate(lengths)]

    def start(
        self, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Start ``rows`` ``(k,)`` on new left-padded contexts ``(k, P)``; other rows go on.
        With a prefix cache, rows whose prompts begin with a shared prefix get its keys and
        values written in (invariant 9) and only their remainders prefilled."""
        rows = check_block(rows, input_ids, attention_mask, self.num_rows, "start")
        width = int(input_ids.shape[1])
        if width >= self.num_slots:
            raise ValueError(
                f"a context of {width} tokens does not fit the engine's {self.num_slots} slots"
            )
        self._check_devices()
        if self.prefix_cache is None:
            self._prefill(rows, input_ids, attention_mask)
            return
        self.prefix_cache.check_version(weights_version(*self._modules()))
        first, sources, targets = split_duplicates(input_ids, attention_mask)
        distinct, input_ids, attention_mask = rows[first], input_ids[first], attention_mask[first]
        plain, groups = plan_starts(self.prefix_cache, distinct, input_ids, attention_mask)
        if plain.size:
            self._prefill(distinct[plain], input_ids[plain], attention_mask[plain])
        for group in groups:
            group_rows = distinct[group.rows]
            computed = group.states is None
            if computed:
                group.states = self._prefix_states(group_rows[0], group.tokens)
                self.prefix_cache.put(group.tokens, group.states)
            self._write_prefix(group_rows, group.states, len(group.tokens))
            if self._trunk_states is not None:  # the prefix's trunk output, if just computed
                self._copy_trunk(group_rows[:1], group_rows[1:], len(group.tokens))
                self._trunk_complete[group_rows] = computed
            self.append(group_rows, group.remainder_ids, group.remainder_mask)
        if targets.size:
            self._copy_rows(rows[sources], rows[targets])
            self.prefix_cache.copies += len(targets)

    def _copy_rows(self, sources: np.ndarray, targets: np.ndarray) -> None:
        """Give ``targets`` ``(k,)`` the contexts of ``sources`` ``(k,)``: their keys and
        values in every model's storage, positions and next-token logits (invariant 9)."""
        span = int(self._host_lengths[sources].max())
        source = torch.as_tensor(sources, dtype=torch.long, device=self.device)
        target = torch.as_tensor(targets, dtype=torch.long, device=self.device)
        for model in self._models():
            storage = model.storage
            for i in range(storage.first_layer, len(storage.keys)):
                storage.keys[i][target, :, :span] = storage.keys[i][source, :, :span]
                storage.values[i][target, :, :span] = storage.values[i][source, :, :span]
        for _, logits in self._models_and_logits():
            logits[target] = logits[source]
        self._positions[target] = self._positions[source]
        self._host_lengths[targets] = self._host_lengths[sources]
        if self._trunk_states is not None:
            self._copy_trunk(sources, targets, span)
            self._trunk_complete[targets] = self._trunk_complete[sources]

    def _copy_trunk(self, sources: np.ndarray, targets: np.ndarray, span: int) -> None:
        """Copy the kept trunk output of slots ``0 .. span - 1`` from ``sources`` (one row, or
        one per target) to ``targets``."""
        assert self._trunk_states is not None
        if targets.size:
            source = torch.as_tensor(sources, dtype=torch.long, device=self.device)
            target = torch.as_tensor(targets, dtype=torch.long, device=self.device)
            self._trunk_states[target, :span] = self._trunk_states[source, :span]

    def _prefix_states(self, row: int, tokens: tuple[int, ...]) -> list[PrefixStates]:
        """Prefill ``tokens`` alone in ``row`` (a row about to start) and read their keys and
        values back, per model and layer it caches."""
        ids = torch.tensor([tokens], dtype=torch.long)
        self._prefill(np.array([row]), ids, torch.ones_like(ids))
        states = []
        for model in self._models():
            storage, length = model.storage, len(tokens)
            states.append([
                (storage.keys[i][row : row + 1, :, :length].clone(),
                 storage.values[i][row : row + 1, :, :length].clone())
                for i in range(storage.first_layer, len(storage.keys))
            ])  # fmt: skip
        return states

    def _write_prefix(self, rows: np.ndarray, states: list[PrefixStates], length: int) -> None:
        """Write a prefix's keys and values into slots ``0 .. length - 1`` of ``rows`` and put
        their positions after it (invariant 9)."""
        row_index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        for model, model_states in zip(self._models(), states, strict=True):
            storage = model.storage
            for i, (keys, values) in enumerate(model_states, start=storage.first_layer):
                storage.keys[i][row_index, :, :length] = keys
                storage.values[i][row_index, :, :length] = values
        self._positions[row_index] = length
        self._host_lengths[rows] = length

    def _prefill(
        self, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Prefill ``rows`` on their whole contexts (invariant 4)."""
        width = int(input_ids.shape[1])
        lengths = attention_mask.sum(dim=1).cpu().numpy()  # (k,) real tokens per row
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        # The rows, and slots 0..n_r-1 for row r's n_r real tokens (invariant 4): as ranges
        # where they are (rows 0..k-1, no padding), so writes are views.
        row_index: Index = slice(0, len(rows))
        if not np.array_equal(rows, np.arange(len(rows))):
            row_index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        slots: Index = slice(0, width)
        if np.any(lengths < width):
            first = torch.zeros(len(rows), dtype=torch.long, device=self.device)
            slots = _block_slots(first, attention_mask)  # (k, P)
        positions = positions_from_mask(attention_mask)  # (k, P)
        with torch.no_grad():
            for model, logits in self._models_and_logits():
                cache = prefill_cache(model.storage, row_index, slots)
                with eval_mode(model.module):
                    logits[row_index] = model.forward(input_ids, attention_mask, positions, cache)
                if model.step_cache is None:
                    model.step_cache = stepping_cache(model.storage, self._positions, self._window)
            self._keep_trunk(rows, slots)
            self.trunk.done()
            self._positions[row_index] = attention_mask.sum(dim=1)
        self._host_lengths[rows] = lengths
        self._trunk_complete[rows] = True
        self._started = True

    def _keep_trunk(self, rows: np.ndarray, slots: Index) -> None:
        """Write the trunk output of a prefill or append of ``rows`` ``(k,)`` (the handoff's
        ``(k, U, H)``) into its slots, ``(k, U)`` or a range, when it is kept."""
        if self._trunk_states is None:
            return
        hidden = self.trunk.handoff.take()
        row_index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if isinstance(slots, slice):
            self._trunk_states[row_index, slots] = hidden
        else:
            self._trunk_states[row_index[:, None], slots] = hidden

    def append(
        self, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Append tokens to the contexts of ``rows`` ``(k,)``: ``input_ids`` ``(k, U)``
        left-padded, ``attention_mask`` ``(k, U)`` 1 on the real tokens (at least one per row).

        Afterwards ``policy_logits`` / ``reference_logits`` of those rows are the next-token
        logits after their last appended token; the other rows, their caches and logits are
        untouched. Appended tokens are observations, not actions: no statistics. One forward
        of each model over the ``k`` rows, attending over their cached contexts (invariant 5).

        Raises:
            RuntimeError: called before ``start``.
            ValueError: a row would hold more than ``num_slots - 1`` tokens, or the arguments
                do not match (the message says which).
        """
        if not self._started:
            raise RuntimeError("StaticEngine.append() called before start()")
        rows = check_block(rows, input_ids, attention_mask, self.num_rows, "append")
        counts = attention_mask.sum(dim=1).cpu().numpy()  # (k,) real tokens per row
        lengths = self._host_lengths[rows] + counts  # (k,) contexts afterwards
        _check_room(rows, counts, lengths, self.num_slots)
        self._check_devices()
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        row_index = torch.as_tensor(rows, dtype=torch.long, device=self.device)  # (k,)
        slots = _block_slots(self._positions[row_index], attention_mask)  # (k, U)
        # The rows' contexts, the block and its padding's slot: a prefix of the slots.
        span = int(lengths.max()) + 1
        with torch.no_grad():
            masks_by_layout = {}
            for model, logits in self._models_and_logits():
                if model.layout not in masks_by_layout:
                    masks_by_layout[model.layout] = self._masks(model.layout, slots, span)
                cache = append_cache(model.storage, row_index, slots, span)
                with eval_mode(model.module):
                    logits[row_index] = model.forward(
                        input_ids, masks_by_layout[model.layout], slots, cache
                    )
            self._keep_trunk(rows, slots)
            self.trunk.done()
            self._positions[row_index] += attention_mask.sum(dim=1)
        self._host_lengths[rows] = lengths

    def step(self, tokens: np.ndarray, advance: np.ndarray) -> np.ndarray:
        """KL and log-probs of ``tokens`` ``(num_rows,)`` under the current next-token
        distributions, then append them to the rows where ``advance`` ``(num_rows,)`` is set.

        Returns ``(3, num_rows)`` float64: per-token KL (the engine's estimator), ``log pi``
        and ``log pi_ref`` of the tokens. One device-to-host copy; rows that do not advance
        keep their contexts and their logits.
        """
        if not self._started:
            raise RuntimeError("StaticEngine.step() called before start()")
        n = self.num_rows
        advance = np.asarray(advance, dtype=bool)
        full = advance & (self._host_lengths[:n] >= self.num_slots - 1)
        if np.any(full):
            row = int(np.flatnonzero(full)[0])
            raise ValueError(
                f"row {row} already holds {self._host_lengths[row]} tokens, the most the "
                f"engine's {self.num_slots} slots hold; it cannot advance (size num_slots for "
                "the longest context)"
            )
        self._tokens[:n].copy_(torch.as_tensor(tokens, dtype=torch.long))
        self._advance[:n].copy_(torch.from_numpy(advance))
        self._advance_host = advance
        with torch.no_grad():
            if np.any(advance):
                self._run_step()
                self._host_lengths[:n] += advance
            else:  # nothing to append: the statistics alone
                self._stats.copy_(self._token_stats())
        return self._stats[:, :n].double().cpu().numpy()

    def release(self) -> None:
        """Free the KV caches (the next ``start`` allocates them again; a compiled step then
        records its graph again for the new addresses)."""
        for model in self._models():
            storage = model.storage
            model.storage = SlotStorage(
                len(storage.keys), self.capacity, self.num_slots, storage.first_layer
            )
            model.step_cache = None
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        self._started = False

    # -- the step -------------------------------------------------------------------------------

    def _token_stats(self) -> torch.Tensor:
        """``(3, C)``: KL, ``log pi`` and ``log pi_ref`` of the step's tokens."""
        return kl_and_logprobs(
            self.kl_estimator, self._policy_logits, self._reference_logits, self._tokens
        )

    def _step_graph(self) -> None:
        """The whole step, traced as one graph: statistics of the tokens, then both forwards,
        each row writing at its position (invariant 3), then the positions advance."""
        self._stats.copy_(self._token_stats())
        span = self._window.span
        length = None if span is None else span.stop  # (invariant 7)
        tokens, positions = self._tokens[:, None], self._positions[:, None]  # (C, 1)
        advancing = self._advance[:, None]  # (C, 1)
        masks_by_layout = {}
        for model, logits in self._models_and_logits():
            if model.layout not in masks_by_layout:
                masks_by_layout[model.layout] = self._masks(model.layout, positions, length)
            masks = masks_by_layout[model.layout]
            new_logits = model.forward(tokens, masks, positions, model.step_cache)  # (C, V)
            if self._window.every_row_advances:  # eager shortcut (invariant 7)
                logits.copy_(new_logits)
            else:
                logits.copy_(torch.where(advancing, new_logits, logits))
        if self._trunk_states is not None:  # every row at its write slot, as its keys
            hidden = self.trunk.handoff.take()[:, 0]  # (C, H)
            self._trunk_states[self._row_index, self._positions] = hidden
        self._positions.add_(self._advance.long())

    def _masks(self, layout: AttentionLayout, query_slots: torch.Tensor, length: int | None):
        """The model's 4-D masks ``(B, 1, Q, L')`` for queries in ``query_slots`` ``(B, Q)``
        over the first ``length`` slots (all when ``None``): each query attends to the slots
        up to its own (invariants 3 and 5), within the window on sliding layers (invariant
        6). One tensor, or one per kind of layer."""
        slots = self._slot_index if length is None else self._slot_index[:length]  # (L',)
        query = query_slots[:, :, None]  # (B, Q, 1)
        attend = slots <= query  # (B, Q, L')
        masks = {}
        for kind in layout.kinds:
            allowed = attend
            if kind != FULL:  # sliding window (invariant 6)
                allowed = attend & (slots > query - layout.sliding_window)
            mask = allowed[:, None]  # (B, 1, Q, L')
            if layout.additive:
                mask = torch.zeros(mask.shape, device=mask.device).masked_fill(
                    ~mask, torch.finfo(torch.float32).min
                )
            masks[kind] = mask
        return masks if layout.as_mapping else masks[layout.kinds[0]]

    def _run_step(self) -> None:
        # Boolean-mask (sdpa) models attend through one_token_attention in the step: each
        # cached key and value is read once, also under torch.compile (see .attention).
        sdpa_models = [model.module for model in self._models() if not model.layout.additive]
        with (
            eval_mode(self._policy.module),
            eval_mode(self._reference_module()),
            attention_implementation(sdpa_models, ONE_TOKEN_ATTENTION),
        ):
            if self._compiled is None:
                self._eager_step()
            elif self._warmed_up:
                self._compiled()
            else:
                self._warm_up(self._compiled)
        self.trunk.done()

    def _eager_step(self) -> None:
        """The step without compiling, over the slots up to the longest context's write slot
        (invariant 7)."""
        self._window.span = slice(0, int(self._host_lengths.max()) + 1)
        self._window.every_row_advances = bool(self._advance_host.all())
        try:
            self._step_graph()
        finally:
            self._window.span, self._window.every_row_advances = None, False

    def _compile(self) -> Callable[[], None]:
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(self._step_graph, fullgraph=True, dynamic=False, mode=mode)

    def _warm_up(self, compiled: Callable[[], None]) -> None:
        """The first compiled call: trace, compile (and on CUDA record the graph), with a
        message; a failure falls back to the eager step, once, with a warning."""
        what = "policy" if self._reference is None else "policy + reference"
        print(
            f"rlhf_env: compiling the static engine's step ({what}, {self.capacity} rows x "
            f"{self.num_slots} slots, {self.device.type}); once per engine, this can take a "
            "minute",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        try:
            compiled()
        except Exception as error:  # any compiler failure: the eager step is exact
            warnings.warn(
                f"torch.compile failed for the static engine's step ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); stepping eagerly "
                "(same results, slower). Pass compile_step=False to skip compiling.",
                RuntimeWarning,
                stacklevel=4,
            )
            self._compiled = None
            self._eager_step()
        else:
            print(
                f"rlhf_env: static step ready in {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        self._warmed_up = True

    # -- helpers --------------------------------------------------------------------------------

    def _check_devices(self) -> None:
        for model in self._models():
            if device_of(model.module) != self.device:
                raise RuntimeError(
                    f"a model moved from {self.device} to {device_of(model.module)} after the "
                    "environment was built; build the environment again on the new device"
                )

    def _modules(self) -> list[torch.nn.Module]:
        return [model.module for model in self._models()]

    def _models(self) -> list[_SteppedModel]:
        return [self._policy] + ([] if self._reference is None else [self._reference])

    def _models_and_logits(self) -> list[tuple[_SteppedModel, torch.Tensor]]:
        pairs = [(self._policy, self._policy_logits)]
        if self._reference is not None:
            pairs.append((self._reference, self._reference_logits))
        return pairs

    def _reference_module(self) -> torch.nn.Module:
        return self._policy.module if self._reference is None else self._reference.module

    def _state_tensors(self) -> list[torch.Tensor]:
        return [
            self._slot_index, self._row_index, self._positions, self._tokens, self._advance,
            self._stats, self._policy_logits, self._reference_logits,
        ]  # fmt: skip


def _block_slots(first: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The slots ``(k, U)`` of a left-padded block of tokens ``attention_mask`` ``(k, U)`` for
    rows whose next slots are ``first`` ``(k,)``: the real tokens in ``first, first + 1, ...``,
    the padding in the slot after the last of them (invariants 4 and 5)."""
    mask = attention_mask.bool()
    counts = mask.sum(dim=1, keepdim=True)  # (k, 1)
    offsets = torch.where(mask, mask.long().cumsum(dim=1) - 1, counts)  # (k, U)
    return first[:, None] + offsets


def _check_room(rows: np.ndarray, counts: np.ndarray, lengths: np.ndarray, slots: int) -> None:
    """A ``ValueError`` for a row appended past ``slots - 1`` tokens."""
    if np.any(lengths > slots - 1):
        i = int(np.flatnonzero(lengths > slots - 1)[0])
        raise ValueError(
            f"appending {counts[i]} tokens to row {rows[i]} makes its context "
            f"{lengths[i]} tokens, over the {slots - 1} that the engine's {slots} slots hold; "
            "size num_slots for the longest context"
        )
