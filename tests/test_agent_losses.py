"""The agents' advantage and loss functions against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_agents.losses import (
    clipped_value_loss,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    group_advantages,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
)


def test_gae_terminal_only_reward_matches_hand_computation():
    # One episode of 3 tokens, reward 1 on the last one, values 0.5, 0.6, 0.7; a second,
    # shorter episode of 2 tokens padded to 3.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.2, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)

    # Episode 1, by hand: V after the last token is 0 (terminal).
    d2 = 1.0 + gamma * 0.0 - 0.7
    d1 = 0.0 + gamma * 0.7 - 0.6
    d0 = 0.0 + gamma * 0.6 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    # Episode 2 ends at its second token; the padded third position must not leak back.
    e1 = 2.0 - 0.2
    e0 = 0.0 + gamma * 0.2 - 0.1 + gamma * lam * e1
    expected = torch.tensor([[a0, a1, a2], [e0, e1, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * mask)


def test_gae_with_lambda_one_and_gamma_one_gives_return_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 3.0]])
    values = torch.tensor([[1.0, 2.0, -1.0]])
    mask = torch.ones(1, 3)
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = torch.tensor([[2.9, 2.8, 3.0]])
    torch.testing.assert_close(advantages, reward_to_go - values)
    torch.testing.assert_close(returns, reward_to_go)


def _gae_before_dialogues(rewards, values, mask, gamma, lam):
    """``compute_gae`` as it was before dialogue episodes: every masked position ends the
    carry (the reference for single-turn responses)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    return advantages, (advantages + values) * mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_of_single_turn_responses_is_unchanged(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 1, 4, 7, 2])
    mask = (torch.arange(7)[None, :] < lengths[:, None]).float()  # (E, R) padding only
    rewards, values = torch.randn(2, 5, 7, generator=generator)  # junk on the padding too
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = _gae_before_dialogues(rewards, values, mask, gamma, lam)
    assert torch.equal(advantages, expected_advantages)
    assert torch.equal(returns, expected_returns)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_over_inserted_tokens_is_gae_of_the_actions_alone(gamma, lam):
    # "a": an action; "i": a token the env inserted (a user turn); then padding to the width.
    episodes = ["aaaiiiaaiia", "aiaiaia", "aaaaaii", "aa", "aaaaaaaaaaa", "aiiiiiiiiia"]
    width = max(map(len, episodes))
    mask = torch.tensor([[float(k == "a") for k in e.ljust(width, ".")] for e in episodes])
    generator = torch.Generator().manual_seed(0)
    # Junk rewards and values on inserted tokens and padding: they must be ignored.
    rewards, values = torch.randn(2, len(episodes), width, generator=generator)
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)

    # The same episodes with the inserted tokens cut out (actions only, right-padded).
    actions = [mask[i].nonzero()[:, 0] for i in range(len(episodes))]
    compact_mask = torch.zeros_like(mask)
    compact_rewards, compact_values = torch.zeros_like(rewards), torch.zeros_like(values)
    for i, where in enumerate(actions):
        compact_mask[i, : len(where)] = 1.0
        compact_rewards[i, : len(where)] = rewards[i, where]
        compact_values[i, : len(where)] = values[i, where]
    compact_advantages, compact_returns = compute_gae(
        compact_rewards, compact_values, compact_mask, gamma, lam
    )
    for i, where in enumerate(actions):
        torch.testing.assert_close(advantages[i, where], compact_advantages[i, : len(where)],
                                   atol=0, rtol=0)  # fmt: skip
        torch.testing.assert_close(returns[i, where], compact_returns[i, : len(where)],
                                   atol=0, rtol=0)  # fmt: skip
    assert not advantages[mask == 0].any() and not returns[mask == 0].any()
    # By hand for "aiaiaia" (actions at 0, 2, 4, 6): the carry crosses the inserted tokens.
    r, v = rewards[1, ::2], values[1, ::2]
    a6 = r[3] - v[3]
    a4 = r[2] + gamma * v[3] - v[2] + gamma * lam * a6
    torch.testing.assert_close(advantages[1, [4, 6]], torch.stack([a4, a6]))


