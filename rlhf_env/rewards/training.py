"""Bradley-Terry training of a :class:`~rlhf_env.rewards.model.RewardModel` on preference pairs."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from rlhf_env.config import check, option
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.distributed import (
    GradientSync,
    contiguous_share,
    current_context,
    sum_over_processes,
)
from rlhf_env.rewards.model import RewardModel


@dataclass
class RewardTrainingConfig:
    """How to train a reward model on preference pairs."""

    epochs: int = option(2, "Passes over the training pairs.")
    batch_size: int = option(
        16,
        "Pairs per optimiser step, at most (group_by_prompt fills a step with whole prompts "
        "while they fit, and splits a prompt with more pairs), per process: several processes "
        "make a global step of this x their number.",
    )
    group_by_prompt: bool = option(
        True,
        "Put the pairs of a prompt in the same step and score each distinct response once "
        "(InstructGPT): fewer forwards, and no response is fitted several times per epoch, "
        "which limits overfitting. Off: pairs shuffled one by one.",
    )
    learning_rate: float = option(
        3e-5,
        "AdamW learning rate: linear warm-up over the first tenth of the steps, then linear "
        "decay to 0.",
    )
    weight_decay: float = option(0.01, "AdamW weight decay.")
    margin: float = option(
        0.0, "Required reward gap: loss = -log sigmoid(r_chosen - r_rejected - margin)."
    )
    center_coef: float = option(
        0.0, "Weight of the reward-centering term center_coef * mean((r_chosen + r_rejected)^2)."
    )
    eval_fraction: float = option(
        0.1,
        "Share of prompts whose pairs are held out for pairwise accuracy (0 disables "
        "evaluation; with too few prompts, a share of the pairs, with a warning).",
    )
    max_grad_norm: float = option(1.0, "Gradient clipping norm.")
    seed: int = option(0, "Seed of the split, the shuffling and the head's initialisation.")
    normalize: bool = option(
        True,
        "After training, set mean/std so that the distinct training responses (chosen and "
        "rejected) score mean 0, std 1.",
    )

    def __post_init__(self) -> None:
        check(
            self,
            [
                (self.epochs >= 1, "epochs must be >= 1"),
                (self.batch_size >= 1, "batch_size must be >= 1"),
                (self.learning_rate > 0, "learning_rate must be > 0 (e.g. 3e-5)"),
                (self.weight_decay >= 0, "weight_decay must be >= 0"),
                (self.margin >= 0, "margin must be >= 0 (0 disables it)"),
                (
                    self.center_coef >= 0,
                    "center_coef must be >= 0 (0 disables it; TRL uses 0.01)",
                ),
                (0 <= self.eval_fraction < 1, "eval_fraction must be in [0, 1), e.g. 0.1"),
                (self.max_grad_norm > 0, "max_grad_norm must be > 0"),
            ],
        )


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0, center_coef: float = 0.0
) -> torch.Tensor:
    """Mean of ``-log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2`` over pairs.

    The first term is the Bradley-Terry negative log-likelihood of the human choice (with an
    optional margin); the second keeps rewards centred at 0 (Eisenstein et al. 2023).
    """
    loss = -torch.nn.functional.logsigmoid(chosen - rejected - margin)  # (B,)
    if center_coef:
        loss = loss + center_coef * (chosen + rejected) ** 2
    return loss.mean()


def pairwise_accuracy(reward_model: RewardModel, pairs: Sequence[PreferencePair]) -> float:
    """Share of pairs where the chosen response scores strictly higher than the rejected."""
    if not pairs:
        raise ValueError("pairwise_accuracy needs at least one pair")
    return _correct_pairs(reward_model, pairs) / len(pairs)


def _correct_pairs(reward_model: RewardModel, pairs: Sequence[PreferencePair]) -> int:
    """How many pairs the chosen response scores strictly higher in (each text scored once)."""
    if not pairs:
        return 0
    prompts, responses, row = _distinct_texts(pairs)
    scores = reward_model.raw_scores(prompts, responses)
    chosen = scores[[row[(pair.prompt, pair.chosen)] for pair in pairs]]
    rejected = scores[[row[(pair.prompt, pair.rejected)] for pair in pairs]]
    return int((chosen > rejected).sum())


def _sharded_accuracy(reward_model: RewardModel, pairs: Sequence[PreferencePair]) -> float:
    """:func:`pairwise_accuracy` of ``pairs``, each process scoring its share."""
    return sum_over_processes(
        {"correct": float(_correct_pairs(reward_model, contiguous_share(pairs)))}
    )["correct"] / len(pairs)


def split_pairs(
    pairs: Sequence[PreferencePair], eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out the pairs of ``eval_fraction`` of the prompts (at least one prompt).

    The split is by prompt, so that no prompt, and no response, is seen both in training and
    in evaluation (several pairs often share a prompt and a response). With too few distinct
    prompts for that (one, say), the pairs themselves are split, with a warning.
    """
    if eval_fraction == 0:
        return list(pairs), []
    prompts = sorted({pair.prompt for pair in pairs})
    random.Random(seed).shuffle(prompts)
    held_out_count = max(1, round(len(prompts) * eval_fraction))
    if held_out_count >= len(prompts):
        return _split_by_pair(pairs, eval_fraction, seed, len(prompts))
    held_out_prompts = set(prompts[:held_out_count])
    train = [pair for pair in pairs if pair.prompt not in held_out_prompts]
    held_out = [pair for pair in pairs if pair.prompt in held_out_prompts]
    return train, held_out


