"""The gradients of one optimiser step (``agents/minibatch.py``): micro-batches with different
token counts, in one process and in two simulated ones, give the gradient of the token-mean loss
over the whole global minibatch, not the per-sequence (per micro-batch) mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_agents import minibatch
from rlhf_agents.losses import masked_mean
from rlhf_agents.minibatch import MicroBatch, minibatch_gradients
from rlhf_agents.rollout import Rollout
from rlhf_env.distributed import DistributedContext, GradientSync

#: Response lengths of the global minibatch's 8 episodes (ragged: the micro-batches below hold
#: from 2 to 12 tokens).
LENGTHS = [1, 2, 6, 6, 1, 6, 3, 1]
WIDTH, FEATURES = 6, 5


def episodes(lengths: list[int]) -> tuple[Rollout, dict[str, torch.Tensor]]:
    """A rollout of right-padded responses of ``lengths`` tokens, and per-token regression
    targets: features ``x`` (E, R, F) and values ``y`` (E, R), float64."""
    count = len(lengths)
    generator = torch.Generator().manual_seed(0)
    mask = (torch.arange(WIDTH)[None, :] < torch.tensor(lengths)[:, None]).double()  # (E, R)
    zeros = torch.zeros(count, WIDTH)
    rollout = Rollout(
        prompt_ids=torch.ones(count, 1, dtype=torch.long),
        prompt_mask=torch.ones(count, 1, dtype=torch.long),
        continuation_ids=torch.zeros(count, WIDTH, dtype=torch.long),
        action_mask=mask,
        inserted_mask=zeros,
        rewards=zeros,
        logprobs=zeros,
        kl=zeros,
        scores=torch.zeros(count),
        prompts=[""] * count,
        responses=[""] * count,
        turn_scores=[[] for _ in range(count)],
        conversations=[[] for _ in range(count)],
    )
    features = torch.randn(count, WIDTH, FEATURES, generator=generator, dtype=torch.float64)
    features[..., 0] = 1.0  # a bias
    targets = {
        "x": features,
        # long responses' tokens aim high, short ones' low: the weighting decides the gradient
        "y": torch.randn(count, WIDTH, generator=generator, dtype=torch.float64)
        + torch.tensor([3.0 if length > 4 else -3.0 for length in lengths])[:, None],
    }
    return rollout, targets


def micro_batches(
    rollout: Rollout, targets: dict[str, torch.Tensor], index: list[int], size: int = 2
) -> list[MicroBatch]:
    """The episodes ``index`` in micro-batches of ``size``, trimmed as the agents trim them."""
    batches = []
    for start in range(0, len(index), size):
        rows = np.array(index[start : start + size])
        batch = rollout.select(rows)
        width = batch.continuation_ids.shape[1]
        batches.append((batch, {name: value[rows, :width] for name, value in targets.items()}))
    return batches


class LinearRegression:
    """A token-mean squared error of a linear model: the loss of a micro-batch, as the agents'
    losses are token means over ``action_mask``."""

    def __init__(self) -> None:
        self.weights = torch.nn.Parameter(torch.linspace(-1.0, 1.0, FEATURES, dtype=torch.float64))

    def __call__(self, batch, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        errors = (targets["x"] @ self.weights - targets["y"]) ** 2  # (E, R)
        value = masked_mean(errors, batch.action_mask)
        return value, {"loss": value.detach()}

    def gradient(self, value: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(value, self.weights)
        return grad


def accumulated(model: LinearRegression, batches: list[MicroBatch]) -> tuple[torch.Tensor, dict]:
    """``minibatch_gradients``' ``.grad`` (and statistics) for ``batches``."""
    model.weights.grad = None
    stats = minibatch_gradients(GradientSync({}, model), batches)
    return model.weights.grad.clone(), stats


