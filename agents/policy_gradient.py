"""What PPO and the critic-free agent share: rollouts through the env's fast path, the
minibatch loop, KL control and logging. The algorithms supply advantages and the loss
(:mod:`rlhf_agents.ppo`, :mod:`rlhf_agents.rloo`); checkpoints are written and read by
:mod:`rlhf_agents.agent_state`, the gradients of a step by :mod:`rlhf_agents.minibatch`."""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_agents.agent_state import load_agent, save_agent
from rlhf_agents.base import Agent
from rlhf_agents.config import PolicyGradientConfig
from rlhf_agents.forward import (
    checkpointing,
    enable_gradient_checkpointing,
    next_token_logits,
    response_forward,
)
from rlhf_agents.frozen_trunk import TRUNK_STATES, FrozenTrunk
from rlhf_agents.logger import MetricsLogger
from rlhf_agents.minibatch import minibatch_gradients
from rlhf_agents.prefix_forward import (
    MIN_SHARED_PREFIX,
    prefix_shared_forward,
    shared_prefix_length,
)
from rlhf_agents.rollout import Rollout, check_rollout_env, collect_episodes
from rlhf_agents.sampling import sample_tokens
from rlhf_env.config import build_config
from rlhf_env.distributed import (
    GradientSync,
    all_agree,
    all_reduce_sum,
    current_context,
    gather_objects,
    rank_seed,
    sum_over_processes,
)
from rlhf_env.kl import AdaptiveKLController, FixedKLController
from rlhf_env.vector_env import TextGenerationVectorEnv

#: Called by :meth:`PolicyGradientAgent.learn` after every update with the agent, the update's
#: rollout and its metrics record. It may add scalars to the record (they are logged and kept in
#: ``agent.history``) and returns ``False`` to stop training (anything else goes on), like
#: stable-baselines3's ``BaseCallback._on_step``.
IterationCallback = Callable[["PolicyGradientAgent", Rollout, dict[str, float]], bool | None]