def _split_by_pair(
    pairs: Sequence[PreferencePair], eval_fraction: float, seed: int, prompt_count: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    held_out_count = max(1, round(len(pairs) * eval_fraction))
    if held_out_count >= len(pairs):
        raise ValueError(
            f"{len(pairs)} pair(s) are too few to hold out {eval_fraction:.0%} for evaluation; "
            "add pairs or set eval_fraction to 0 (no held-out accuracy)"
        )
    warnings.warn(
        f"the pairs have {prompt_count} distinct prompt(s), too few to hold out "
        f"{eval_fraction:.0%} of the prompts: holding out {held_out_count} of the "
        f"{len(pairs)} pairs instead (a response may then be seen in training and in "
        "evaluation, which flatters the held-out accuracy)",
        stacklevel=3,
    )
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:held_out_count])
    train = [pair for i, pair in enumerate(pairs) if i not in held_out]
    return train, [pair for i, pair in enumerate(pairs) if i in held_out]


def train_reward_model(
    reward_model: RewardModel,
    pairs: Sequence[PreferencePair],
    config: RewardTrainingConfig | None = None,
    progress: bool = True,
) -> dict:
    """Train ``reward_model`` in place with the Bradley-Terry loss; returns metrics.

    Metrics: ``loss`` (per step), ``train_pairs``, ``eval_pairs``, ``eval_accuracy`` (held-out
    pairwise accuracy after each epoch, the last being the final figure), ``initial_eval_accuracy``,
    ``seconds``, ``normalization`` (mean, std) and the ``config``.

    Under ``torchrun`` (:mod:`rlhf_env.distributed`) every process passes the same pairs: a
    global step takes ``batch_size x processes`` pairs, each process computes the loss of its
    share, and the gradients are averaged (each pair weighted as in one process); the held-out
    accuracy is shared out too. The trained model is the same on every process.
    """
    config = config or RewardTrainingConfig()
    if not pairs:
        raise ValueError("train_reward_model needs at least one preference pair")
    train, held_out = split_pairs(pairs, config.eval_fraction, config.seed)
    model = reward_model.model
    processes = current_context().world_size
    sync = GradientSync({"model": model}, reward_model.raw_forward)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    rng = random.Random(config.seed + 1)
    step_size = config.batch_size * processes
    epochs = [_epoch_batches(train, config, step_size, rng) for _ in range(config.epochs)]
    total_steps = sum(len(batches) for batches in epochs)
    warmup = max(1, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup + 1))
        ),
    )
    metrics: dict = {
        "train_pairs": len(train),
        "eval_pairs": len(held_out),
        "loss": [],
        "eval_accuracy": [],
        "config": asdict(config),
    }
    if held_out:
        metrics["initial_eval_accuracy"] = _sharded_accuracy(reward_model, held_out)
    start = time.perf_counter()
    show = progress and current_context().is_main
    bar = tqdm(total=total_steps, desc="reward model", unit="step", disable=not show)
    for batches in epochs:
        model.train()
        for batch in batches:
            # 1. this process's share of the step (a prompt's pairs mostly stay together, so
            # each distinct response is still scored about once): its part of the global mean
            share = contiguous_share(batch)
            weight = len(share) / len(batch)
            if not share:  # more processes than pairs: a forward that adds nothing
                share = batch[:1]
            # 2. one forward over the share's distinct (prompt, response) texts: (D,)
            prompts, responses, row = _distinct_texts(share)
            rewards = sync(prompts, responses)
            chosen = rewards[[row[(pair.prompt, pair.chosen)] for pair in share]]  # (B,)
            rejected = rewards[[row[(pair.prompt, pair.rejected)] for pair in share]]  # (B,)
            loss = bradley_terry_loss(chosen, rejected, config.margin, config.center_coef)
            # 3. step (DDP averages the processes' gradients: scale back to a share of the sum)
            optimizer.zero_grad(set_to_none=True)
            (loss * (weight * processes)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            metrics["loss"].append(sum_over_processes({"loss": loss.item() * weight})["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss'][-1]:.3f}")
        model.eval()
        if held_out:
            metrics["eval_accuracy"].append(_sharded_accuracy(reward_model, held_out))
            bar.set_postfix(
                loss=f"{metrics['loss'][-1]:.3f}", acc=f"{metrics['eval_accuracy'][-1]:.3f}"
            )
    bar.close()
    if config.normalize:
        # Each distinct (prompt, response) once: a response is usually in several pairs.
        prompts, responses, _ = _distinct_texts(train)
        reward_model.normalize(prompts, responses)
    metrics["normalization"] = {"mean": reward_model.mean, "std": reward_model.std}
    metrics["seconds"] = time.perf_counter() - start
    return metrics


def _distinct_texts(
    pairs: Sequence[PreferencePair],
) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    """The distinct ``(prompt, response)`` texts of ``pairs`` (chosen and rejected, first-seen
    order) as prompts and responses, and each text's row among them."""
    texts = dict.fromkeys(
        (pair.prompt, response) for pair in pairs for response in (pair.chosen, pair.rejected)
    )
    row = {text: i for i, text in enumerate(texts)}
    return [prompt for prompt, _ in texts], [response for _, response in texts], row


def _epoch_batches(
    train: Sequence[PreferencePair],
    config: RewardTrainingConfig,
    batch_size: int,
    rng: random.Random,
) -> list[list[PreferencePair]]:
    """One epoch's steps of at most ``batch_size`` pairs: shuffled pairs, or with
    ``group_by_prompt`` shuffled prompts with all their pairs, as many as fit in a step (a
    prompt with more than ``batch_size`` pairs is split into steps of its own)."""
    if not config.group_by_prompt:
        order = list(range(len(train)))
        rng.shuffle(order)
        return [
            [train[i] for i in order[first : first + batch_size]]
            for first in range(0, len(order), batch_size)
        ]
    groups: dict[str, list[PreferencePair]] = {}
    for pair in train:
        groups.setdefault(pair.prompt, []).append(pair)
    prompts = list(groups)
    rng.shuffle(prompts)
    batches: list[list[PreferencePair]] = [[]]
    for prompt in prompts:
        group = groups[prompt]
        for first in range(0, len(group), batch_size):
            chunk = group[first : first + batch_size]
            if batches[-1] and len(batches[-1]) + len(chunk) > batch_size:
                batches.append([])
            batches[-1].extend(chunk)
    return batches
