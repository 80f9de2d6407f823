"""The ``rlhf-env`` command line: thin wrappers over the Python API.

rlhf-env demo                       the whole pipeline offline on PositiveReview, with a report
rlhf-env data show SOURCE --index I one preference pair side by side
rlhf-env data synth --out FILE      sampled responses labelled by a gold oracle
rlhf-env train-rm --pairs FILE ...  a reward model on preference pairs
rlhf-env train --agent ppo ...      RL fine-tuning in the vector env
rlhf-env eval --policy DIR ...      gold score, reward, KL, fluency, diversity on held-out prompts
rlhf-env eval --task NAME ...       the same on a ready-made task's env and held-out prompts
rlhf-env tasks                      the ready-made tasks and their options
rlhf-env bench NAME                 a benchmark script

``demo``, ``train`` and ``eval`` take ``--config FILE`` (YAML or JSON); options given on the
command line override the file. ``train`` and ``train-rm`` also run under ``torchrun`` /
``accelerate launch`` (data parallel); the other commands refuse to, rather than run once per
process into the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rlhf_env.distributed import launched_in_parallel, launched_rank
from rlhf_pipeline.cli import bench, data, demo, evaluate, reward_model, tasks, train
from rlhf_pipeline.cli.options import apply_config_file

#: The commands that run data-parallel under torchrun / accelerate launch.
DATA_PARALLEL_COMMANDS = ("train", "train-rm")


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors rank 0 alone prints under torchrun (all exit with 2)."""

    def error(self, message: str):  # type: ignore[override]
        if launched_rank() == 0:
            self.print_usage(sys.stderr)
            self.exit(2, f"{self.prog}: error: {message}\n")
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``rlhf-env`` argument parser."""
    parser = _Parser(prog="rlhf-env", description="RLHF as a Gymnasium env.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (demo, data, reward_model, train, evaluate, tasks, bench):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rlhf-env``; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if launched_in_parallel() and args.command not in DATA_PARALLEL_COMMANDS:
        _error(
            f"{args.command} runs in one process; of the commands, only "
            f"{' and '.join(DATA_PARALLEL_COMMANDS)} run under torchrun or accelerate launch"
        )
        return 1
    try:
        if getattr(args, "config", None):
            args = apply_config_file(parser, args.command_parser, args.config, argv)
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        _error(str(error))
        return 1


def _error(message: str) -> None:
    """Print a command's error once: under torchrun or accelerate launch every process exits
    with it (non-zero), and rank 0 alone says why."""
    if launched_rank() == 0:
        print(f"rlhf-env: error: {message}", file=sys.stderr)