def test_ppo_policy_loss_clips_both_sides():
    old = torch.zeros(1, 4)
    # ratios e^0.5 (above 1 + eps), e^-0.5 (below 1 - eps), e^0.1 and 1 (inside).
    new = torch.tensor([[0.5, -0.5, 0.1, 0.0]])
    advantages = torch.tensor([[1.0, -1.0, 2.0, -3.0]])
    mask = torch.ones(1, 4)
    loss, stats = ppo_policy_loss(new, old, advantages, mask, clip_range=0.2)
    ratio = new.exp()[0]
    per_token = [
        -1.0 * 1.2,  # A > 0, ratio above 1 + eps: the clipped (smaller) objective
        max(1.0 * ratio[1].item(), 1.0 * 0.8),  # A < 0, ratio below 1 - eps: clipped
        -2.0 * ratio[2].item(),
        3.0 * 1.0,
    ]
    assert loss.item() == pytest.approx(sum(per_token) / 4, rel=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    expected_kl = sum(math.expm1(x) - x for x in (0.5, -0.5, 0.1, 0.0)) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_kl, rel=1e-5)


def test_ppo_policy_loss_gradient_vanishes_when_clipped():
    new = torch.tensor([[0.5]], requires_grad=True)  # ratio e^0.5 > 1.2 with A > 0: clipped
    loss, _ = ppo_policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2)
    loss.backward()
    assert new.grad.item() == 0.0


def test_clipped_value_loss():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[0.5, 1.0]])
    mask = torch.ones(1, 2)
    loss, stats = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    # Token 1: unclipped (1 - 0.5)^2 = 0.25, clipped (0.2 - 0.5)^2 = 0.09 -> max 0.25.
    # Token 2: both (0 - 1)^2 = 1.
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    assert stats["value_clipfrac"].item() == 0.0
    # A value moving the right way past the clip range: the clipped error is larger.
    loss, stats = clipped_value_loss(torch.tensor([[0.45]]), torch.zeros(1, 1), torch.ones(1, 1),
                                     torch.ones(1, 1), clip_range=0.2)  # fmt: skip
    assert loss.item() == pytest.approx(0.5 * 0.8**2)
    assert stats["value_clipfrac"].item() == 1.0
    unclipped, _ = clipped_value_loss(torch.tensor([[0.45]]), torch.zeros(1, 1), torch.ones(1, 1),
                                      torch.ones(1, 1), clip_range=None)  # fmt: skip
    assert unclipped.item() == pytest.approx(0.5 * 0.55**2)


def test_masked_statistics_ignore_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_mean(values, mask).item() == 2.0
    whitened = masked_whiten(values, mask)
    torch.testing.assert_close(whitened, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)


def test_group_advantages():
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    rloo = group_advantages(returns, group_size=3, baseline="rloo")
    torch.testing.assert_close(rloo, torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    grpo = group_advantages(returns, group_size=3, baseline="grpo")
    torch.testing.assert_close(grpo[:3], torch.tensor([-1.0, 0.0, 1.0]) / (1.0 + 1e-4))
    torch.testing.assert_close(grpo[3:], torch.zeros(3))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(returns, group_size=4)
    with pytest.raises(ValueError, match="'rloo' or 'grpo'"):
        group_advantages(returns, group_size=3, baseline="mean")


def test_entropy_of_uniform_and_one_hot():
    uniform = entropy_from_logits(torch.zeros(2, 8))
    torch.testing.assert_close(uniform, torch.full((2,), math.log(8)))
    peaked = entropy_from_logits(torch.tensor([[0.0, -1e4, -1e4]]))
    assert peaked.item() == pytest.approx(0.0, abs=1e-6)


def test_explained_variance_matches_its_definition():
    targets = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is padding
    assert explained_variance(targets, targets, mask) == pytest.approx(1.0)
    mean = torch.full_like(targets, 2.0)
    assert explained_variance(mean, targets, mask) == pytest.approx(0.0)
    noisy = targets + torch.tensor([[0.5, -0.5, 0.5, 100.0]])
    residual = torch.tensor([0.5, -0.5, 0.5])
    expected = 1 - residual.var(unbiased=False) / torch.tensor([1.0, 2.0, 3.0]).var(unbiased=False)
    assert explained_variance(noisy, targets, mask) == pytest.approx(float(expected))
    assert math.isnan(explained_variance(targets, torch.ones_like(targets), mask))


def test_ppo_policy_loss_reports_both_kl_estimates():
    old = torch.log(torch.tensor([[0.5, 0.25]]))
    new = torch.log(torch.tensor([[0.25, 0.5]]))
    mask = torch.ones(1, 2)
    _, stats = ppo_policy_loss(new, old, torch.zeros(1, 2), mask, clip_range=0.2)
    log_ratio = new - old
    assert stats["old_approx_kl"].item() == pytest.approx(float((-log_ratio).mean()))
    assert stats["approx_kl"].item() == pytest.approx(
        float((log_ratio.exp() - 1 - log_ratio).mean())
    )
