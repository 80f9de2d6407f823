"""``rlhf-env data show`` and ``rlhf-env data synth``: inspect and make preference data."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from rlhf_env.rewards.oracles import ORACLES


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


def data_synth(args: argparse.Namespace) -> int:
    from rlhf_env import assets
    from rlhf_env.data.preferences import write_jsonl_pairs
    from rlhf_env.data.prompts import named_prompts
    from rlhf_env.data.synthetic import label_pairs, sample_responses
    from rlhf_env.models import load_causal_lm, load_tokenizer
    from rlhf_env.rewards.oracles import make_oracle

    folder = assets.resolve(args.policy)
    policy, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    prompts = named_prompts(args.prompts, args.num_prompts, args.prompt_offset)
    responses = sample_responses(
        policy, tokenizer, prompts, args.responses_per_prompt, args.max_new_tokens,
        args.temperature, args.batch_size, args.seed,
    )  # fmt: skip
    pairs = label_pairs(
        prompts, responses, make_oracle(args.oracle), args.noise_k, args.min_gap, args.seed
    )
    write_jsonl_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} pairs from {len(prompts)} prompts to {args.out}")
    return 0


def register(commands: Any) -> None:
    """Add the ``data`` command group."""
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
    synth.add_argument(
        "--prompts",
        default="imdb",
        help="'imdb' (reviews in file order: negative ones first), 'imdb-balanced', or a text "
        "file with one prompt per line",
    )
    synth.add_argument("--num-prompts", type=int, default=512)
    synth.add_argument("--prompt-offset", type=int, default=0, help="skip this many prompts")
    synth.add_argument("--responses-per-prompt", type=int, default=2)
    synth.add_argument("--max-new-tokens", type=int, default=32)
    synth.add_argument("--temperature", type=float, default=1.0)
    synth.add_argument("--batch-size", type=int, default=16)
    synth.add_argument("--oracle", choices=list(ORACLES), default="vader")
    synth.add_argument(
        "--noise-k", type=float, default=None,
        help="Bradley-Terry label noise: P(A>B) = sigmoid(k (s_A - s_B)); default deterministic",
    )  # fmt: skip
    synth.add_argument("--min-gap", type=float, default=0.0, help="skip pairs closer than this")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="output .jsonl")
    synth.set_defaults(handler=data_synth)
