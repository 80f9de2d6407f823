"""``rlhf-env demo``: the whole RLHF pipeline offline, with a report (:mod:`rlhf_pipeline`)."""

from __future__ import annotations

import argparse
from typing import Any

from rlhf_pipeline.cli.options import add_dataclass_arguments, dataclass_values


def demo(args: argparse.Namespace) -> int:
    from rlhf_pipeline import DemoConfig, run_demo

    values = dataclass_values(DemoConfig, args)
    config = DemoConfig.smoke(**values) if args.smoke else DemoConfig(**values)
    run_demo(config, overwrite=args.overwrite)
    return 0


def register(commands: Any) -> None:
    """Add ``demo``."""
    from rlhf_pipeline import DemoConfig

    parser = commands.add_parser(
        "demo",
        help="the whole RLHF pipeline offline on the PositiveReview task, with a report",
        description="Build the rlhf_env/PositiveReview-v0 task for SmolLM2 (a MiniLM sentiment "
        "judge trained on labelled reviews as the gold labeller; SmolLM2's sampled responses "
        "labelled by it; a MiniLM reward model trained on those pairs; both cached in the task "
        "cache), fine-tune the policy with PPO and KL control against the learned reward, "
        "evaluate before and after on the task's held-out prompts (gold judge, judge x "
        "fluency, VADER, learned reward, KL, perplexity, distinct-n, repetition, length), and "
        "write report.md with plots into --out. Running the same command again resumes an "
        "interrupted run.",
    )
    parser.add_argument("--config", help="YAML or JSON file of the options below")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the task's tiny variant (tiny random models, a few prompts) and a few steps: "
        "checks every stage in seconds (no learning)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete the run folder's contents first"
    )
    add_dataclass_arguments(parser, DemoConfig, suppress_defaults=True)
    parser.set_defaults(handler=demo, command_parser=parser)
