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
from agents.forward import checkpointing, enable_gradient_checkpointing, next_token_logits
from agents.logger import MetricsLogger
from agents.rollout import Rollout, check_rollout_env, collect_episodes
from rlhf_env.distributed import (
    GradientSync,
    all_agree,
    all_reduce_sum,
    barrier,
    current_context,
    gather_objects,
    rank_seed,
    sum_over_processes,
)
from rlhf_env.kl import AdaptiveKLController, FixedKLController
from rlhf_env.vector_env import TextGenerationVectorEnv

CHECKPOINT_FORMAT = 1
#: What every checkpoint's state.json holds.
REQUIRED_STATE = (
    "agent", "config", "num_timesteps", "iterations", "kl_controller", "numpy_rng",
)  # fmt: skip

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

    Under ``torchrun`` / ``accelerate launch`` (see :mod:`rlhf_env.distributed`) each process
    collects its own rollouts from its env (its shard of the prompts, its own seed) and every
    optimiser step averages the gradients of the processes' minibatches, each token weighted
    as in one process holding the global batch; the processes agree on timesteps, beta and
    early stops, and rank 0 logs and writes checkpoints.
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
        self.distributed = current_context()
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
                self.env.kl_coef = beta
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
        with torch.no_grad(), self.autocast():
            targets = self.compute_advantages(rollout)
        totals: dict[str, float] = {}
        steps, epochs_run = 0, 0
        micro_size = config.minibatch_size // config.gradient_accumulation_steps
        # DDP averages the processes' gradients: scale each back to a share of the global sum.
        processes = self.distributed.world_size
        stop = False
        for _ in range(config.epochs):
            epochs_run += 1
            order = self.rng.permutation(rollout.num_episodes)
            for first in range(0, len(order), config.minibatch_size):
                minibatch = order[first : first + config.minibatch_size]
                local_tokens = rollout.response_mask[minibatch].sum().reshape(1)
                minibatch_tokens = float(all_reduce_sum(local_tokens)[0])  # every process's
                self.optimizer.zero_grad(set_to_none=True)
                step_stats: dict[str, float] = {}
                firsts = range(0, len(minibatch), micro_size)
                for micro_first in firsts:
                    index = minibatch[micro_first : micro_first + micro_size]
                    batch = rollout.select(index)
                    width = batch.response_ids.shape[1]
                    micro_targets = {k: v[index, :width] for k, v in targets.items()}
                    weight = float(batch.response_mask.sum()) / minibatch_tokens
                    last = micro_first == firsts[-1]
                    with contextlib.nullcontext() if last else self.gradient_sync.no_sync():
                        with self.autocast(), checkpointing(self.checkpointed_layers):
                            loss, stats = self.gradient_sync(batch, micro_targets)
                        (loss * (weight * processes)).backward()
                    for name, value in stats.items():
                        step_stats[name] = step_stats.get(name, 0.0) + float(value) * weight
                step_stats = sum_over_processes(step_stats)  # token-weighted global means
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
        counts = gather_objects(episodes)
        if len(set(counts)) > 1:
            raise ValueError(
                f"the processes collect different numbers of responses per rollout ({counts}, "
                "by rank): give every process the same num_envs and rollout_rounds, so that "
                "they make the same optimiser steps"
            )

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint to the run directory ``path`` (atomically; see
        :mod:`agents.checkpoint`): trainable weights (safetensors), optimizer, KL controller,
        counters, RNG states and the config.

        With several processes every process must call it (they send their RNG states); rank
        0 writes, and all return once the checkpoint is complete."""
        trainable = self.trainable_parameters()
        ranks = gather_objects((self.rng.bit_generator.state, self.generator.get_state()))
        state = {
            "format": CHECKPOINT_FORMAT,
            "agent": type(self).__name__,
            "config": asdict(self.config),
            "num_timesteps": self.num_timesteps,
            "iterations": self.iterations,
            "kl_controller": {"type": type(self.kl_controller).__name__}
            | self.kl_controller.state_dict(),
            "numpy_rng": ranks[0][0],
            "world_size": len(ranks),
            "rank_numpy_rngs": [numpy_state for numpy_state, _ in ranks[1:]],
            "history": self.history,
        }
        generators = {_generator_key(rank): generator for rank, (_, generator) in enumerate(ranks)}

        def write(folder: Path) -> None:
            save_tensors(trainable, folder / "weights.safetensors")
            save_tensors(generators, folder / "rng.safetensors")
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

        name = f"checkpoint-{self.iterations:06d}"
        if self.distributed.is_main:
            write_checkpoint(path, name, write, keep=self.config.keep_checkpoints)
        barrier()
        return Path(path) / name

    @classmethod
    def load(
        cls, path: str | Path, env: TextGenerationVectorEnv, **config_overrides: Any
    ) -> PolicyGradientAgent:
        """Restore an agent from ``path`` into ``env`` (whose policy must be set up as when it
        was saved: same model, same LoRA or frozen layers). ``config_overrides`` replace saved
        config fields (e.g. ``checkpoint_dir``, ``progress_bar``); then ``learn(total)`` goes on
        where the run stopped.

        With several processes, every process loads (from a shared filesystem), each its own
        RNG states; the number of processes must be the one that wrote the checkpoint.

        Raises:
            CheckpointError: a missing, corrupt or mismatched file, named in the message.
        """
        folder = resolve_checkpoint(path)
        state = read_state(folder)
        state_file = folder / STATE_FILE
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{state_file} has checkpoint format {state.get('format')!r}; this version reads "
                f"format {CHECKPOINT_FORMAT}"
            )
        missing = sorted(set(REQUIRED_STATE) - set(state))
        if missing:
            raise CheckpointError(f"{state_file} is incomplete: it lacks {missing}")
        context = current_context()
        if state.get("world_size", 1) != context.world_size:
            raise CheckpointError(
                f"{folder / STATE_FILE} was written by {state.get('world_size', 1)} process(es); "
                f"resume it with as many (this run has {context.world_size}), e.g. torchrun "
                f"--nproc-per-node {state.get('world_size', 1)}"
            )
        if state.get("agent") != cls.__name__:
            raise CheckpointError(
                f"{folder / STATE_FILE} holds a {state.get('agent')} checkpoint; load it with "
                f"that class, not {cls.__name__}"
            )
        try:
            config = cls.config_class(**{**state["config"], **config_overrides})
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{state_file}: config does not fit: {error}") from error
        agent = cls(env, config)
        load_into_parameters(agent.trainable_parameters(), folder / "weights.safetensors")
        optimizer_file = folder / "optimizer.pt"
        try:
            agent.optimizer.load_state_dict(
                torch.load(optimizer_file, map_location=agent.device, weights_only=True)
            )
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{optimizer_file} is missing or corrupt: {error}") from error
        rank = context.rank
        generators = load_tensors(folder / "rng.safetensors")
        if _generator_key(rank) not in generators:
            raise CheckpointError(f"{folder / 'rng.safetensors'} has no RNG state of rank {rank}")
        agent.generator.set_state(generators[_generator_key(rank)])
        agent.rng.bit_generator.state = (
            state["numpy_rng"] if rank == 0 else state["rank_numpy_rngs"][rank - 1]
        )
        controller = dict(state["kl_controller"])
        if controller.pop("type", None) != type(agent.kl_controller).__name__:
            raise CheckpointError(
                f"{state_file} holds a {state['kl_controller'].get('type')} KL controller, the "
                f"config makes a {type(agent.kl_controller).__name__}: keep kl_target as saved"
            )
        agent.kl_controller.load_state_dict(controller)
        env.kl_coef = agent.kl_controller.value
        agent.num_timesteps = int(state["num_timesteps"])
        agent.iterations = int(state["iterations"])
        agent.history = list(state.get("history", []))
        return agent


def _generator_key(rank: int) -> str:
    """The torch generator state's name in ``rng.safetensors`` (rank 0: ``generator``, as
    one-process checkpoints name it)."""
    return "generator" if rank == 0 else f"generator.rank{rank}"