def whole_batch_gradient(model: LinearRegression) -> tuple[torch.Tensor, float]:
    """The gradient (and value) of the token-mean loss over all episodes at once."""
    rollout, targets = episodes(LENGTHS)
    value, _ = model(rollout, targets)
    return model.gradient(value), float(value.detach())


def per_micro_batch_gradient(model: LinearRegression, batches: list[MicroBatch]) -> torch.Tensor:
    """Sequence weighting: the mean of the micro-batches' token means (what a per-sequence or
    per-micro-batch weight would compute; the same here, as every micro-batch holds 2)."""
    values = [model(batch, targets)[0] for batch, targets in batches]
    return model.gradient(torch.stack(values).mean())


def share_gradient(
    model: LinearRegression, rollout: Rollout, targets: dict[str, torch.Tensor], index: list[int]
) -> torch.Tensor:
    """The gradient of one process's own token mean (its share of the episodes at once)."""
    (batch, share_targets), *_ = micro_batches(rollout, targets, index, size=len(index))
    return model.gradient(model(batch, share_targets)[0])


def test_micro_batches_give_the_token_mean_gradient_of_the_whole_batch():
    model = LinearRegression()
    rollout, targets = episodes(LENGTHS)
    batches = micro_batches(rollout, targets, [3, 2, 0, 7, 5, 6, 4, 1])  # shuffled, as updates
    gradient, stats = accumulated(model, batches)
    expected, loss = whole_batch_gradient(model)
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-12)
    assert stats["loss"] == pytest.approx(loss, rel=1e-12)
    assert [int(batch.action_mask.sum()) for batch, _ in batches] == [12, 2, 9, 3]
    # Teeth: weighting these micro-batches alike is far off (measured: 66% of the norm).
    sequence_weighted = per_micro_batch_gradient(model, batches)
    assert float((sequence_weighted - expected).norm()) > 0.3 * float(expected.norm())


def test_two_processes_average_to_the_token_mean_gradient_of_the_global_batch(monkeypatch):
    """Two processes simulated in turn: each sees the global token count (the all-reduce) and
    the world size; DDP then averages their gradients, as done here by hand."""
    model = LinearRegression()
    rollout, targets = episodes(LENGTHS)
    shares = [[2, 3, 5, 0], [1, 4, 6, 7]]
    global_tokens = float(rollout.action_mask.sum())
    gradients, statistics, counts = [], [], []
    for rank, index in enumerate(shares):
        batches = micro_batches(rollout, targets, index)
        counts.append([int(batch.action_mask.sum()) for batch, _ in batches])
        local_tokens = sum(float(batch.action_mask.sum()) for batch, _ in batches)

        def all_reduce_sum(values: torch.Tensor, local: float = local_tokens) -> torch.Tensor:
            assert values.tolist() == [local]  # this process's count goes in, the sum comes out
            return torch.tensor([global_tokens])

        context = DistributedContext(rank=rank, world_size=2)
        monkeypatch.setattr(minibatch, "current_context", lambda context=context: context)
        monkeypatch.setattr(minibatch, "all_reduce_sum", all_reduce_sum)
        gradient, stats = accumulated(model, batches)
        gradients.append(gradient)
        statistics.append(stats)
    assert counts == [[12, 7], [3, 4]]
    averaged = (gradients[0] + gradients[1]) / 2  # DistributedDataParallel's mean
    expected, loss = whole_batch_gradient(model)
    torch.testing.assert_close(averaged, expected, rtol=1e-12, atol=1e-12)
    # the statistics are token-weighted shares of the global mean: summed over the processes
    assert statistics[0]["loss"] + statistics[1]["loss"] == pytest.approx(loss, rel=1e-12)
    # Teeth: the processes' own token means, averaged, are far off (measured: 51% of the norm).
    own_means = [share_gradient(model, rollout, targets, index) for index in shares]
    own_error = float(((own_means[0] + own_means[1]) / 2 - expected).norm())
    assert own_error > 0.25 * float(expected.norm())
