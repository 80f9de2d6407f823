"""Reward functions by the name a command line or a config file gives."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_env.rewards.base import RewardFunction
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.oracles import ORACLES, make_oracle


def load_reward(spec: str | Path, device: str | torch.device | None = None) -> RewardFunction:
    """A gold oracle by name (``"vader"``, ``"textblob"``) or a reward model saved in a folder
    (by :meth:`RewardModel.save_pretrained`, e.g. ``rlhf-env train-rm``)."""
    if str(spec) in ORACLES:
        return make_oracle(str(spec))
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"reward {str(spec)!r} is neither an oracle ({', '.join(ORACLES)}) nor a "
            "reward-model folder written by train-rm"
        )
    return RewardModel.from_pretrained(spec, device=device)
