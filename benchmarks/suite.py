"""The benchmark suite: every agent on every task and seed, on equal token budgets.

Each run trains a fresh policy for ``--timesteps`` generated tokens, evaluates the task's
held-out prompts at ``--eval-points`` of the budget (the learning curve) and at the end on
all of them; the leaderboard ranks the agents of each task by the gold score, with 95%
intervals pooling seeds and held-out prompts and each agent's gold compared with the
reference's and the best's on the same prompts (Holm-corrected; :mod:`rlhf_pipeline.statistics`).
The library is :mod:`rlhf_pipeline.suite` (what a
seed sets, how the agents share their optimiser settings, the JSON's fields).

Writes JSON (``--out``; finished runs of the same settings are kept and skipped, so an
interrupted suite resumes), prints the leaderboards, and with ``--markdown`` / ``--plot``
writes them as Markdown (for RESULTS.md) and the gold-score learning curves.

    python benchmarks/suite.py --smoke  # seconds: every task's tiny variant (plumbing)
    python benchmarks/suite.py --tasks PositiveReview --seeds 0 1 2 --timesteps 65536 \\
        --plot benchmarks/results/suite.png --markdown benchmarks/results/suite.md
    python benchmarks/suite.py --agents ppo reference --agent mine=my_package.agents:MyAgent
    python benchmarks/suite.py --timesteps 2048 --task-timesteps Arithmetic=1024 \\
        --task-option Harmless.max_new_tokens=24  # a budget and options of one task
    rlhf-env bench suite --smoke --tasks Arithmetic --agents ppo sb3-ppo reference

One suite can run as several processes, each on some of its tasks or seeds and otherwise the
same settings (on 2 cores: two of one thread each, as the 90-minute suite of
benchmarks/RESULTS.md ran); then merge the parts:

    OMP_NUM_THREADS=1 python benchmarks/suite.py --tasks Harmless --out a.json &
    OMP_NUM_THREADS=1 python benchmarks/suite.py --tasks Arithmetic --out b.json &
    wait; python benchmarks/suite.py --results a.json b.json --out suite.json --markdown suite.md
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from rlhf_pipeline.cli.options import add_dataclass_arguments, dataclass_values
from rlhf_pipeline.leaderboard import format_leaderboard, plot_curves
from rlhf_pipeline.suite import BUILTIN_AGENTS, SuiteConfig, SuiteResult, run_suite

RESULTS = Path(__file__).parent / "results"
#: The fields that take several values, or KEY=VALUE pairs, on the command line.
LIST_FIELDS = (
    "tasks", "agents", "seeds", "eval_points", "options", "task_options", "task_timesteps",
    "agent_options",
)  # fmt: skip


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value read as JSON where it parses (``16``, ``0.1``, ``null``)."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_option_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--option KEY=VALUE`` (env and task options) of the benchmark scripts."""
    parser.add_argument(
        "--option", action="append", default=[], type=key_value, metavar="KEY=VALUE", help=help
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--tasks", nargs="+", help="task names (default: every registered task)")
    add(
        "--agents",
        nargs="+",
        help="agents: ppo rloo grpo sb3-ppo reference random (default: "
        "all), or [NAME=]package.module:Class",
    )
    add(
        "--agent",
        action="append",
        default=[],
        metavar="[NAME=]MODULE:CLASS",
        help="one's own agent class, (env, **config) -> Agent, added to --agents; repeatable",
    )
    add("--seeds", nargs="+", type=int, help="default: 0 1 2 (--smoke: 0 1)")
    add(
        "--eval-points",
        nargs="+",
        type=float,
        metavar="FRACTION",
        help="fractions of the budget evaluated for the curve (default: 0 0.25 0.5 0.75 1)",
    )
    add_dataclass_arguments(parser, SuiteConfig, skip=LIST_FIELDS, suppress_defaults=True)
    add_option_argument(
        parser,
        "an env or task option for make_task_vector_env (e.g. max_new_tokens=16); repeatable",
    )
    add(
        "--task-option",
        action="append",
        default=[],
        type=key_value,
        metavar="TASK.KEY=VALUE",
        help="an env or task option of one task, over --option (e.g. "
        "Harmless.max_new_tokens=24); repeatable",
    )
    add(
        "--task-timesteps",
        action="append",
        default=[],
        type=key_value,
        metavar="TASK=N",
        help="one task's training budget instead of --timesteps (e.g. Arithmetic=1024); repeatable",
    )
    add(
        "--agent-option",
        action="append",
        default=[],
        type=key_value,
        metavar="AGENT.KEY=VALUE",
        help="an argument of one agent (e.g. ppo.vf_coef=0.2); repeatable",
    )
    add(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (one that registers tasks of one's own); repeatable",
    )
    add(
        "--out",
        type=Path,
        help="results JSON (default: results/suite.json, results/suite_smoke.json with --smoke; "
        "with --results: where the merged results go)",
    )
    add("--fresh", action="store_true", help="overwrite --out instead of resuming it")
    add(
        "--results",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="run nothing: print (and --markdown, --plot) the leaderboards of these results "
        "files, merged (the parts of one suite run in several processes, same settings)",
    )
    add("--markdown", type=Path, metavar="FILE", help="also write the leaderboards as Markdown")
    add("--plot", type=Path, metavar="FILE.png|DIR", help="draw the gold-score learning curves")
    return parser


def config_from(args: argparse.Namespace) -> SuiteConfig:
    """The suite's config from the parsed arguments (those not given keep the defaults, or the
    smoke settings with --smoke)."""
    given = dataclass_values(SuiteConfig, args)  # the options given, and the lists' None
    settings = {k: v for k, v in given.items() if k not in LIST_FIELDS or v is not None}
    settings["agents"] = tuple([*(args.agents or BUILTIN_AGENTS), *args.agent])
    settings["options"] = dict(args.option)
    settings["task_options"] = nested(args.task_option, "--task-option", "TASK")
    settings["task_timesteps"] = dict(args.task_timesteps)
    settings["agent_options"] = nested(args.agent_option, "--agent-option", "AGENT")
    return SuiteConfig.create(**settings)


def nested(pairs: list[tuple[str, Any]], flag: str, owner: str) -> dict[str, dict[str, Any]]:
    """``[("ppo.vf_coef", 0.2), ...]`` as ``{"ppo": {"vf_coef": 0.2}}``."""
    values: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        name, dot, option = key.partition(".")
        if not dot or not name or not option:
            raise SystemExit(f"{flag} takes {owner}.KEY=VALUE, got {key}={value}")
        values.setdefault(name, {})[option] = value
    return values


def main() -> None:
    args = build_parser().parse_args()
    for module in args.imports:
        importlib.import_module(module)
    if args.results:
        result = SuiteResult.merge([SuiteResult.read(path) for path in args.results])
        written = [result.write(args.out)] if args.out else []
    else:
        config = config_from(args)
        out = args.out or RESULTS / ("suite_smoke.json" if config.smoke else "suite.json")
        result = run_suite(config, out=out, fresh=args.fresh, log=print_now)
        print()
        written = [out]
    print(format_leaderboard(result))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_leaderboard(result, markdown=True))
        written.append(args.markdown)
    if args.plot:
        written += plot_curves(result, args.plot)
    if written:
        print("\nwrote " + ", ".join(str(path) for path in written))


def print_now(line: str) -> None:
    """Print a progress line at once (the suite runs for minutes between lines)."""
    print(line, flush=True)


if __name__ == "__main__":
    main()
