"""KL estimators against closed forms, and the KL controllers' update rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhf_env.kl import (
    AdaptiveKLController,
    FixedKLController,
    estimate_kl,
    kl_full,
    kl_k1,
    kl_k3,
)


def _random_logprobs(seed: int, batch: int = 3, vocab: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=generator, dtype=torch.float64) * 2
    return torch.log_softmax(logits, dim=-1)


def _closed_form_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def test_full_kl_matches_closed_form():
    policy, ref = _random_logprobs(0), _random_logprobs(1)
    expected = _closed_form_kl(policy.exp().numpy(), ref.exp().numpy())
    np.testing.assert_allclose(kl_full(policy, ref).numpy(), expected, rtol=1e-12)
    # torch's own kl_div as a second, independent closed form
    torch_kl = torch.nn.functional.kl_div(ref, policy, log_target=True, reduction="none").sum(-1)
    np.testing.assert_allclose(kl_full(policy, ref).numpy(), torch_kl.numpy(), rtol=1e-12)


def test_full_kl_is_zero_for_identical_and_handles_zero_probabilities():
    logprobs = _random_logprobs(2)
    assert torch.allclose(kl_full(logprobs, logprobs), torch.zeros(3, dtype=torch.float64))
    # pi(v) = 0 where pi_ref(v) = 0: that term contributes nothing (not NaN)
    policy = torch.log(torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25, 0.75, 0.0]], dtype=torch.float64))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_full(policy, ref).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_sampled_estimators_are_unbiased(estimator):
    """E_{a ~ pi}[k(a)] equals the exact KL, computed by summing over every action."""
    policy, ref = _random_logprobs(3), _random_logprobs(4)
    batch, vocab = policy.shape
    per_action = torch.stack(
        [
            estimate_kl(estimator, policy, ref, torch.full((batch,), a, dtype=torch.long))
            for a in range(vocab)
        ],
        dim=-1,
    )  # (B, V)
    expectation = (policy.exp() * per_action).sum(-1)
    np.testing.assert_allclose(expectation.numpy(), kl_full(policy, ref).numpy(), rtol=1e-10)


def test_k1_and_k3_values():
    logp, ref_logp = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -0.5])
    assert torch.allclose(kl_k1(logp, ref_logp), torch.tensor([0.5, -1.5]))
    log_r = ref_logp - logp  # log(pi_ref / pi)
    expected_k3 = (log_r.exp() - 1) - log_r
    assert torch.allclose(kl_k3(logp, ref_logp), expected_k3)
    assert (kl_k3(logp, ref_logp) >= 0).all()


def test_unknown_estimator_is_rejected():
    logprobs = _random_logprobs(0)
    with pytest.raises(ValueError, match="choose one of"):
        estimate_kl("k2", logprobs, logprobs, torch.zeros(3, dtype=torch.long))


def test_fixed_controller_keeps_beta():
    controller = FixedKLController(0.1)
    assert controller.update(current_kl=100.0, n_steps=1000) == 0.1
    with pytest.raises(ValueError, match=">= 0"):
        FixedKLController(-1.0)


def test_adaptive_controller_follows_ziegler_update():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    # KL above target by 10%: error 0.1, beta *= 1 + 0.1 * 256 / 10000
    assert controller.update(current_kl=6.6, n_steps=256) == pytest.approx(
        0.2 * (1 + 0.1 * 256 / 10_000)
    )
    beta = controller.value
    # far above target: the error is clipped at +0.2
    assert controller.update(current_kl=60.0, n_steps=1000) == pytest.approx(
        beta * (1 + 0.2 * 1000 / 10_000)
    )
    beta = controller.value
    # far below target: clipped at -0.2, beta shrinks
    assert controller.update(current_kl=0.0, n_steps=1000) == pytest.approx(
        beta * (1 - 0.2 * 1000 / 10_000)
    )


def test_adaptive_controller_converges_toward_target_and_round_trips_state():
    controller = AdaptiveKLController(init_kl_coef=0.1, target=4.0, horizon=1000)
    for _ in range(50):  # KL always too high: beta keeps growing
        controller.update(current_kl=8.0, n_steps=100)
    assert controller.value > 0.1 * 1.01**50
    restored = AdaptiveKLController(1.0, 1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.state_dict() == controller.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init_kl_coef": 0.0, "target": 6.0}, "init_kl_coef"),
        ({"init_kl_coef": 0.1, "target": 0.0}, "target"),
        ({"init_kl_coef": 0.1, "target": 6.0, "horizon": 0}, "horizon"),
    ],
)
def test_adaptive_controller_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveKLController(**kwargs)
