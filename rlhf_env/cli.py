"""The ``rlhf-env`` command line: thin wrappers over the Python API.

rlhf-env data show SOURCE --index I
rlhf-env data synth --policy NAME --out pairs.jsonl
rlhf-env train-rm --pairs pairs.jsonl --backbone NAME_OR_PATH --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--field-name`` option per field of a config dataclass, with its default."""
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = f"{field.metadata.get('help', '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def dataclass_from_args(config_class: type, args: argparse.Namespace) -> Any:
    """Build the config dataclass from parsed options (its ``__post_init__`` validates them)."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})


# -- data show / data synth -------------------------------------------------------------------


def _side_by_side(left: str, right: str, width: int) -> str:
    column = max(20, (width - 3) // 2)
    left_lines = textwrap.wrap(left, column) or [""]
    right_lines = textwrap.wrap(right, column) or [""]
    rows = max(len(left_lines), len(right_lines))
    left_lines += [""] * (rows - len(left_lines))
    right_lines += [""] * (rows - len(right_lines))
    return "\n".join(f"{a:<{column}} | {b}" for a, b in zip(left_lines, right_lines, strict=True))


def data_show(args: argparse.Namespace) -> int:
    from rlhf_env.data.preferences import load_pairs

    pairs = load_pairs(args.source, split=args.split)
    if not -len(pairs) <= args.index < len(pairs):
        print(f"error: index {args.index} is outside the {len(pairs)} pairs", file=sys.stderr)
        return 2
    pair = pairs[args.index]
    width = shutil.get_terminal_size((100, 20)).columns
    column = max(20, (width - 3) // 2)
    print(f"pair {args.index % len(pairs)} of {len(pairs)} in {args.source}")
    print("PROMPT")
    print(textwrap.indent(pair.prompt.strip() or "(empty)", "  "))
    print(f"{'CHOSEN':<{column}} | REJECTED")
    print(_side_by_side(pair.chosen.strip(), pair.rejected.strip(), width))
    return 0


def _oracle(name: str):
    from rlhf_env.rewards.oracles import TextBlobPolarity, VaderSentiment

    return {"vader": VaderSentiment, "textblob": TextBlobPolarity}[name]()


def _prompts(source: str, count: int, offset: int) -> list[str]:
    from rlhf_env.data.prompts import imdb_prompts, text_file_prompts

    if source == "imdb":
        return imdb_prompts(count=count, offset=offset)
    return text_file_prompts(source)[offset : offset + count]


def data_synth(args: argparse.Namespace) -> int:
    from rlhf_env import assets
    from rlhf_env.data.preferences import write_jsonl_pairs
    from rlhf_env.data.synthetic import label_pairs, sample_responses
    from rlhf_env.models import load_causal_lm, load_tokenizer

    folder = assets.resolve(args.policy)
    policy, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    prompts = _prompts(args.prompts, args.num_prompts, args.prompt_offset)
    responses = sample_responses(
        policy, tokenizer, prompts, args.responses_per_prompt, args.max_new_tokens,
        args.temperature, args.batch_size, args.seed,
    )  # fmt: skip
    pairs = label_pairs(
        prompts, responses, _oracle(args.oracle), args.noise_k, args.min_gap, args.seed
    )
    write_jsonl_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} pairs from {len(prompts)} prompts to {args.out}")
    return 0


# -- train-rm ---------------------------------------------------------------------------------


def train_rm(args: argparse.Namespace) -> int:
    from rlhf_env import assets
    from rlhf_env.data.preferences import load_pairs
    from rlhf_env.rewards.model import RewardModel
    from rlhf_env.rewards.training import RewardTrainingConfig, train_reward_model

    config = dataclass_from_args(RewardTrainingConfig, args)
    pairs = load_pairs(args.pairs)
    reward_model = RewardModel.from_backbone(
        assets.resolve(args.backbone),
        max_length=args.max_length,
        seed=config.seed,
        include_prompt=not args.response_only,
        pooling=args.pooling,
    )
    metrics = train_reward_model(reward_model, pairs, config)
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


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``rlhf-env`` argument parser."""
    from rlhf_env.rewards.training import RewardTrainingConfig

    parser = argparse.ArgumentParser(prog="rlhf-env", description="RLHF as a Gymnasium env.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect and make preference data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    show = data_commands.add_parser("show", help="print one preference pair side by side")
    show.add_argument("source", help="a .jsonl file, a local data file, or a datasets hub name")
    show.add_argument("--index", type=int, default=0, help="which pair (default 0)")
    show.add_argument("--split", default="train", help="datasets split (default train)")
    show.set_defaults(handler=data_show)

    synth = data_commands.add_parser(
        "synth", help="sample responses from a policy and label pairs with a gold oracle"
    )
    synth.add_argument("--policy", default="smollm2-135m-instruct", help="model name or path")
    synth.add_argument("--prompts", default="imdb", help="'imdb' or a text file, one per line")
    synth.add_argument("--num-prompts", type=int, default=512)
    synth.add_argument("--prompt-offset", type=int, default=0, help="skip this many prompts")
    synth.add_argument("--responses-per-prompt", type=int, default=2)
    synth.add_argument("--max-new-tokens", type=int, default=32)
    synth.add_argument("--temperature", type=float, default=1.0)
    synth.add_argument("--batch-size", type=int, default=16)
    synth.add_argument("--oracle", choices=["vader", "textblob"], default="vader")
    synth.add_argument(
        "--noise-k", type=float, default=None,
        help="Bradley-Terry label noise: P(A>B) = sigmoid(k (s_A - s_B)); default deterministic",
    )  # fmt: skip
    synth.add_argument("--min-gap", type=float, default=0.0, help="skip pairs closer than this")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="output .jsonl")
    synth.set_defaults(handler=data_synth)

    train = commands.add_parser("train-rm", help="train a reward model on preference pairs")
    train.add_argument("--pairs", type=Path, required=True, help="preference pairs (.jsonl)")
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
        choices=["head", "sum", "mean"],
        default="head",
        help="head: the sequence-classification head; sum/mean: per-token scores summed or "
        "averaged (an additive reward)",
    )
    add_dataclass_arguments(train, RewardTrainingConfig)
    train.set_defaults(handler=train_rm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rlhf-env``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"rlhf-env: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
