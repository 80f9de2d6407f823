"""Critic-free policy gradient with a group baseline (RLOO, or GRPO-style normalisation)."""

from __future__ import annotations

import torch

from rlhf_agents.config import RLOOConfig
from rlhf_agents.forward import gather_logprobs
from rlhf_agents.losses import (
    entropy_from_logits,
    group_advantages,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
)
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout


class RLOOAgent(PolicyGradientAgent):
    """REINFORCE leave-one-out (Ahmadian et al. 2024) on the same rollout code as PPO.

    Every prompt is answered ``group_size`` times in one round; a response's advantage is its
    return (``score - beta * sum KL``, from the env) minus the mean return of the other answers
    to its prompt (``baseline="grpo"``: minus the group mean, over the group std). The advantage
    is given to every generated token of the response (every action of a conversation, not
    the tokens the env inserted) and optimised with the same clipped surrogate as PPO, with no
    value head: less memory and no critic to fit.
    """

    config_class = RLOOConfig
    config: RLOOConfig

    def _check_sizes(self) -> None:
        super()._check_sizes()
        if self.env.num_envs % self.config.group_size:
            raise ValueError(
                f"num_envs ({self.env.num_envs}) must be a multiple of group_size "
                f"({self.config.group_size}): each round answers num_envs / group_size prompts "
                "group_size times"
            )

    def round_prompts(self) -> list[str]:
        """``num_envs / group_size`` prompts, each repeated ``group_size`` times in a row."""
        size = self.config.group_size
        prompts = self.env.sample_prompts(self.env.num_envs // size, self.rng)
        return [prompt for prompt in prompts for _ in range(size)]

    def compute_advantages(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Group-baseline advantages of the episode returns, broadcast over the actions
        (``action_mask``: 0 on inserted tokens and padding)."""
        # Rounds are concatenated whole, so groups stay consecutive.
        advantages = group_advantages(
            rollout.returns, self.config.group_size, self.config.baseline
        )  # (E,)
        mask = rollout.action_mask
        per_token = advantages[:, None] * mask  # (E, R)
        if self.config.whiten_advantages:
            per_token = masked_whiten(per_token, mask, all_reduce=self.whitening_reduce())
        return {"advantages": per_token}

    def loss(
        self, batch: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped surrogate ``- ent_coef * entropy`` (token means)."""
        mask = batch.action_mask
        logits, _ = self.policy_forward(batch, targets)
        logprobs = gather_logprobs(logits, batch.continuation_ids)  # (E, R)
        policy_loss, stats = ppo_policy_loss(
            logprobs, batch.logprobs, targets["advantages"], mask, self.config.clip_range
        )
        entropy = masked_mean(entropy_from_logits(logits), mask)
        loss = policy_loss - self.config.ent_coef * entropy
        return loss, {
            "losses/policy": policy_loss.detach(),
            "losses/entropy": entropy.detach(),
            "train/clipfrac": stats["clipfrac"],
            "train/approx_kl": stats["approx_kl"],
            "train/old_approx_kl": stats["old_approx_kl"],
        }
