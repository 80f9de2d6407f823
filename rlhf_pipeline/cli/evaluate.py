"""``rlhf-env eval``: a policy on held-out prompts, from a task or from named prompts.

With ``--task NAME`` the env is the task's (``rlhf_env.tasks.make_task_vector_env``): its
held-out prompts, training reward and gold metrics. Without it, the env is built from
``--prompts``, ``--reward`` and ``--gold`` as ``rlhf-env train`` builds its own. Either way
it prints every figure of :func:`rlhf_pipeline.held_out.evaluate_policy` with its standard
error, and ``--out`` writes them as JSON with the samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from rlhf_env.config import VectorEnvConfig
from rlhf_env.rewards.oracles import ORACLES
from rlhf_pipeline.cli.options import add_dataclass_arguments, dataclass_values
from rlhf_pipeline.cli.train import _make_env, _prompts

#: The agents that ``eval --agent`` takes: they sample, they do not learn.
EVAL_AGENTS = ("policy", "reference", "random")

#: ``eval``'s defaults without ``--task`` (with it, the task decides).
NAMED_PROMPT_DEFAULTS = {
    "policy": "smollm2-135m-instruct",
    "reward": "vader",
    "prompts": "imdb-balanced",
    "num_prompts": 128,
    "prompt_offset": 6000,
    "gold": "vader",
}

#: Options a task brings itself, by flag.
TASK_OWNED = {"--reward": "reward", "--prompts": "prompts", "--prompt-offset": "prompt_offset",
              "--gold": "gold"}  # fmt: skip


def evaluate_command(args: argparse.Namespace) -> int:
    """Build the env (a task's, or from named prompts), evaluate, print and write."""
    if args.num_prompts is not None and args.num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {args.num_prompts}")
    env, prompts, about = _task_env(args) if args.task else _named_prompts_env(args)
    from rlhf_agents import make_agent
    from rlhf_pipeline.held_out import evaluate_policy

    agent = make_agent(args.agent, env, seed=args.seed)
    result = evaluate_policy(
        env, prompts, about.pop("oracle", None), seed=args.seed, progress=True, agent=agent,
        fluency=args.fluency,
    )  # fmt: skip
    print_figures(result["summary"], result["sem"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {**about, "agent": args.agent, **result}
        args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


def print_figures(summary: dict[str, Any], sem: dict[str, float]) -> None:
    """One line per figure: its name, value and standard error (blank where it has none)."""
    width = max(len(name) for name in summary)
    print(f"{'figure':>{width}}  {'value':>10}  {'sem':>8}")
    for name, value in summary.items():
        if name == "gold_score_sem":
            continue  # the sem column of gold_score
        shown = f"{value:>10.4f}" if isinstance(value, float) else f"{value:>10}"
        error = f"{sem[name]:>8.4f}" if name in sem else ""
        print(f"{name:>{width}}  {shown}  {error}".rstrip())


def _task_env(args: argparse.Namespace) -> tuple[Any, list[str], dict[str, Any]]:
    """The task's vector env, its held-out prompts (the first ``--num-prompts``), and what
    the JSON records about it."""
    from rlhf_env import assets
    from rlhf_env.tasks import make_task_vector_env, smoke_arguments, task_spec

    try:
        spec = task_spec(args.task)
    except KeyError as error:
        raise ValueError(f"{error.args[0]} (rlhf-env tasks lists them)") from None
    given = [flag for flag, dest in TASK_OWNED.items() if getattr(args, dest) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} do(es) not apply with --task: the task brings its own prompts, "
            "reward and gold metrics (--num-prompts evaluates on fewer of its held-out prompts)"
        )
    arguments: dict[str, Any] = smoke_arguments(spec.name, seed=args.seed) if args.smoke else {}
    if args.policy is not None:
        arguments.pop("tokenizer", None)
        arguments["policy"] = args.policy
    if args.reference is not None:
        arguments["reference"] = assets.resolve(args.reference)
    elif args.policy is not None and not args.smoke:
        # A trained policy's KL is to the policy it started from: the task's default.
        arguments["reference"] = assets.resolve(spec.policy)
    # Only the env settings given on the command line override the task's defaults.
    env = make_task_vector_env(spec.name, **arguments, **dataclass_values(VectorEnvConfig, args))
    prompts = env.task.eval_prompts[: args.num_prompts]
    about = {"task": spec.env_id, "smoke": args.smoke, "details": env.task.details}
    return env, prompts, about


def _named_prompts_env(args: argparse.Namespace) -> tuple[Any, list[str], dict[str, Any]]:
    """The env of ``--policy``, ``--prompts`` and ``--reward``, as ``train`` builds it."""
    from rlhf_env import assets
    from rlhf_env.models import load_causal_lm, load_tokenizer
    from rlhf_env.rewards.oracles import make_oracle

    if args.smoke:
        raise ValueError("--smoke applies to --task (a task's tiny variant)")
    for name, default in NAMED_PROMPT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for field in dataclasses.fields(VectorEnvConfig):
        if not hasattr(args, field.name):
            setattr(args, field.name, field.default)
    folder = assets.resolve(args.policy)
    policy = load_causal_lm(folder, device=args.device, dtype=torch.float32)
    reference = (
        load_causal_lm(assets.resolve(args.reference), device=args.device, dtype=torch.float32)
        if args.reference
        else None
    )
    prompts = _prompts(args)
    num_envs = min(args.num_envs, len(prompts))
    env = _make_env(args, policy, load_tokenizer(folder), reference, prompts, num_envs=num_envs)
    about: dict[str, Any] = {"policy": str(args.policy)}
    if args.gold != "none":
        about["oracle"] = make_oracle(args.gold)
    return env, prompts, about


def register(commands: Any) -> None:
    """Add ``eval``."""
    evaluation = commands.add_parser(
        "eval",
        help="evaluate a policy on held-out prompts: gold score, reward, KL, fluency, diversity",
        description="Sample one response per held-out prompt from --policy (a model folder, "
        "e.g. OUT/policy from train or the demo; or --agent reference / random) and report, "
        "each with its standard error: the gold score, the learned reward, the KL to "
        "--reference, the perplexity of the responses under the reference (--no-fluency "
        "skips that forward), distinct-1/2, repetition and length. With --task NAME (see "
        "rlhf-env tasks) the env, prompts, reward and gold metrics are the task's; without "
        "it they come from --prompts, --reward and --gold.",
    )
    evaluation.add_argument("--config", help="YAML or JSON file of the options below")
    evaluation.add_argument(
        "--task",
        default=None,
        help="a registered task (rlhf-env tasks), by name or id: evaluate on its held-out "
        "prompts with its reward and gold metrics",
    )
    evaluation.add_argument(
        "--smoke",
        action="store_true",
        help="with --task: its tiny variant (a random tiny policy; plumbing, not results)",
    )
    evaluation.add_argument(
        "--agent",
        choices=EVAL_AGENTS,
        default="policy",
        help="what answers: the policy (default), the env's reference, or random tokens",
    )
    evaluation.add_argument(
        "--reference",
        default=None,
        help="model the KL and the perplexity are measured against (default: the policy "
        "itself; with --task and --policy, the task's default policy, which training started "
        "from)",
    )
    evaluation.add_argument(
        "--gold",
        choices=[*ORACLES, "none"],
        default=None,
        help="gold oracle without --task (default vader)",
    )
    evaluation.add_argument(
        "--fluency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the responses' perplexity under the reference (one more forward)",
    )
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    evaluation.add_argument(
        "--policy",
        default=None,
        help="hub name, folder, or asset name (default: with --task the task's policy, else "
        "smollm2-135m-instruct)",
    )
    evaluation.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="held-out prompts to evaluate on (default: with --task all of the task's, else 128)",
    )
    evaluation.add_argument(
        "--reward",
        default=None,
        help=f"without --task: {' or '.join(map(repr, ORACLES))} (gold oracles), or a "
        "reward-model folder from train-rm (default vader)",
    )
    evaluation.add_argument(
        "--prompts",
        default=None,
        help="without --task: 'imdb', 'imdb-balanced' (default) or a text file, one prompt "
        "per line",
    )
    evaluation.add_argument(
        "--prompt-offset",
        type=int,
        default=None,
        help="without --task: skip this many prompts (per label for imdb-balanced; default 6000)",
    )
    # The env's settings; those left out keep the task's defaults (or, without --task, the
    # env's), so they are absent from the parsed options unless given.
    add_dataclass_arguments(evaluation, VectorEnvConfig, suppress_defaults=True)
    evaluation.set_defaults(handler=evaluate_command, command_parser=evaluation)
