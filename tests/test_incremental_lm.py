"""The KV-cached stepping engine against full re-encoding, with ragged rows and row swaps."""

from __future__ import annotations

import pytest
import torch

from rlhf_env.engine.incremental import IncrementalLM


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _reference_logits(model, contexts: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(torch.tensor([c])).logits[0, -1] for c in contexts])


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_ragged_rows_and_row_replacement_match_full_recomputation(request, model_name):
    """Tolerance: 1e-4 absolute on float32 logits."""
    model = request.getfixturevalue(model_name)
    lm = IncrementalLM(model)
    contexts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    logits = lm.start(*_left_pad(contexts, pad=1))
    torch.testing.assert_close(logits, _reference_logits(model, contexts), atol=1e-4, rtol=0)
    generator = torch.Generator().manual_seed(0)
    for step in range(8):
        tokens = torch.randint(20, 300, (3,), generator=generator)
        live = torch.tensor([True, step % 3 != 1, True])
        logits = lm.extend(tokens, live=live)
        for row in range(3):
            if live[row]:
                contexts[row].append(int(tokens[row]))
        if step in (2, 5):  # swap in a new, longer context for row 1, and a short one for row 2
            new = [[30 + step, 31, 32, 33, 34, 35, 36, 37, 38, 39], [40 + step]]
            new_logits = lm.replace_rows(torch.tensor([1, 2]), *_left_pad(new, pad=1))
            contexts[1], contexts[2] = new
            logits[1:] = new_logits
        live_rows = [r for r in range(3) if live[r] or step in (2, 5)]
        torch.testing.assert_close(
            logits[live_rows],
            _reference_logits(model, [contexts[r] for r in live_rows]),
            atol=1e-4,
            rtol=0,
        )
    assert lm.length <= max(map(len, contexts)) + 8  # leading all-padding columns are trimmed
