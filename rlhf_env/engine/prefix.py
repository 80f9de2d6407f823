"""The prompt-prefix cache: rows whose prompts start with the same tokens prefill them once.

Prompts share long prefixes: a task's system message and worked examples before a short
problem (Arithmetic: 121 of 132 tokens), a chat template's header, the ``group_size`` copies of
one prompt an RLOO round starts together. An engine with a :class:`PrefixCache` starts the rows
of one ``start`` call whose whole prompts are the same once (:func:`split_duplicates`): the
first of them is started, then its keys, values, position and logits are copied into the
others. It starts those distinct rows in two parts: it writes a prefix's keys and values,
computed once, into every row that begins with it, then appends each row's remainder as a
block of tokens (its ``append``, the dialogue turns' path), which attends over the prefix and
yields the row's next-token logits. Positions are those of a whole prefill (the prefix at 0,
1, ...), so the numbers are the same up to floating-point summation order.

:func:`plan_starts` decides, for the rows of one ``start`` call, which prefix each row takes:
the longest cached prefix of its prompt, else the longest common prefix of the rows that found
none and begin with the same ``min_tokens`` tokens (when there are ``min_rows`` or more), else
its longest common prefix with one of the ``recent`` prompts started before (so that rows
restarted one at a time, and the single env, share prefixes too); at least ``min_tokens``
tokens in every case. A prefix is always shorter than the prompt (the remainder gives the
logits). The cache keeps
the states of recent prefixes, least recently used evicted first, at most ``max_tokens``
tokens in all; every entry is dropped when any weight of the models changes (an optimiser
step: the policy's states of a prefix depend on its weights), which :func:`weights_version`
detects.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: One model's keys and values of a prefix: per layer it caches, ``(1, kv_heads, p, head_dim)``.
PrefixStates = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StartGroup:
    """Rows that start from one prefix: ``tokens`` (the prefix), the ``rows`` ``(k,)`` and
    their remainders as a left-padded block ``(k, U)`` with its mask; ``states`` are the
    prefix's (one :data:`PrefixStates` per model), or ``None`` when it must be computed."""

    tokens: tuple[int, ...]
    rows: np.ndarray
    remainder_ids: torch.Tensor
    remainder_mask: torch.Tensor
    states: list[PrefixStates] | None


