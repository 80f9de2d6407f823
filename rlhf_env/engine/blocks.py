"""The checks both engines make of a block of tokens for some rows (``start``, ``append``)."""

from __future__ import annotations

import numpy as np
import torch


def check_block(
    rows: np.ndarray,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_rows: int,
    what: str,
) -> np.ndarray:
    """``rows`` as int64 ``(k,)``, after checking that ``input_ids`` and ``attention_mask``
    are ``(k, T)`` and that the rows are distinct and within ``[0, num_rows)``; ``what`` names
    the caller in the ``ValueError``. For ``append`` every row must have a token."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if input_ids.dim() != 2 or tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"{what}() takes input_ids and attention_mask of one shape (rows, tokens), got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    if len(rows) != input_ids.shape[0]:
        raise ValueError(f"{what}() got {len(rows)} rows but {input_ids.shape[0]} token rows")
    if len(np.unique(rows)) != len(rows) or np.any((rows < 0) | (rows >= num_rows)):
        raise ValueError(f"{what}() needs distinct rows in [0, {num_rows}), got {rows.tolist()}")
    if what == "append":
        empty = np.flatnonzero(~attention_mask.bool().any(dim=1).cpu().numpy())
        if empty.size:
            raise ValueError(
                f"append() got no token for row {rows[empty[0]]}: its attention_mask must have "
                "at least one 1 (leave rows with nothing to append out of rows)"
            )
    return rows
