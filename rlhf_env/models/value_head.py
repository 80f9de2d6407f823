"""The value head: a scalar state value read off a causal LM's last hidden states."""

from __future__ import annotations

import torch


class ValueHead(torch.nn.Module):
    """``V(s_t) = w . h_t + b``, with ``h_t`` the LM's last hidden state at position ``t``.

    Initialised to zero, so every state starts with value 0 and the first updates are driven by
    the returns alone.

    Example:
        >>> head = ValueHead(hidden_size=64)
        >>> head(torch.zeros(2, 5, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.linear = torch.nn.Linear(self.hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(..., H)`` hidden states to ``(...)`` float32 values."""
        return self.linear(hidden_states.to(self.linear.weight.dtype)).squeeze(-1).float()


def hidden_size_of(model: torch.nn.Module) -> int:
    """The width of ``model``'s hidden states, from its config."""
    config = model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(
        f"cannot read the hidden size from {type(config).__name__}; it has none of "
        "hidden_size, n_embd, d_model"
    )
