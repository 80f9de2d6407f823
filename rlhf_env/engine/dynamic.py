"""The dynamic engine: Hugging Face ``DynamicCache`` s that grow by one column per step.

It steps any causal LM whose forward takes a cache, positions and a 2-D attention mask (every
Hugging Face decoder), with no compilation: the choice for architectures the static engine does
not support, and a reference to test the static engine against. Appending ``U`` tokens to some
rows (``append``, a dialogue's next turn) grows every row's cache by ``U`` columns, masked out
for the other rows and dropped once no row needs them (:mod:`.incremental` keeps each context
contiguous, so sliding windows stay exact).
"""

from __future__ import annotations

import numpy as np
import torch

from rlhf_env.engine.blocks import check_block
from rlhf_env.engine.incremental import IncrementalLM
from rlhf_env.engine.prefix import (
    PrefixCache,
    PrefixStates,
    plan_starts,
    split_duplicates,
    weights_version,
)
from rlhf_env.kl import KLEstimator, check_kl_estimator, kl_and_logprobs
from rlhf_env.models.trunk import SharedTrunk


class DynamicEngine:
    """Policy and reference stepped one token at a time over ``num_rows`` rows, with growing
    KV caches (:class:`rlhf_env.engine.incremental.IncrementalLM`); same interface as
    :class:`rlhf_env.engine.StaticEngine`.

    When the reference is the policy module itself its forward is skipped and the policy's
    logits serve for both (the KL is then exactly 0). When the two share their bottom blocks
    (``frozen:N``) and ``share_trunk`` is on, the policy's forward computes them and the
    reference's starts from their output (:class:`rlhf_env.models.trunk.SharedTrunk`); only
    the policy's cache holds their keys and values. ``prefix_cache``: see
    :class:`rlhf_env.engine.StaticEngine`.
    """

    compiled = False

    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module,
        num_rows: int,
        kl_estimator: KLEstimator = "k1",
        share_trunk: bool = True,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.num_rows = int(num_rows)
        self.kl_estimator = check_kl_estimator(kl_estimator)
        self.trunk = SharedTrunk(policy, reference, share_trunk)
        self.prefix_cache = prefix_cache
        self.policy = IncrementalLM(self.trunk.policy)
        self.reference = None
        if reference is not policy:
            self.reference = IncrementalLM(self.trunk.reference, shared_layers=self.trunk.depth)
        self.device = self.policy.device
        self.policy_logits: torch.Tensor | None = None  # (N, V) float32
        self.reference_logits: torch.Tensor | None = None  # (N, V), the policy's if shared

    def start(
        self, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Start ``rows`` ``(k,)`` on new left-padded contexts ``(k, P)``; other rows go on.
        Starting every row builds fresh caches; starting some splices them in. With a prefix
        cache, rows with the same prompt start once (the others copy the first), and rows
        whose prompts begin with a shared prefix start from its keys and values and prefill
        only their remainders."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        rows = np.asarray(rows)
        every_row = len(rows) == self.num_rows
        if not every_row and (self.policy_logits is None or self.reference_logits is None):
            raise RuntimeError("the first start() must start every row")
        plain, groups, copies = np.arange(len(rows)), [], None
        all_rows = rows
        if self.prefix_cache is not None:
            self.prefix_cache.check_version(weights_version(*(lm.model for lm in self._lms())))
            first, sources, targets = split_duplicates(input_ids, attention_mask)
            if targets.size:
                copies = (all_rows[sources], all_rows[targets])
            rows, input_ids, attention_mask = rows[first], input_ids[first], attention_mask[first]
            plain, groups = plan_starts(self.prefix_cache, rows, input_ids, attention_mask)
        if every_row and not groups and copies is None:
            order = torch.as_tensor(np.argsort(rows), device=self.device)
            self.policy_logits, self.reference_logits = self._both(
                IncrementalLM.start, input_ids[order], attention_mask[order]
            )
            return
        if every_row:  # built in parts: plain rows and prefix groups spliced into empty caches
            for lm in self._lms():
                lm.begin(self.num_rows, self.device)
        pieces = []
        if plain.size:
            row_index = torch.as_tensor(rows[plain], dtype=torch.long, device=self.device)
            logits = self._both(
                IncrementalLM.replace_rows, row_index, input_ids[plain], attention_mask[plain]
            )
            pieces.append((row_index, logits))
        for group in groups:
            if group.states is None:
                group.states = self._prefix_states(group.tokens)
                self.prefix_cache.put(group.tokens, group.states)
            row_index = torch.as_tensor(rows[group.rows], dtype=torch.long, device=self.device)
            logits = []
            try:
                for lm, states in zip(self._lms(), group.states, strict=True):
                    logits.append(
                        lm.replace_rows_from_prefix(
                            row_index, states, group.remainder_ids, group.remainder_mask
                        )
                    )
            finally:
                self.trunk.done()
            pieces.append((row_index, (logits[0], logits[-1])))
        if every_row:
            vocab = pieces[0][1][0].shape[-1]
            self.policy_logits = torch.zeros(self.num_rows, vocab, device=self.device)
            self.reference_logits = self.policy_logits
            if self.reference is not None:
                self.reference_logits = torch.zeros_like(self.policy_logits)
        for row_index, (policy_logits, reference_logits) in pieces:
            self.policy_logits[row_index] = policy_logits
            if self.reference is not None:
                self.reference_logits[row_index] = reference_logits
        if copies is not None:
            self._copy_rows(*copies)
            self.prefix_cache.copies += len(copies[1])

    def _copy_rows(self, sources: np.ndarray, targets: np.ndarray) -> None:
        """Give rows ``targets`` ``(k,)`` the contexts and logits of rows ``sources``."""
        source = torch.as_tensor(sources, dtype=torch.long, device=self.device)
        target = torch.as_tensor(targets, dtype=torch.long, device=self.device)
        for lm in self._lms():
            lm.copy_rows(source.to(lm.device), target.to(lm.device))
        assert self.policy_logits is not None and self.reference_logits is not None
        self.policy_logits[target] = self.policy_logits[source]
        if self.reference is not None:
            self.reference_logits[target] = self.reference_logits[source]

    def _prefix_states(self, tokens: tuple[int, ...]) -> list[PrefixStates]:
        """Each model's keys and values of ``tokens`` alone (one row), per layer it caches."""
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        states = []
        try:
            for lm in self._lms():
                fresh = IncrementalLM(lm.model, shared_layers=lm.shared_layers)
                fresh.start(ids, torch.ones_like(ids))
                states.append(fresh.own_states())
        finally:
            self.trunk.done()
        return states

    def _lms(self) -> list[IncrementalLM]:
        """The policy's and the reference's steppers, in the order a shared trunk needs."""
        return [self.policy] + ([] if self.reference is None else [self.reference])

    def append(
        self, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        """Append tokens to the contexts of ``rows`` ``(k,)``: ``input_ids`` ``(k, U)``
        left-padded, ``attention_mask`` ``(k, U)`` 1 on the real tokens (at least one per row).

        Afterwards ``policy_logits`` / ``reference_logits`` of those rows are the next-token
        logits after their last appended token; the other rows' logits and contexts are
        untouched (their caches gain masked-out columns). No statistics: appended tokens are
        observations, not actions. One forward of each model over the ``k`` rows
        (:meth:`IncrementalLM.append_rows`).

        Raises:
            RuntimeError: called before ``start``.
            ValueError: the arguments do not match (the message says which).
        """
        if self.policy_logits is None or self.reference_logits is None:
            raise RuntimeError("DynamicEngine.append() called before start()")
        rows = check_block(rows, input_ids, attention_mask, self.num_rows, "append")
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        row_index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        policy_logits, reference_logits = self._both(
            IncrementalLM.append_rows, row_index, input_ids, attention_mask
        )
        self.policy_logits[row_index] = policy_logits
        if self.reference is not None:
            self.reference_logits[row_index] = reference_logits

    def step(self, tokens: np.ndarray, advance: np.ndarray) -> np.ndarray:
        """KL and log-probs ``(3, num_rows)`` float64 of ``tokens`` under the current
        distributions, then append them to the rows where ``advance`` is set (the others get a
        masked-out placeholder column and keep their positions and logits; rows about to be
        restarted, as in the environments; with sliding-window layers a row that pauses and
        goes on is not exact, since windows count cache columns)."""
        if self.policy_logits is None or self.reference_logits is None:
            raise RuntimeError("DynamicEngine.step() called before start()")
        token_tensor = torch.as_tensor(tokens, dtype=torch.long).to(self.device)
        stats = kl_and_logprobs(
            self.kl_estimator, self.policy_logits, self.reference_logits, token_tensor
        )  # (3, N), queued before the forwards below replace the logits
        if np.all(advance):
            self.policy_logits, self.reference_logits = self._both(
                IncrementalLM.extend, token_tensor, None
            )
        elif np.any(advance):
            live = torch.as_tensor(advance).to(self.device)
            policy_logits, reference_logits = self._both(IncrementalLM.extend, token_tensor, live)
            keep = ~live[:, None]  # (N, 1): rows that wait keep their logits
            self.policy_logits = torch.where(keep, self.policy_logits, policy_logits)
            self.reference_logits = (
                self.policy_logits
                if self.reference is None
                else torch.where(keep, self.reference_logits, reference_logits)
            )
        return stats.double().cpu().numpy()  # one device sync per step

    def keep_trunk_states(self, depth: int) -> bool:
        """``False``: this engine does not keep the shared trunk's output (the static engine
        does; see :meth:`rlhf_env.engine.StaticEngine.keep_trunk_states`)."""
        return False

    def trunk_states(self) -> None:
        """``None``: nothing kept (see :meth:`keep_trunk_states`)."""
        return None

    def release(self) -> None:
        """Drop both KV caches (and the prefix cache's states)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        self.policy.release()
        if self.reference is not None:
            self.reference.release()
        self.policy_logits = self.reference_logits = None

    @property
    def length(self) -> int:
        """Columns in the caches (the longest context, plus placeholders)."""
        lengths = [self.policy.length] + ([] if self.reference is None else [self.reference.length])
        return max(lengths)

    def _both(self, method, *args: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``method`` of the policy, then of the reference on the same arguments (the order
        a shared trunk needs)."""
        policy_logits = method(self.policy, *args)
        if self.reference is None:
            return policy_logits, policy_logits
        moved = [None if a is None else a.to(self.reference.device) for a in args]
        try:
            return policy_logits, method(self.reference, *moved).to(policy_logits.device)
        finally:
            self.trunk.done()
