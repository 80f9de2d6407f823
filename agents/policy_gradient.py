"""What PPO and the critic-free agent share: rollouts through the env's fast path, the
minibatch loop, KL control, logging and checkpoints. The algorithms supply advantages and
the loss (:mod:`agents.ppo`, :mod:`agents.rloo`)."""

from __future__ import annotations

import contextlib
import json
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import Agent
from agents.checkpoint import (
    STATE_FILE,
    CheckpointError,
    load_into_parameters,
    load_tensors,
    read_state,
    resolve_checkpoint,
    save_tensors,
    write_checkpoint,
)
from agents.config import PolicyGradientConfig
from agents.forward import next_token_logits
from agents.logger import MetricsLogger
from agents.rollout import Rollout, check_rollout_env, collect_episodes
from rlhf_env.kl import AdaptiveKLController, FixedKLController
from rlhf_env.vector_env import TextGenerationVectorEnv

CHECKPOINT_FORMAT = 1

#: Called by :meth:`PolicyGradientAgent.learn` after every update with the agent, the update's
#: rollout and its metrics record. It may add scalars to the record (they are logged and kept in
#: ``agent.history``) and returns ``False`` to stop training (anything else goes on), like
#: stable-baselines3's ``BaseCallback._on_step``.
IterationCallback = Callable[["PolicyGradientAgent", Rollout, dict[str, float]], bool | None]


