"""``rlhf-env train-rm``: train a reward model on preference pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlhf_env.rewards.model import POOLINGS
from rlhf_pipeline.cli.options import add_dataclass_arguments, dataclass_from_args


def train_rm(args: argparse.Namespace) -> int:
    from rlhf_env import assets
    from rlhf_env.data.preferences import load_pairs
    from rlhf_env.distributed import init_distributed
    from rlhf_env.rewards.model import RewardModel
    from rlhf_env.rewards.training import RewardTrainingConfig, train_reward_model

    config = dataclass_from_args(RewardTrainingConfig, args)
    context = init_distributed()  # under torchrun: join the group (one process: nothing)
    pairs = load_pairs(args.pairs)
    reward_model = RewardModel.from_backbone(
        assets.resolve(args.backbone),
        max_length=args.max_length,
        seed=config.seed,
        include_prompt=not args.response_only,
        pooling=args.pooling,
        device=context.device if context.enabled else None,
    )
    metrics = train_reward_model(reward_model, pairs, config)
    if not context.is_main:
        return 0
    out = Path(args.out)
    reward_model.save_pretrained(out)
    metrics.update(pairs_file=str(args.pairs), backbone=str(args.backbone))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    accuracy = metrics["eval_accuracy"][-1] if metrics["eval_accuracy"] else float("nan")
    print(
        f"held-out pairwise accuracy {accuracy:.3f} on {metrics['eval_pairs']} pairs "
        f"(before training {metrics.get('initial_eval_accuracy', float('nan')):.3f}); "
        f"final loss {metrics['loss'][-1]:.4f}; {metrics['seconds']:.0f} s; wrote {out}"
    )
    return 0


def register(commands: Any) -> None:
    """Add ``train-rm``."""
    from rlhf_env.rewards.training import RewardTrainingConfig

    train = commands.add_parser("train-rm", help="train a reward model on preference pairs")
    train.add_argument(
        "--pairs", type=Path, required=True, help="preference pairs (.jsonl or .jsonl.gz)"
    )
    train.add_argument(
        "--backbone", required=True, help="hub name, local folder, or all-minilm-l6-v2"
    )
    train.add_argument("--out", type=Path, required=True, help="output folder")
    train.add_argument("--max-length", type=int, default=256, help="tokens per text")
    train.add_argument(
        "--response-only",
        action="store_true",
        help="score the response alone, not (prompt, response): for preferences that depend "
        "on the response only, such as the sentiment oracles' labels",
    )
    train.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="head",
        help="head: the sequence-classification head; sum/mean: per-token scores summed or "
        "averaged (an additive reward)",
    )
    add_dataclass_arguments(train, RewardTrainingConfig)
    train.set_defaults(handler=train_rm)
