"""Checksums of what a benchmark path computed: the tokens it chose and their log-probs.

Not a benchmark: a helper of the scripts whose paths must compute the same thing (the env
with and without KV caches, the dynamic and static engines, a dialogue and its re-encoding).
Each such script writes one checksum per path under ``"checksums"`` in its JSON and prints
whether they agree; ``tests/test_benchmarks.py`` compares them: the token digests exactly, the
sums to a float tolerance. The work stays outside the timed regions (the paths keep the
arrays they compute anyway; the digests are taken afterwards).

    >>> checksum([[5, 7]], logprob=[[-1.0, -2.5]])
    {'tokens': '2b35247441bbc018', 'token_count': 2, 'logprob_sum': -3.5}
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def checksum(tokens: Any, **values: Any) -> dict[str, Any]:
    """``{"tokens": digest, "token_count": n, "<name>_sum": float, ...}`` of ``tokens`` (token
    ids in the path's order, any shape: the shape is part of the digest) and, per keyword,
    an array of one float per token (``logprob=``, ``ref_logprob=``, ``kl=``, ``value=``)."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    digest = hashlib.sha256(repr(tokens.shape).encode() + tokens.tobytes()).hexdigest()[:16]
    result: dict[str, Any] = {"tokens": digest, "token_count": int(tokens.size)}
    for name, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        if array.shape != tokens.shape:
            raise ValueError(
                f"{name} has shape {array.shape}, the tokens {tokens.shape}: pass one value "
                "per token"
            )
        result[f"{name}_sum"] = float(array.sum())
    return result


def agreement(checksums: dict[str, dict[str, Any]], paths: list[str]) -> str:
    """One line saying whether ``paths`` chose the same tokens, and the largest difference of
    each sum between them (for the scripts' printout; the tests compare for themselves)."""
    present = [path for path in paths if path in checksums]
    if len(present) < 2:
        return f"checksums: {', '.join(present) or 'none'} (nothing to compare)"
    first = checksums[present[0]]
    same = all(checksums[path]["tokens"] == first["tokens"] for path in present)
    spreads = []
    for key in [key for key in first if key.endswith("_sum")]:
        values = [checksums[path][key] for path in present if key in checksums[path]]
        if len(values) == len(present):
            spreads.append(f"{key} {max(values) - min(values):.1e}")
    tokens = "same tokens" if same else "DIFFERENT TOKENS"
    differences = ", ".join(spreads) or "-"
    return f"checksums of {', '.join(present)}: {tokens}; largest differences: {differences}"


def divergence(first: Any, second: Any) -> dict[str, Any]:
    """Where two rollouts of the same prompts first drew different tokens, episode by episode.

    ``first`` and ``second`` hold ``prompt_ids``, ``continuation_ids``, ``action_mask`` and
    ``logprobs`` (``rlhf_agents.Rollout``'s, tensors or arrays). Returns ``{"episodes",
    "same_episodes", "max_logprob_gap_before", "diverged": [{"episode", "at", "logprobs"}]}``:
    ``max_logprob_gap_before`` is the largest log-prob difference over every token the two
    drew alike before their first difference (the two computations' agreement, which does not
    depend on the draws), ``at`` the index of the first differing response token and
    ``logprobs`` the two differing tokens' own (None past a response's end).

    Raises:
        ValueError: the rollouts start from other prompts (they are not runs of the same work).
    """
    arrays = [
        {name: _numpy(getattr(rollout, name)) for name in _ROLLOUT_FIELDS}
        for rollout in (first, second)
    ]
    if not np.array_equal(arrays[0]["prompt_ids"], arrays[1]["prompt_ids"]):
        raise ValueError("the rollouts start from different prompts: nothing to compare")
    diverged, gap = [], 0.0
    episodes = len(arrays[0]["prompt_ids"])
    for episode in range(episodes):
        masks = [a["action_mask"][episode].astype(bool) for a in arrays]
        ids = [a["continuation_ids"][episode][m] for a, m in zip(arrays, masks, strict=True)]
        logprobs = [a["logprobs"][episode][m] for a, m in zip(arrays, masks, strict=True)]
        common = min(len(ids[0]), len(ids[1]))
        differ = np.flatnonzero(ids[0][:common] != ids[1][:common])
        at = int(differ[0]) if len(differ) else common
        if at:
            gap = max(gap, float(np.abs(logprobs[0][:at] - logprobs[1][:at]).max()))
        if at < max(len(ids[0]), len(ids[1])):
            drawn = [round(float(lp[at]), 3) if at < len(lp) else None for lp in logprobs]
            diverged.append({"episode": episode, "at": at, "logprobs": drawn})
    return {
        "episodes": episodes,
        "same_episodes": episodes - len(diverged),
        "max_logprob_gap_before": gap,
        "diverged": diverged,
    }


_ROLLOUT_FIELDS = ("prompt_ids", "continuation_ids", "action_mask", "logprobs")


def _numpy(value: Any) -> np.ndarray:
    """A tensor (on any device) or array as a numpy array."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
