"""A stable-baselines3 policy that is a Hugging Face causal LM, for SB3's PPO and A2C as released.

::

    from stable_baselines3 import PPO
    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv

    vector_env = TextGenerationVectorEnv(policy, tokenizer, reward_fn, prompts, num_envs=8,
                                         autoreset_mode="SameStep")
    model = PPO(LanguageModelPolicy, SB3VecEnv(vector_env),
                policy_kwargs={"model": vector_env.policy}, n_steps=64, batch_size=64)
    model.learn(20_000)

The policy trains ``model``, the very module the env reads for its KL term, so the env's
``-beta * KL`` always compares the current policy with the frozen reference, which is not part
of this policy and so never enters SB3's optimizer.

## What each phase costs

- **Rollout collection** (``collect_rollouts`` calls ``policy(obs)`` once per step under
  ``no_grad``): a sub-env whose observation is the previous one shifted by one appended token
  reuses its KV cache and costs one single-token forward; a sub-env starting an episode is
  encoded alone and spliced into the batch cache. That is O(T) per episode instead of the O(T^2)
  of re-encoding every context (``kv_cache=False`` turns the cache off; a test checks that both
  give the same logits and values).
- **SB3's update** (``evaluate_actions`` on minibatches of single states) re-encodes every
  sampled state's whole context with gradients: O(T) per state, O(T^2) per episode. SB3 stores
  transitions independently and shuffles them across episodes, so it cannot score a response in
  one teacher-forced forward the way :class:`rlhf_agents.PPOAgent` does; that is the price of using
  SB3 unmodified. Keep ``max_prompt_tokens + max_new_tokens`` small, or use ``PPOAgent``.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces

from rlhf_agents.forward import accepts_argument, observation_tensors
from rlhf_env.engine.incremental import IncrementalLM
from rlhf_env.extras import missing_extra
from rlhf_env.models.modules import device_of, positions_from_mask
from rlhf_env.models.value_head import ValueHead, hidden_size_of

try:
    from stable_baselines3.common.distributions import CategoricalDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
except ImportError as error:
    raise missing_extra(
        "stable_baselines3", "sb3", "rlhf_agents.sb3_policy (LanguageModelPolicy)"
    ) from error


class LanguageModelPolicy(ActorCriticPolicy):
    """SB3 actor-critic whose actor is the causal LM's next-token distribution and whose critic is
    a value head on the LM's last hidden state.

    Observations are the env's ``Dict(input_ids, attention_mask)`` of left-padded contexts;
    SB3's buffers store them as floats, and they are cast back to integer token ids here. The
    LM stays in eval mode (dropout off) in both SB3 phases, so rollout and update log-probs
    agree. Orthogonal re-initialisation is off (it would destroy the pretrained weights).

    Args (pass them in ``policy_kwargs``):
        model: the Hugging Face causal LM, the env's ``policy`` (``vector_env.policy``).
        kv_cache: reuse KV caches across rollout steps (see the module docstring).
        The remaining keyword arguments go to SB3's ``ActorCriticPolicy`` (e.g.
        ``optimizer_kwargs``); architecture options (``net_arch``, ``features_extractor_class``)
        do not apply.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: torch.nn.Module | None = None,
        kv_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError(
                "LanguageModelPolicy needs the env's language model: "
                "policy_kwargs={'model': vector_env.policy}"
            )
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"the action space must be Discrete(V), got {action_space}")
        # Held outside nn.Module's registry until _build registers it (after Module.__init__).
        object.__setattr__(self, "_pending_model", model)
        self.kv_cache = kv_cache
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    # -- SB3 hooks -----------------------------------------------------------------------------

    def _build(self, lr_schedule: Schedule) -> None:
        """The LM, a value head and the optimizer over their trainable parameters."""
        self.model = self.__dict__.pop("_pending_model")
        if not isinstance(self.action_dist, CategoricalDistribution):
            raise ValueError("LanguageModelPolicy supports Discrete action spaces only")
        self.value_head = ValueHead(hidden_size_of(self.model)).to(device_of(self.model))
        self._rollout_cache = _RolloutCache(self.model)
        self._keeps_logits = accepts_argument(self.model, "logits_to_keep")
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model, kv_cache=self.kv_cache)
        return data

    def set_training_mode(self, mode: bool) -> None:
        """SB3 switches modes between rollouts and updates; the LM stays in eval mode (no
        dropout), and switching to training drops the rollout caches (the weights will move)."""
        super().set_training_mode(mode)
        self.model.eval()
        if mode:
            self._rollout_cache.clear()

    def forward(
        self, obs: PyTorchObs, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions ``(B,)``, values ``(B, 1)`` and log-probs ``(B,)`` for a batch of contexts."""
        logits, hidden = self._logits_and_hidden(obs)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, self.value_head(hidden).unsqueeze(-1), distribution.log_prob(actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values ``(B, 1)``, log-probs and entropies ``(B,)`` of ``actions``, with gradients."""
        logits, hidden = self._full_forward(obs)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        values = self.value_head(hidden).unsqueeze(-1)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> CategoricalDistribution:
        """The next-token distribution for a batch of contexts."""
        logits, _ = self._logits_and_hidden(obs)
        return self.action_dist.proba_distribution(action_logits=logits)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """Values ``(B, 1)`` of a batch of contexts (no cache: SB3 calls it on odd batches)."""
        _, hidden = self._full_forward(obs)
        return self.value_head(hidden).unsqueeze(-1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    # -- forwards ------------------------------------------------------------------------------

    def _logits_and_hidden(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached when collecting (no gradients), a full forward otherwise."""
        if self.kv_cache and not torch.is_grad_enabled():
            input_ids, mask = _token_tensors(obs)
            return self._rollout_cache.step(input_ids, mask)
        return self._full_forward(obs)

    def _full_forward(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-encode whole contexts: next-token logits ``(B, V)`` and last hidden ``(B, H)``."""
        input_ids, mask = _token_tensors(obs)
        # Logits of the last position only: (B, V), not (B, L, V).
        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions_from_mask(mask),
            use_cache=False,
            output_hidden_states=True,
            **kwargs,
        )
        return output.logits[:, -1].float(), output.hidden_states[-1][:, -1]


def _token_tensors(obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer ``(B, L)`` token ids and mask from SB3's (float) observation tensors."""
    if not isinstance(obs, dict):
        raise TypeError("LanguageModelPolicy takes the env's dict observations")
    return observation_tensors(obs, obs["input_ids"].device)


class _RolloutCache:
    """KV caches for the rows of a rollout: each call extends the rows whose context grew by one
    token and re-encodes (splices in) the others."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.lm = IncrementalLM(model, with_hidden=True)
        self.input_ids: torch.Tensor | None = None  # (N, L) the last contexts seen
        self.mask: torch.Tensor | None = None

    def clear(self) -> None:
        self.lm.release()
        self.input_ids = self.mask = None

    @torch.no_grad()
    def step(
        self, input_ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``(N, V)`` and last hidden states ``(N, H)`` for the contexts."""
        if self.input_ids is None or self.input_ids.shape != input_ids.shape:
            logits = self.lm.start(*_trim_left(input_ids, mask))
            hidden = self.lm.last_hidden
        else:
            assert self.mask is not None
            extends = (
                (input_ids[:, :-1] == self.input_ids[:, 1:]).all(dim=1)
                & (mask[:, :-1] == self.mask[:, 1:]).all(dim=1)
                & (mask[:, -1] == 1)
            )  # (N,)
            logits = self.lm.extend(input_ids[:, -1], live=extends)  # (N, V)
            hidden = self.lm.last_hidden
            assert hidden is not None
            fresh = torch.nonzero(~extends).squeeze(-1)  # (k,)
            if fresh.numel():
                fresh_logits = self.lm.replace_rows(
                    fresh, *_trim_left(input_ids[fresh], mask[fresh])
                )
                logits, hidden = logits.clone(), hidden.clone()
                logits[fresh] = fresh_logits
                hidden[fresh] = self.lm.last_hidden
        self.input_ids, self.mask = input_ids.clone(), mask.clone()
        assert hidden is not None
        return logits, hidden


def _trim_left(input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop leading columns that are padding in every row."""
    first = int(mask.any(dim=0).int().argmax())
    return input_ids[:, first:], mask[:, first:]