class PolicyGradientAgent(Agent):
    """Base of the learning agents: trains ``env.policy`` in place (its parameters that require
    gradients: all of them, the upper layers, or LoRA adapters; see
    :mod:`rlhf_env.models.efficient`), so the env's KL always reads the current policy.

    Subclasses implement :meth:`compute_advantages` and :meth:`loss`.
    """

    config_class: type[PolicyGradientConfig] = PolicyGradientConfig

    def __init__(
        self, env: TextGenerationVectorEnv, config: PolicyGradientConfig | None = None
    ) -> None:
        super().__init__(check_rollout_env(env))
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(self.config).__name__}"
            )
        self._check_sizes()
        self.policy = env.policy
        self.device = env.task.device
        beta = self.config.kl_coef if self.config.kl_coef is not None else env.kl_coef
        self.kl_controller: FixedKLController | AdaptiveKLController
        if self.config.kl_target is not None:
            self.kl_controller = AdaptiveKLController(
                beta, self.config.kl_target, self.config.kl_horizon
            )
        else:
            self.kl_controller = FixedKLController(beta)
        env.kl_coef = self.kl_controller.value
        self.build_modules()
        parameters = list(self.trainable_parameters().values())
        if not parameters:
            raise ValueError(
                "the policy has no parameter that requires gradients; unfreeze some layers"
            )
        self.optimizer = torch.optim.AdamW(
            parameters, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.iterations = 0
        self.history: list[dict[str, float]] = []

    # -- what subclasses provide ---------------------------------------------------------------

    def build_modules(self) -> None:
        """Create modules trained beside the policy (e.g. a value head)."""

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Modules trained beside the policy, by checkpoint file stem."""
        return {}

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

    # -- acting --------------------------------------------------------------------------------

    def act(self, env: TextGenerationVectorEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Sample one token per sub-env from ``env.policy_logits`` (no forward of its own)."""
        assert env.policy_logits is not None
        probs = torch.softmax(env.policy_logits, dim=-1)  # (N, V)
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0].cpu().numpy()

    def predict(
        self, observation: dict[str, Any], deterministic: bool = False
    ) -> tuple[np.ndarray, None]:
        """Sample (or, ``deterministic``, take the argmax of) the policy's next token."""
        with self.autocast():
            logits = next_token_logits(self.policy, observation)  # (B, V)
        if deterministic:
            actions = logits.argmax(dim=-1).cpu().numpy()
        else:
            probs = torch.softmax(logits, dim=-1)
            actions = torch.multinomial(probs, 1, generator=self.generator)[:, 0].cpu().numpy()
        return (actions[0] if np.asarray(observation["input_ids"]).ndim == 1 else actions), None

    # -- training ------------------------------------------------------------------------------

    def learn(
        self, total_timesteps: int, callback: IterationCallback | None = None
    ) -> PolicyGradientAgent:
        """Alternate rollouts and updates until ``num_timesteps >= total_timesteps`` (or until
        ``callback`` returns ``False``).

        Each iteration: (1) collect ``rollout_rounds x num_envs`` responses; (2) advantages;
        (3) ``epochs`` passes of minibatch updates; (4) step the KL controller and hand the new
        ``beta`` to the env; (5) ``callback``, log (:data:`agents.logger.METRICS`) and
        checkpoint.
        """
        config = self.config
        logger = MetricsLogger(config.log_dir)
        bar = tqdm(
            total=total_timesteps,
            initial=min(self.num_timesteps, total_timesteps),
            unit="tok",
            desc=type(self).__name__,
            disable=not config.progress_bar,
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
                # 4. KL control: beta for the next rollout
                sequence_kl = float(rollout.sequence_kl.mean())
                beta = self.kl_controller.update(sequence_kl, rollout.num_episodes)
                self.env.kl_coef = beta
                # 5. log and checkpoint
                self.num_timesteps += rollout.num_tokens
                self.iterations += 1
                seconds = time.perf_counter() - start
                record = {
                    "timesteps": float(self.num_timesteps),
                    "rollout/score": float(rollout.scores.mean()),
                    "rollout/return": float(rollout.returns.mean()),
                    "rollout/kl": sequence_kl,
                    "rollout/response_length": float(rollout.lengths.float().mean()),
                    "train/beta": beta,
                    "train/learning_rate": learning_rate,
                    "perf/tokens_per_second": rollout.num_tokens / seconds,
                    "perf/rollout_seconds": rollout_seconds,
                    "perf/update_seconds": seconds - rollout_seconds,
                    **stats,
                }
                go_on = callback is None or callback(self, rollout, record) is not False
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
        with torch.no_grad(), self.autocast():
            targets = self.compute_advantages(rollout)
        totals: dict[str, float] = {}
        steps, epochs_run = 0, 0
        micro_size = config.minibatch_size // config.gradient_accumulation_steps
        stop = False
        for _ in range(config.epochs):
            epochs_run += 1
            order = self.rng.permutation(rollout.num_episodes)
            for first in range(0, len(order), config.minibatch_size):
                minibatch = order[first : first + config.minibatch_size]
                minibatch_tokens = float(rollout.response_mask[minibatch].sum())
                self.optimizer.zero_grad(set_to_none=True)
                step_stats: dict[str, float] = {}
                for micro_first in range(0, len(minibatch), micro_size):
                    index = minibatch[micro_first : micro_first + micro_size]
                    batch = rollout.select(index)
                    width = batch.response_ids.shape[1]
                    micro_targets = {k: v[index, :width] for k, v in targets.items()}
                    with self.autocast():
                        loss, stats = self.loss(batch, micro_targets)
                    weight = float(batch.response_mask.sum()) / minibatch_tokens
                    (loss * weight).backward()
                    for name, value in stats.items():
                        step_stats[name] = step_stats.get(name, 0.0) + float(value) * weight
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    list(self.trainable_parameters().values()), config.max_grad_norm
                )
                self.optimizer.step()
                step_stats["train/grad_norm"] = float(grad_norm)
                steps += 1
                for name, value in step_stats.items():
                    totals[name] = totals.get(name, 0.0) + value
                if config.target_kl is not None and step_stats["train/approx_kl"] > (
                    1.5 * config.target_kl
                ):
                    stop = True
                    break
            if stop:
                break
        means = {name: value / steps for name, value in totals.items()}
        means["train/epochs"] = float(epochs_run)
        return means

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

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint to the run directory ``path`` (atomically; see
        :mod:`agents.checkpoint`): trainable weights (safetensors), optimizer, KL controller,
        counters, RNG states and the config."""
        trainable = self.trainable_parameters()
        state = {
            "format": CHECKPOINT_FORMAT,
            "agent": type(self).__name__,
            "config": asdict(self.config),
            "num_timesteps": self.num_timesteps,
            "iterations": self.iterations,
            "kl_controller": {"type": type(self.kl_controller).__name__}
            | self.kl_controller.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "history": self.history,
        }

        def write(folder: Path) -> None:
            save_tensors(trainable, folder / "weights.safetensors")
            save_tensors({"generator": self.generator.get_state()}, folder / "rng.safetensors")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

        return write_checkpoint(
            path, f"checkpoint-{self.iterations:06d}", write, keep=self.config.keep_checkpoints
        )

    @classmethod
    def load(
        cls, path: str | Path, env: TextGenerationVectorEnv, **config_overrides: Any
    ) -> PolicyGradientAgent:
        """Restore an agent from ``path`` into ``env`` (whose policy must be set up as when it
        was saved: same model, same LoRA or frozen layers). ``config_overrides`` replace saved
        config fields (e.g. ``checkpoint_dir``, ``progress_bar``); then ``learn(total)`` goes on
        where the run stopped.

        Raises:
            CheckpointError: a missing, corrupt or mismatched file, named in the message.
        """
        folder = resolve_checkpoint(path)
        state = read_state(folder)
        if state.get("agent") != cls.__name__:
            raise CheckpointError(
                f"{folder / STATE_FILE} holds a {state.get('agent')} checkpoint; load it with "
                f"that class, not {cls.__name__}"
            )
        try:
            config = cls.config_class(**{**state["config"], **config_overrides})
        except TypeError as error:
            raise CheckpointError(f"{folder / STATE_FILE}: config does not fit: {error}") from error
        agent = cls(env, config)
        load_into_parameters(agent.trainable_parameters(), folder / "weights.safetensors")
        optimizer_file = folder / "optimizer.pt"
        try:
            agent.optimizer.load_state_dict(
                torch.load(optimizer_file, map_location=agent.device, weights_only=True)
            )
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{optimizer_file} is missing or corrupt: {error}") from error
        agent.generator.set_state(load_tensors(folder / "rng.safetensors")["generator"])
        agent.rng.bit_generator.state = state["numpy_rng"]
        controller = dict(state["kl_controller"])
        controller.pop("type", None)
        agent.kl_controller.load_state_dict(controller)
        env.kl_coef = agent.kl_controller.value
        agent.num_timesteps = int(state["num_timesteps"])
        agent.iterations = int(state["iterations"])
        agent.history = list(state.get("history", []))
        return agent
