"""PPO for language models: token-level GAE with a value head, clipped surrogate, KL in the env."""

from __future__ import annotations

import copy

import torch

from rlhf_agents.config import PPOConfig
from rlhf_agents.forward import gather_logprobs
from rlhf_agents.frozen_trunk import FrozenTrunk
from rlhf_agents.losses import (
    clipped_value_loss,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
)
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout
from rlhf_env.models.efficient import copy_sharing_bottom
from rlhf_env.models.trunk import frozen_trunk_depth
from rlhf_env.models.value_head import ValueHead, hidden_size_of


class PPOAgent(PolicyGradientAgent):
    """Proximal policy optimisation of ``env.policy`` (Schulman et al. 2017), as in
    InstructGPT: the env pays ``score - beta * KL`` per token; a value head on the critic's own
    copy of the model (``critic="separate"``, the default) or on the policy's trunk
    (``critic="shared"``) gives token-level GAE advantages. Under ``frozen:N`` the separate
    critic starts from the frozen blocks' output the policy's forwards use (its bottom ``N``
    blocks are the same frozen weights): only its trainable blocks run again.

    Each update scores every response in one teacher-forced forward per micro-batch, never one
    forward per state.

    Example:
        >>> env = TextGenerationVectorEnv(policy, tokenizer, reward_fn, prompts, num_envs=8)
        >>> agent = PPOAgent(env, PPOConfig(learning_rate=1e-5)).learn(total_timesteps=20_000)
        >>> agent.save("runs/ppo")
    """

    config_class = PPOConfig
    config: PPOConfig

    def build_modules(self) -> None:
        """The value head, and for ``critic="separate"`` the critic's own copy of the model
        (sharing the policy's frozen embeddings and bottom blocks under ``frozen:N``)."""
        self.critic: torch.nn.Module | None = None
        if self.config.critic == "separate":
            depth = frozen_trunk_depth(self.policy)  # a frozen bottom is shared, not copied
            self.critic = (
                copy_sharing_bottom(self.policy, depth) if depth else copy.deepcopy(self.policy)
            )
            # its output head, unless tied to its input, is never read
            head, inputs = self.critic.get_output_embeddings(), self.critic.get_input_embeddings()
            if head is not None and head.weight is not getattr(inputs, "weight", None):
                head.requires_grad_(False)
        self.value_head = ValueHead(hidden_size_of(self.policy)).to(self.device)
        self._critic_trunk: FrozenTrunk | None = None  # built at the first forward that needs it

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """The value head (and the separate critic's trunk)."""
        modules: dict[str, torch.nn.Module] = {"value_head": self.value_head}
        if self.critic is not None:
            modules["critic"] = self.critic
        return modules

    def has_unused_parameters(self) -> bool:
        """A separate critic reads its model's hidden states only: DDP looks for parameters
        without a gradient there (its untied output head is frozen; a model may have others)."""
        return self.critic is not None

    def values(
        self, batch: Rollout, targets: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(logits, values)``: policy logits ``(E, R, V)`` when the critic shares the trunk
        (``None`` otherwise) and values ``(E, R)`` of the states before each continuation token
        (those before the actions count; the losses mask the others), in one forward over the
        whole continuation, inserted tokens included (from the frozen trunk's output in
        ``targets`` when it carries it)."""
        if self.critic is None:
            logits, hidden = self.policy_forward(batch, targets, with_hidden=True)
            return logits, self.value_head(hidden)
        # as the policy's forward: from the frozen blocks' output (the same frozen weights),
        # the prompts' common prefix once
        _, hidden = self.model_forward(
            self.critic, self.critic_trunk(), batch, targets, with_logits=False, with_hidden=True
        )
        return None, self.value_head(hidden)

    def critic_trunk(self) -> FrozenTrunk | None:
        """The separate critic's view from the frozen trunk's output, when the policy has one
        (its bottom blocks are the policy's own, so their output is the same)."""
        if self.critic is None or self.frozen_trunk is None:
            return None
        if self._critic_trunk is None:
            self._critic_trunk = FrozenTrunk(self.critic, self.frozen_trunk.depth)
        return self._critic_trunk

    def compute_advantages(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Values of the rollout's states (no grad), then GAE advantages and returns over each
        whole episode (a conversation's inserted tokens skipped: see :func:`compute_gae`)."""
        config = self.config
        old_values = torch.zeros_like(rollout.rewards)
        chunk = config.minibatch_size // config.gradient_accumulation_steps
        for first in range(0, rollout.num_episodes, chunk):
            index = torch.arange(first, min(first + chunk, rollout.num_episodes))
            batch, trunk = self._micro_batch(rollout, {}, index)
            _, values = self.values(batch, trunk)
            old_values[index, : values.shape[1]] = values
        mask = rollout.action_mask
        advantages, returns = compute_gae(
            rollout.rewards, old_values, mask, config.gamma, config.gae_lambda
        )
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask, all_reduce=self.whitening_reduce())
        return {"advantages": advantages, "returns": returns, "old_values": old_values}

    def rollout_statistics(
        self, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """How much of the returns' variance the value head explained before the update."""
        value = explained_variance(
            targets["old_values"], targets["returns"], rollout.action_mask,
            all_reduce=self.whitening_reduce(),
        )  # fmt: skip
        return {"train/explained_variance": value}

    def loss(
        self, batch: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``policy_loss + vf_coef * value_loss - ent_coef * entropy`` (token means)."""
        config = self.config
        mask = batch.action_mask
        logits, values = self.values(batch, targets)
        if logits is None:  # separate critic: the policy's own forward
            logits, _ = self.policy_forward(batch, targets)
        logprobs = gather_logprobs(logits, batch.continuation_ids)  # (E, R)
        policy_loss, policy_stats = ppo_policy_loss(
            logprobs, batch.logprobs, targets["advantages"], mask, config.clip_range
        )
        value_loss, value_stats = clipped_value_loss(
            values, targets["old_values"], targets["returns"], mask, config.clip_range_value
        )
        entropy = masked_mean(entropy_from_logits(logits), mask)
        loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        stats = {
            "losses/policy": policy_loss.detach(),
            "losses/value": value_loss.detach(),
            "losses/entropy": entropy.detach(),
            "train/clipfrac": policy_stats["clipfrac"],
            "train/approx_kl": policy_stats["approx_kl"],
            "train/old_approx_kl": policy_stats["old_approx_kl"],
            "train/value_clipfrac": value_stats["value_clipfrac"],
        }
        return loss, stats