class PolicyGradientAgent(Agent):
    """Base of the learning agents: trains ``env.policy`` in place (its parameters that require
    gradients: all of them, the upper layers, or LoRA adapters; see
    :mod:`rlhf_env.models.efficient`), so the env's KL always reads the current policy.

    Subclasses implement :meth:`compute_advantages` and :meth:`loss`. The config is a
    :class:`~rlhf_agents.config.PolicyGradientConfig` of the subclass's kind, its fields given
    as keyword arguments or as ``config`` (``PPOAgent(env, learning_rate=1e-4)``, the
    stable-baselines3 way, or ``PPOAgent(env, PPOConfig(...), epochs=2)``).

    Under ``torchrun`` / ``accelerate launch`` (see :mod:`rlhf_env.distributed`) each process
    collects its own rollouts from its env (its shard of the prompts, its own seed) and every
    optimiser step averages the gradients of the processes' minibatches, each token weighted
    as in one process holding the global batch; the processes agree on timesteps, beta and
    early stops, and rank 0 logs and writes checkpoints.
    """

    config_class: type[PolicyGradientConfig] = PolicyGradientConfig

    def __init__(
        self,
        env: TextGenerationVectorEnv,
        config: PolicyGradientConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(check_rollout_env(env))
        self.config = build_config(self.config_class, config, overrides)
        self.distributed = current_context()
        self._check_sizes()
        self.policy = env.policy
        self.device = env.device
        beta = self.config.kl_coef if self.config.kl_coef is not None else env.kl_coef
        self.kl_controller: FixedKLController | AdaptiveKLController
        if self.config.kl_target is not None:
            self.kl_controller = AdaptiveKLController(
                beta, self.config.kl_target, self.config.kl_horizon
            )
        else:
            self.kl_controller = FixedKLController(beta)
        env.set_kl_coef(self.kl_controller.value)
        self.build_modules()
        parameters = list(self.trainable_parameters().values())
        if not parameters:
            raise ValueError(
                "the policy has no parameter that requires gradients; unfreeze some layers"
            )
        # The fused (single-kernel) AdamW where every parameter is on CUDA.
        fused = all(parameter.is_cuda for parameter in parameters) or None
        self.optimizer = torch.optim.AdamW(
            parameters, lr=self.config.learning_rate, weight_decay=self.config.weight_decay,
            fused=fused,
        )  # fmt: skip
        self.checkpointed_layers: list[torch.nn.Module] = []
        if self.config.gradient_checkpointing:
            for module in (self.policy, *self.extra_modules().values()):
                if hasattr(module, "config"):  # the policy, a separate critic
                    self.checkpointed_layers += enable_gradient_checkpointing(module)
        # Under frozen:N the update starts from the frozen blocks' output: the env's, kept
        # while it generated the rollout (a shared trunk of the same depth, the static
        # engine), else computed once per rollout.
        self.frozen_trunk = FrozenTrunk.of(self.policy) if self.config.share_trunk else None
        self.trunk_from_env = self.frozen_trunk is not None and env.keep_trunk_states(
            self.frozen_trunk.depth
        )
        self._trunk_states: torch.Tensor | None = None  # the rollout's, during an update
        self.gradient_sync = GradientSync(
            {"policy": self.policy, **self.extra_modules()},
            self.loss,
            find_unused_parameters=self.has_unused_parameters(),
        )
        seed = rank_seed(self.config.seed, self.distributed.rank)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.iterations = 0
        self.history: list[dict[str, float]] = []

    # -- what subclasses provide ---------------------------------------------------------------

    def build_modules(self) -> None:
        """Create modules trained beside the policy (e.g. a value head)."""

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Modules trained beside the policy, by checkpoint file stem."""
        return {}

    def has_unused_parameters(self) -> bool:
        """Some trainable parameter gets no gradient from :meth:`loss` (e.g. a separate
        critic's unused LM head)."""
        return False

    def whitening_reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """How advantage whitening sums over the processes (``None``: one process)."""
        return all_reduce_sum if self.distributed.enabled else None

    def round_prompts(self) -> list[str] | None:
        """Prompts for one collection round (``None``: the env draws them)."""
        return None

    @abstractmethod
    def compute_advantages(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Per-token ``(E, R)`` tensors the loss needs, ``"advantages"`` among them."""

    @abstractmethod
    def loss(
        self, batch: Rollout, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of a micro-batch (a token mean) and its statistics."""

    def rollout_statistics(
        self, rollout: Rollout, targets: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """Scalars about the rollout and its targets to log (e.g. the value head's explained
        variance); none by default."""
        return {}

    # -- acting --------------------------------------------------------------------------------

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per sub-env from ``env.policy_logits`` (no forward of its own)."""
        assert env.policy_logits is not None
        return sample_tokens(env.policy_logits, self.generator).cpu().numpy()

    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """Sample (or, ``deterministic``, take the argmax of) the policy's next token."""
        with self.autocast():
            logits = next_token_logits(self.policy, observation)  # (B, V)
        if deterministic:
            actions = logits.argmax(dim=-1).cpu().numpy()
        else:
            actions = sample_tokens(logits, self.generator).cpu().numpy()
        return (actions[0] if np.asarray(observation["input_ids"]).ndim == 1 else actions), None

    # -- training ------------------------------------------------------------------------------

    def learn(
        self, total_timesteps: int, callback: IterationCallback | None = None
    ) -> PolicyGradientAgent:
        """Alternate rollouts and updates until ``num_timesteps >= total_timesteps`` (or until
        ``callback`` returns ``False``).

        Each iteration: (1) collect ``rollout_rounds x num_envs`` responses; (2) advantages;
        (3) ``epochs`` passes of minibatch updates; (4) step the KL controller and hand the new
        ``beta`` to the env; (5) ``callback``, log (:data:`rlhf_agents.logger.METRICS`) and
        checkpoint.

        With several processes, ``total_timesteps`` and the logged means count every
        process's tokens and responses; ``callback`` runs on every process with its own
        rollout and the global record, and training stops when it stops on any process.
        """
        config = self.config
        main = self.distributed.is_main
        logger = MetricsLogger(config.log_dir if main else None)
        bar = tqdm(
            total=total_timesteps,
            initial=min(self.num_timesteps, total_timesteps),
            unit="tok",
            desc=type(self).__name__,
            disable=not (config.progress_bar and main),
        )
        try:
            while self.num_timesteps < total_timesteps:
                start = time.perf_counter()
                # 1. rollout through the env's fast path
                with self.autocast():
                    rollout = self.collect()
                rollout_seconds = time.perf_counter() - start
                # 2-3. advantages and the optimisation epochs
                learning_rate = self._set_learning_rate(total_timesteps)
                stats = self.update(rollout)
                # 4. KL control: beta for the next rollout (the same on every process)
                totals = self._rollout_totals(rollout)
                episodes = totals["episodes"]
                sequence_kl = totals["kl"] / episodes
                beta = self.kl_controller.update(sequence_kl, int(episodes))
                self.env.set_kl_coef(beta)
                # 5. log and checkpoint
                self.num_timesteps += int(totals["tokens"])
                self.iterations += 1
                seconds = time.perf_counter() - start
                record = {
                    "timesteps": float(self.num_timesteps),
                    "rollout/score": totals["score"] / episodes,
                    "rollout/return": totals["return"] / episodes,
                    "rollout/kl": sequence_kl,
                    "rollout/response_length": totals["tokens"] / episodes,
                    "train/beta": beta,
                    "train/learning_rate": learning_rate,
                    "perf/tokens_per_second": totals["tokens"] / seconds,
                    "perf/rollout_seconds": rollout_seconds,
                    "perf/update_seconds": seconds - rollout_seconds,
                    **stats,
                }
                go_on = all_agree(callback is None or callback(self, rollout, record) is not False)
                self.history.append(record)
                logger.log(record, self.num_timesteps)
                bar.update(min(self.num_timesteps, total_timesteps) - bar.n)
                bar.set_postfix(score=f"{record['rollout/score']:.3f}", kl=f"{sequence_kl:.2f}")
                every = config.checkpoint_every
                if config.checkpoint_dir and every and self.iterations % every == 0:
                    self.save(config.checkpoint_dir)
                if not go_on:
                    break
        finally:
            bar.close()
            logger.close()
        if config.checkpoint_dir:
            self.save(config.checkpoint_dir)
        return self

    def _rollout_totals(self, rollout: Rollout) -> dict[str, float]:
        """Sums of the rollout's scores, returns, KLs, tokens and responses over the processes."""
        return sum_over_processes(
            {
                "score": float(rollout.scores.sum()),
                "return": float(rollout.returns.sum()),
                "kl": float(rollout.sequence_kl.sum()),
                "tokens": float(rollout.num_tokens),
                "episodes": float(rollout.num_episodes),
            }
        )

    def collect(self) -> Rollout:
        """``rollout_rounds`` rounds of one episode per sub-env, as one rollout."""
        rounds = []
        for _ in range(self.config.rollout_rounds):
            seed = int(self.rng.integers(2**31 - 1))
            rounds.append(collect_episodes(self.env, self.act, self.round_prompts(), seed))
        return rounds[0] if len(rounds) == 1 else Rollout.concatenate(rounds)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Advantages, then ``epochs`` x minibatches of clipped updates; returns mean stats."""
        config = self.config
        micro_size = config.minibatch_size // config.gradient_accumulation_steps
        try:
            return self._update(rollout, micro_size)
        finally:
            self._trunk_states = None

    def _update(self, rollout: Rollout, micro_size: int) -> dict[str, float]:
        config = self.config
        # 1. the frozen trunk's output (frozen:N), advantages and the loss targets of every
        # token, without gradients
        with torch.no_grad(), self.autocast():
            if self.frozen_trunk is not None and rollout.trunk_states is not None:
                self._trunk_states = rollout.trunk_states.to(self.device)
            elif self.frozen_trunk is not None:
                self._trunk_states = self.frozen_trunk.states(
                    rollout, micro_size, config.share_prefix
                )
            targets = self.compute_advantages(rollout)
        statistics = self.rollout_statistics(rollout, targets)
        totals: dict[str, float] = {}
        steps, epochs, stopped = 0, 0, False
        while epochs < config.epochs and not stopped:
            epochs += 1
            # 2. one optimiser step per shuffled minibatch
            order = self.rng.permutation(rollout.num_episodes)
            for first in range(0, len(order), config.minibatch_size):
                minibatch = order[first : first + config.minibatch_size]
                micro_batches = [
                    self._micro_batch(rollout, targets, minibatch[start : start + micro_size])
                    for start in range(0, len(minibatch), micro_size)
                ]
                # 2a. gradients: each token weighted as in one process holding the global batch
                self.optimizer.zero_grad(set_to_none=True)
                step_stats = minibatch_gradients(
                    self.gradient_sync, micro_batches, self._loss_context
                )
                # 2b. clip and step
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    list(self.trainable_parameters().values()), config.max_grad_norm
                )
                self.optimizer.step()
                step_stats["train/grad_norm"] = float(grad_norm)
                steps += 1
                for name, value in step_stats.items():
                    totals[name] = totals.get(name, 0.0) + value
                # 2c. stop the epochs once the policy moved too far from the rollout's
                stopped = config.target_kl is not None and (
                    step_stats["train/approx_kl"] > 1.5 * config.target_kl
                )
                if stopped:
                    break
        # 3. the update's means
        means = {name: value / steps for name, value in totals.items()}
        return {**means, **statistics, "train/epochs": float(epochs)}

    def _micro_batch(
        self, rollout: Rollout, targets: dict[str, torch.Tensor], index: np.ndarray | torch.Tensor
    ) -> tuple[Rollout, dict[str, torch.Tensor]]:
        """The episodes ``index`` of the rollout (trimmed to their own widths) and their
        targets, with their rows of the frozen trunk's output during an update."""
        batch = rollout.select(index)
        width = batch.continuation_ids.shape[1]
        selected = {name: value[index, :width] for name, value in targets.items()}
        if self._trunk_states is not None:
            rows = torch.as_tensor(np.asarray(index), dtype=torch.long)
            selected[TRUNK_STATES] = FrozenTrunk.rows(
                self._trunk_states, rollout, batch, rows.to(self._trunk_states.device)
            )
        return batch, selected

    def policy_forward(
        self, batch: Rollout, targets: dict[str, torch.Tensor] | None = None, **options: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:func:`~rlhf_agents.forward.response_forward` of the policy over a micro-batch:
        from its rows of the frozen trunk's output when ``targets`` carries them (frozen:N,
        ``share_trunk``), and with the prompts' common prefix run once when they share one
        (``share_prefix``; :mod:`rlhf_agents.prefix_forward`). ``options``: ``with_logits``,
        ``with_hidden``."""
        return self.model_forward(self.policy, self.frozen_trunk, batch, targets, **options)

    def model_forward(
        self,
        model: torch.nn.Module,
        frozen_trunk: FrozenTrunk | None,
        batch: Rollout,
        targets: dict[str, torch.Tensor] | None = None,
        **options: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:meth:`policy_forward` of ``model`` (the policy, or a model with the same frozen
        bottom, such as PPO's separate critic) whose view from the trunk is ``frozen_trunk``."""
        states = None if targets is None else targets.get(TRUNK_STATES)
        trunk = frozen_trunk if states is not None else None
        # gradient checkpointing drops the cache the shared prefix needs
        if self.config.share_prefix and not self.checkpointed_layers:
            length = shared_prefix_length(batch, MIN_SHARED_PREFIX)
            if length and trunk is not None:
                handoff = (trunk.handoff, trunk.depth, states)
                return prefix_shared_forward(trunk.upper, batch, length, trunk=handoff, **options)
            if length:
                return prefix_shared_forward(model, batch, length, **options)
        if trunk is not None:
            return trunk.forward(batch, states, **options)
        return response_forward(
            model, batch.prompt_ids, batch.prompt_mask, batch.continuation_ids,
            batch.context_mask, **options,
        )  # fmt: skip

    @contextlib.contextmanager
    def _loss_context(self) -> Iterator[None]:
        """What a loss forward runs in: bf16 autocast on CUDA, gradient checkpointing."""
        with self.autocast(), checkpointing(self.checkpointed_layers):
            yield

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Every parameter the optimiser updates, by checkpoint name."""
        parameters = {
            f"policy.{name}": p for name, p in self.policy.named_parameters() if p.requires_grad
        }
        for stem, module in self.extra_modules().items():
            parameters.update(
                {f"{stem}.{name}": p for name, p in module.named_parameters() if p.requires_grad}
            )
        return parameters

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast on CUDA when ``config.bf16``; nothing on CPU."""
        if self.device.type == "cuda" and self.config.bf16:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    def _set_learning_rate(self, total_timesteps: int) -> float:
        rate = self.config.learning_rate
        if self.config.lr_schedule == "linear":
            rate *= max(0.0, 1.0 - self.num_timesteps / total_timesteps)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        return rate

    def _check_sizes(self) -> None:
        episodes = self.env.num_envs * self.config.rollout_rounds
        if self.config.minibatch_size > episodes:
            raise ValueError(
                f"minibatch_size ({self.config.minibatch_size}) exceeds the {episodes} responses "
                f"of a rollout (num_envs {self.env.num_envs} x rollout_rounds "
                f"{self.config.rollout_rounds}); lower it or raise num_envs / rollout_rounds"
            )
        counts = gather_objects(episodes)
        if len(set(counts)) > 1:
            raise ValueError(
                f"the processes collect different numbers of responses per rollout ({counts}, "
                "by rank): give every process the same num_envs and rollout_rounds, so that "
                "they make the same optimiser steps"
            )

    # -- checkpoints (rlhf_agents.agent_state) ------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint to the run directory ``path`` (atomically): trainable weights
        (safetensors), optimizer, KL controller, counters, RNG states and the config. With
        several processes every process must call it; rank 0 writes."""
        return save_agent(self, path)

    @classmethod
    def load(
        cls, path: str | Path, env: TextGenerationVectorEnv, **config_overrides: Any
    ) -> PolicyGradientAgent:
        """Restore an agent from ``path`` into ``env`` (whose policy must be set up as when it
        was saved); ``config_overrides`` replace saved config fields (e.g. ``checkpoint_dir``);
        then ``learn(total)`` goes on where the run stopped.

        Raises:
            CheckpointError: a missing, corrupt or mismatched file, named in the message.
        """
        return load_agent(cls, path, env, **config_overrides)
