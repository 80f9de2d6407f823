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
        help="the whole RLHF pipeline offline on the packaged models, with a report",
        description="Sample responses from SmolLM2, label preferences with VADER, train a "
        "MiniLM reward model, fine-tune the policy with PPO and KL control, evaluate before and "
        "after on held-out prompts, and write report.md with plots into --out. Running the "
        "same command again resumes an interrupted run.",
    )
    parser.add_argument("--config", help="YAML or JSON file of the options below")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny random models and a few steps: checks every stage in seconds (no learning)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete the run folder's contents first"
    )
    add_dataclass_arguments(parser, DemoConfig, suppress_defaults=True)
    parser.set_defaults(handler=demo, command_parser=parser)