class PrefixCache:
    """Keys and values of recently used prompt prefixes, by their token ids (LRU).

    Args:
        max_tokens: the most prefix tokens held in all (each token costs, per layer a model
            caches, ``2 x kv_heads x head_dim`` numbers).
        min_tokens: the shortest prefix worth sharing.
        min_rows: the fewest rows of one start call that a new prefix must serve together.
        recent: how many recently started prompts a row that starts without such company is
            compared with (its longest common prefix with one of them becomes a new prefix).
    """

    def __init__(
        self, max_tokens: int = 1024, min_tokens: int = 16, min_rows: int = 2, recent: int = 16
    ) -> None:
        if max_tokens < min_tokens or min_tokens < 1 or min_rows < 1:
            raise ValueError(
                f"need 1 <= min_tokens <= max_tokens and min_rows >= 1, got max_tokens="
                f"{max_tokens}, min_tokens={min_tokens}, min_rows={min_rows}"
            )
        self.max_tokens, self.min_tokens, self.min_rows = max_tokens, min_tokens, min_rows
        self._entries: OrderedDict[tuple[int, ...], list[PrefixStates]] = OrderedDict()
        self._version: int | None = None
        self.recent: deque[list[int]] = deque(maxlen=recent)  # prompts started lately
        self.hits = self.misses = 0  # rows started from a cached / a newly computed prefix
        self.copies = 0  # rows started as copies of a row with the same prompt
        self.evictions = 0

    @property
    def tokens(self) -> int:
        """Prefix tokens held now."""
        return sum(len(key) for key in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tokens: Sequence[int]) -> bool:
        return tuple(tokens) in self._entries

    def check_version(self, version: int) -> None:
        """Drop every entry if the models' weights changed since the entries were made."""
        if version != self._version:
            self._entries.clear()
            self._version = version

    def longest(self, tokens: Sequence[int]) -> tuple[int, ...] | None:
        """The longest cached prefix strictly shorter than ``tokens`` that starts it."""
        matches = [
            key for key in self._entries
            if len(key) < len(tokens) and tuple(tokens[: len(key)]) == key
        ]  # fmt: skip
        return max(matches, key=len, default=None)

    def get(self, key: tuple[int, ...]) -> list[PrefixStates]:
        """The states of ``key`` (marked as just used)."""
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: tuple[int, ...], states: list[PrefixStates]) -> None:
        """Keep ``states`` under ``key``, evicting the least recently used entries beyond
        ``max_tokens`` (a prefix longer than that is not kept)."""
        if len(key) > self.max_tokens:
            return
        self._entries[key] = states
        self._entries.move_to_end(key)
        while self.tokens > self.max_tokens:
            self._entries.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (and forget the recent prompts)."""
        self._entries.clear()
        self.recent.clear()


def weights_version(*models: torch.nn.Module) -> int:
    """A number that changes whenever a parameter of ``models`` is modified in place (an
    optimiser step, ``load_state_dict``) or replaced: the sum of the parameters' version
    counters and identities."""
    total = 0
    for model in models:
        for parameter in model.parameters():
            total += parameter._version + id(parameter)
    return total


def plan_starts(
    cache: PrefixCache, rows: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[np.ndarray, list[StartGroup]]:
    """Split the rows of a ``start`` call: ``(plain, groups)``, the positions (into ``rows``)
    of the rows to prefill whole (sorted), and the :class:`StartGroup` s of the others (cached
    prefixes first, then new ones: see the module docstring)."""
    prompts = real_tokens(input_ids, attention_mask)
    chosen: dict[tuple[int, ...], list[int]] = {}
    missing = []
    for position, prompt in enumerate(prompts):
        key = cache.longest(prompt)
        if key is None:
            missing.append(position)
        else:
            chosen.setdefault(key, []).append(position)
    # New prefixes: the rows that found none, by their first min_tokens tokens; each bucket
    # of min_rows or more shares its longest common prefix.
    buckets: dict[tuple[int, ...], list[int]] = {}
    for position in missing:
        buckets.setdefault(tuple(prompts[position][: cache.min_tokens]), []).append(position)
    missing = []
    for positions in buckets.values():
        key = common_prefix([prompts[i] for i in positions])
        if len(positions) >= cache.min_rows and len(key) >= cache.min_tokens:
            chosen[key] = positions
        else:
            missing += positions
    # The rest: the longest prefix each shares with a recently started prompt.
    alone = []
    for position in missing:
        shared = [common_prefix([prompts[position], recent]) for recent in cache.recent]
        key = max(shared, key=len, default=())
        if len(key) >= cache.min_tokens:
            chosen.setdefault(key, []).append(position)
        else:
            alone.append(position)
    cache.recent.extend(prompts)
    groups = []
    for key, positions in chosen.items():
        remainders = [prompts[i][len(key) :] for i in positions]
        ids, mask = _left_padded(remainders, input_ids.device)
        states = cache.get(key) if key in cache else None
        if states is None:
            cache.misses += len(positions)
        else:
            cache.hits += len(positions)
        groups.append(StartGroup(key, np.asarray(positions), ids, mask, states))
    return np.asarray(sorted(alone), dtype=np.int64), groups


def split_duplicates(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, sources, targets)``: the positions of the first row of each distinct prompt
    (sorted), and for every other row its position (``targets``) and that of the first row
    with the same prompt (``sources``); an engine starts the first rows and copies their
    states into the others."""
    first_of: dict[tuple[int, ...], int] = {}
    sources, targets = [], []
    for position, prompt in enumerate(real_tokens(input_ids, attention_mask)):
        source = first_of.setdefault(tuple(prompt), position)
        if source != position:
            sources.append(source)
            targets.append(position)
    first = np.asarray(sorted(first_of.values()), dtype=np.int64)
    return first, np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def real_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """Each row's tokens where ``attention_mask`` is 1, as lists (one copy to the host)."""
    return [
        ids[mask.bool()].tolist()
        for ids, mask in zip(input_ids.cpu(), attention_mask.cpu(), strict=True)
    ]


def common_prefix(prompts: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The longest common prefix of ``prompts``, shorter than the shortest of them."""
    if not prompts:
        return ()
    shortest = min(len(prompt) for prompt in prompts) - 1
    length = 0
    while length < shortest and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return tuple(int(token) for token in prompts[0][:length])


def _left_padded(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)
