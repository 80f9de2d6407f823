"""Advantages and losses of the policy-gradient agents, as small functions with unit tests.

Tensors are token-level ``(E, R)``: ``E`` episodes (responses, or conversations), ``R``
continuation positions, with a float ``mask`` of 1 on the actions (generated tokens) and 0 on
padding after the end and on tokens a dialogue env inserted (observations; see
:class:`~rlhf_agents.rollout.Rollout`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (0 if there are none)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    eps: float = 1e-8,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``values`` shifted and scaled to mean 0 and std 1 over the masked positions; padding
    positions are set to 0. ``all_reduce`` (e.g. :func:`rlhf_env.distributed.all_reduce_sum`)
    takes the mean and variance over the positions of every process instead of this one's."""
    if all_reduce is None:
        mean = masked_mean(values, mask)
        variance = masked_mean((values - mean) ** 2, mask)
    else:
        total, count = all_reduce(torch.stack([(values * mask).sum(), mask.sum()])).tolist()
        mean = torch.tensor(total / count, dtype=values.dtype, device=values.device)
        squares = all_reduce(((values - mean) ** 2 * mask).sum().reshape(1))
        variance = (squares[0] / count).to(values.dtype)
    return (values - mean) * torch.rsqrt(variance + eps) * mask


def explained_variance(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """``1 - Var(targets - predictions) / Var(targets)`` over the masked positions: 1 for a
    perfect value function, 0 for one that predicts the mean, negative for a worse one (NaN
    when the targets do not vary). ``all_reduce`` sums the moments over the processes."""
    errors = targets - predictions
    moments = torch.stack(
        [
            mask.sum(),
            (targets * mask).sum(),
            (targets**2 * mask).sum(),
            (errors * mask).sum(),
            (errors**2 * mask).sum(),
        ]
    ).double()
    if all_reduce is not None:
        moments = all_reduce(moments)
    count, target_sum, target_squares, error_sum, error_squares = moments.tolist()
    if count == 0:
        return float("nan")
    target_variance = target_squares / count - (target_sum / count) ** 2
    error_variance = error_squares / count - (error_sum / count) ** 2
    if target_variance <= 1e-12:
        return float("nan")
    return 1.0 - error_variance / target_variance


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) per token, ``(E, R)`` each.

    ``mask`` is 1 on the actions. Every episode ends at its last action with no bootstrap: a
    response (or a conversation) ends either on EOS or at ``max_new_tokens``, and in both cases
    its score has been paid, so the state after it is terminal::

        delta_t = r_t + gamma * V_{t+1} - V_t        (V_{t+1} = 0 after the last action)
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A_t + V_t

    where ``t + 1`` is the episode's next *action*: positions with mask 0 inside an episode
    (tokens a dialogue env inserted between the assistant's turns, observations) are skipped,
    ``V_{t+1}`` and ``A_{t+1}`` carried back over them unchanged, so the result at the actions
    is GAE on the sequence of actions alone, and the advantage of a turn's last action reaches
    back from the next turn. Padding after an episode carries nothing back (nothing follows
    it). With no gaps (single-turn responses) this is the plain recursion over the tokens.

    Returns:
        ``(advantages, returns)``, zero where ``mask`` is 0.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (E,)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (E,)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (E,)
        advantage = delta + gamma * lam * next_advantage  # (E,)
        advantages[:, t] = advantage * mask[:, t]
        # An action passes its value and advantage back; a masked position (inserted, or the
        # padding after the end, where both are still 0) passes on those of the next action.
        action = mask[:, t] > 0  # (E,)
        next_value = torch.where(action, values[:, t], next_value)
        next_advantage = torch.where(action, advantages[:, t], next_advantage)
    return advantages, (advantages + values) * mask


def group_advantages(
    returns: torch.Tensor, group_size: int, baseline: str = "rloo"
) -> torch.Tensor:
    """Critic-free advantages of episode returns ``(E,)`` in consecutive groups of
    ``group_size`` responses to the same prompt.

    - ``"rloo"`` (REINFORCE leave-one-out, Ahmadian et al. 2024):
      ``A_i = R_i - mean_{j != i} R_j``.
    - ``"grpo"`` (Shao et al. 2024): ``A_i = (R_i - mean_j R_j) / (std_j R_j + 1e-4)``.
    """
    if group_size < 2:
        raise ValueError(f"a group baseline needs group_size >= 2, got {group_size}")
    if returns.shape[0] % group_size:
        raise ValueError(f"{returns.shape[0]} returns do not split into groups of {group_size}")
    grouped = returns.view(-1, group_size)  # (G, k)
    if baseline == "rloo":
        others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # (G, k)
        return (grouped - others_mean).reshape(-1)
    if baseline == "grpo":
        centred = grouped - grouped.mean(dim=1, keepdim=True)  # (G, k)
        return (centred / (grouped.std(dim=1, keepdim=True) + 1e-4)).reshape(-1)
    raise ValueError(f"unknown baseline {baseline!r}; choose 'rloo' or 'grpo'")


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate (Schulman et al. 2017), as a loss to minimise::

        ratio = exp(logp - logp_old)
        loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))

    Returns:
        ``(loss, stats)`` with ``clipfrac`` (share of tokens where the clipped term was taken),
        ``approx_kl`` (``mean((ratio - 1) - log ratio)``, Schulman's k3 estimate of
        KL(old || new)) and ``old_approx_kl`` (``mean(-log ratio)``, the k1 estimate CleanRL
        logs beside it), all masked means over tokens.
    """
    log_ratio = logprobs - old_logprobs  # (E, R)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
            "old_approx_kl": masked_mean(-log_ratio, mask),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Value loss with the PPO value clipping (``None`` disables it)::

        V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
        loss   = 0.5 * mean(max((V - G)^2, (V_clip - G)^2))

    Returns:
        ``(loss, stats)`` with ``value_clipfrac``.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * masked_mean(unclipped, mask), {"value_clipfrac": torch.zeros(())}
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of ``logits`` ``(..., V)``, in nats, ``(...)``."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -(logprobs.exp() * logprobs).sum(dim=-1)
