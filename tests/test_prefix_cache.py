"""The prompt-prefix cache: which rows take which prefix, its bound, and the environments with
it on against it off. The engines' exactness with it (every architecture, both engines,
restarts, appends, evictions, weight changes) is in ``test_engines.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_same_traces, frozen_pair, roll, vector_env

from rlhf_env.engine.prefix import PrefixCache, plan_starts


def _block(*prompts: list[int]) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return np.arange(len(prompts)), ids, mask


def test_rows_take_the_longest_cached_prefix_else_a_new_common_one():
    cache = PrefixCache(max_tokens=64, min_tokens=3)
    cache.put((1, 2, 3), [[]])
    cache.put((1, 2, 3, 4, 5), [[]])
    rows, ids, mask = _block([1, 2, 3, 4, 5, 6], [1, 2, 3, 9], [7, 7, 7, 7, 8], [7, 7, 7, 7, 9],
                             [1, 2, 3, 4, 5])  # fmt: skip
    plain, groups = plan_starts(cache, rows, ids, mask)
    by_prefix = {group.tokens: group for group in groups}
    assert plain.tolist() == []
    assert by_prefix[(1, 2, 3, 4, 5)].rows.tolist() == [0]
    # Row 4 is the prefix itself: it takes the shorter one (a remainder must be left).
    assert by_prefix[(1, 2, 3)].rows.tolist() == [1, 4]
    new = by_prefix[(7, 7, 7, 7)]
    assert new.rows.tolist() == [2, 3] and new.states is None
    assert new.remainder_ids.tolist() == [[8], [9]] and new.remainder_mask.tolist() == [[1], [1]]
    group = by_prefix[(1, 2, 3)]
    assert group.remainder_ids.tolist() == [[0, 9], [4, 5]]  # left-padded
    assert group.remainder_mask.tolist() == [[0, 1], [1, 1]]
    assert (cache.hits, cache.misses) == (3, 2)


def test_a_new_prefix_needs_enough_rows_and_tokens():
    cache = PrefixCache(max_tokens=64, min_tokens=4, min_rows=2)
    plain, groups = plan_starts(cache, *_block([5, 6, 7, 8, 9, 1]))  # one row
    assert plain.tolist() == [0] and groups == []
    plain, groups = plan_starts(cache, *_block([5, 6, 7, 1], [5, 6, 7, 2]))  # 3 tokens
    assert plain.tolist() == [0, 1] and groups == []
    plain, groups = plan_starts(cache, *_block([5, 6, 7, 8, 1], [5, 6, 7, 8, 2], [3, 4]))
    assert plain.tolist() == [2] and [g.tokens for g in groups] == [(5, 6, 7, 8)]


def test_rows_started_one_at_a_time_share_a_prefix_with_recent_prompts():
    """The single env, or staggered restarts: a row alone finds its longest common prefix
    with the prompts started before it (16 at most), and the next row reuses it."""
    cache = PrefixCache(max_tokens=64, min_tokens=3, recent=2)
    assert plan_starts(cache, *_block([1, 2, 3, 4, 5]))[0].tolist() == [0]  # nothing before
    plain, groups = plan_starts(cache, *_block([1, 2, 3, 4, 9, 9]))
    assert plain.tolist() == [] and [g.tokens for g in groups] == [(1, 2, 3, 4)]
    cache.put((1, 2, 3, 4), [[]])  # as the engine does after computing it
    plain, groups = plan_starts(cache, *_block([1, 2, 3, 4, 7]))
    assert groups[0].states is not None and cache.hits == 1
    plan_starts(cache, *_block([8, 8, 8, 8]))
    plan_starts(cache, *_block([6, 6, 6, 6]))  # [1, 2, 3, ...] are no longer recent
    assert plan_starts(cache, *_block([1, 2, 3, 5, 5]))[0].tolist() == [0]


def test_the_cache_keeps_its_bound_and_evicts_the_least_recently_used():
    cache = PrefixCache(max_tokens=9, min_tokens=1)
    cache.put((1, 2, 3, 4), [[]])
    cache.put((5, 6, 7), [[]])
    cache.get((1, 2, 3, 4))  # used: (5, 6, 7) is now the oldest
    cache.put((8, 9, 10), [[]])
    assert (5, 6, 7) not in cache and (1, 2, 3, 4) in cache and cache.tokens == 7
    assert cache.evictions == 1
    cache.put(tuple(range(10)), [[]])  # longer than the bound: not kept
    assert len(cache) == 2
    cache.check_version(1)  # the weights changed: everything goes
    assert len(cache) == 0
    with pytest.raises(ValueError, match="min_tokens"):
        PrefixCache(max_tokens=4, min_tokens=8)


#: Prompts that share a 41-token prefix (the tiny tokenizer's).
PREFIXED = [
    "Here is what a viewer wrote about the film after seeing it twice: " + ending
    for ending in ("This movie was", "I think the acting", "The plot of", "Honestly, the music")
]


@pytest.mark.parametrize("mode", ["NextStep", "SameStep", "Disabled"])
def test_vector_env_with_every_sharing_on_equals_it_off(tokenizer, mode):
    """frozen:2 on the 4-block tiny Llama, prompts with a common 41-token prefix: under every
    autoreset mode, 30 steps of 4 rows (started together, then one by one) give the same
    observations, flags, rewards and KL (1e-5) with the prefix cache and the shared trunk on
    as with both off, and the rows restarted alone reuse the cached prefix."""
    policy, reference = frozen_pair("llama", tokenizer, depth=2)
    traces, caches = [], []
    for on in (True, False):
        venv = vector_env(
            tokenizer, policy=policy, reference=reference, prompts=PREFIXED, num_envs=4,
            max_new_tokens=5, max_prompt_tokens=64, autoreset_mode=mode, share_trunk=on,
            prefix_cache=on,
        )  # fmt: skip
        caches.append(venv.engine.prefix_cache)
        traces.append(roll(venv, steps=30, seed=0))
    first_start = caches[0].misses + caches[0].copies  # distinct prompts, and rows copied
    assert caches[1] is None and first_start >= 4 and caches[0].hits >= 8
    assert_same_traces(*traces)
