"""Training metrics: kept in memory (``agent.history``) and written as TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

from rlhf_env.extras import require

#: Every scalar an update logs, with its meaning. Means are over the update's rollout.
METRICS: dict[str, str] = {
    "rollout/score": "mean reward_fn score of the responses (the learned or gold reward)",
    "rollout/return": "mean episode return: score - beta * sum of per-token KL (+ penalties)",
    "rollout/kl": "mean per-response KL to the reference, in nats (sum of the env's estimates)",
    "rollout/response_length": "mean generated tokens (actions) per response, inserted "
    "dialogue turns not counted",
    "train/beta": "KL coefficient after this update's controller step",
    "losses/policy": "clipped surrogate loss (token mean)",
    "losses/value": "clipped value loss (PPO only)",
    "losses/entropy": "mean per-token entropy of the policy, in nats",
    "train/clipfrac": "share of tokens where the clipped policy term was active",
    "train/value_clipfrac": "share of tokens where the clipped value term was active (PPO)",
    "train/approx_kl": "mean (ratio - 1) - log ratio: KL(old || new) moved by the update",
    "train/old_approx_kl": "mean -log ratio: the k1 estimate of the same KL (CleanRL logs both)",
    "train/explained_variance": "1 - Var(returns - values) / Var(returns) of the value head "
    "before the update, over response tokens (PPO; 1 is perfect, 0 predicts the mean)",
    "train/grad_norm": "gradient norm before clipping, mean over optimiser steps",
    "train/learning_rate": "learning rate used by this update",
    "train/epochs": "epochs run (fewer than configured when target_kl stopped them)",
    "perf/tokens_per_second": "generated tokens per second of wall time, rollout and update",
    "perf/rollout_seconds": "wall time of the rollout",
    "perf/update_seconds": "wall time of the update",
}


class MetricsLogger:
    """Writes scalars to TensorBoard under ``log_dir`` (or nowhere when it is ``None``)."""

    def __init__(self, log_dir: str | Path | None) -> None:
        self._writer = None
        if log_dir is not None:
            require("tensorboard", "train", "TensorBoard logging (log_dir; None logs nowhere)")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, record: dict[str, float], step: int) -> None:
        """Write every scalar of ``record`` at ``step`` (timesteps): the documented
        :data:`METRICS` and any a ``learn`` callback added."""
        if self._writer is None:
            return
        for name, value in record.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the writer."""
        if self._writer is not None:
            self._writer.close()
