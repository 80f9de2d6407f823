"""Shared compute on and off, side by side: an RL iteration's rollout and update seconds.

Copies of the same setup (a task's vector env on SmolLM2-135M-Instruct under ``frozen:N``, an
RLOO agent) differ in the switches: ``on`` shares everything (``share_trunk``: the engine
runs the blocks policy and reference share once per token, the update runs the frozen blocks
once per rollout; ``prefix_cache`` / the agent's ``share_prefix``: rows whose prompts share a
prefix prefill it once, and the update runs it once per forward), ``trunk`` the trunk alone,
``off`` nothing. They alternate, iteration by iteration, so that
the machine's noise falls on all of them; the figures are the ratios ``off / setting`` of each
iteration's rollout, update and whole-iteration seconds, and their medians after the first
(warm-up) iteration. All start from the same weights and seeds, so their first rollouts must
hold the same tokens (checked: the benchmark compares like with like; ``"checksums"`` in the
JSON) and their log-prob sums agree to 1e-3.

Or nearly the same: the settings compute the same log-probs in float32 by different routes
(1e-6 apart), and the sampler draws a token by where one uniform falls on the cumulative
distribution, so where the uniform falls in the flat tail of a 49k-token vocabulary (tokens of
probability ~1e-7, far narrower than the rounding of the sum before them) the settings can
draw different tokens, and that episode goes on differently. ``"divergence"`` in the JSON says
for each episode where its tokens first differ, how far apart the log-probs of all the tokens
before were (the engines' exactness: within 1e-4) and the log-probs of the two tokens drawn
there; each iteration's ``tokens`` say how much the work then differs.

    python benchmarks/shared_compute.py                                    # Arithmetic, 32 rows
    python benchmarks/shared_compute.py --settings on trunk off            # attribution
    python benchmarks/shared_compute.py --task PositiveReview --iterations 2
    python benchmarks/shared_compute.py --task Harmless --option max_pairs=160  # a quick RM
    python benchmarks/shared_compute.py --model tiny --iterations 2 --out /tmp/s.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from checksums import agreement, checksum, divergence
from ppo_training import build_models
from suite import add_option_argument
from time_breakdown import add_model_arguments

import rlhf_env  # noqa: F401  (registers the tasks)
from rlhf_agents import make_agent
from rlhf_env.models.efficient import freeze_lower_layers
from rlhf_env.tasks import smoke_arguments

RESULTS = Path(__file__).parent / "results"
#: The settings by name: ``(share_trunk, prefix_cache and share_prefix)``.
SETTINGS = {"on": (True, True), "trunk": (True, False), "off": (False, False)}


def build(args: argparse.Namespace, share_trunk: bool, prefix_cache: bool):
    """``(env, agent)`` for the task on ``args.model`` under ``frozen:args.frozen``."""
    options: dict[str, Any] = {}
    if args.model == "tiny":  # the task's smoke variant, its tiny policy included
        options = dict(smoke_arguments(args.task))
        policy, tokenizer = options.pop("policy").to(args.device), options.pop("tokenizer")
    else:
        policy, tokenizer = build_models(args.model, args.random_init, torch.device(args.device))
    options.update(dict(args.option))
    depth = min(args.frozen, policy.config.num_hidden_layers - 1)
    policy, reference = freeze_lower_layers(policy, depth)
    env = gym.make_vec(
        f"rlhf_env/{args.task}-v0", num_envs=args.num_envs, policy=policy,
        tokenizer=tokenizer, reference=reference, kl_coef=0.01, share_trunk=share_trunk,
        prefix_cache=prefix_cache, progress=False, **options,
    )  # fmt: skip
    agent = make_agent(
        "rloo", env, learning_rate=1e-4, epochs=args.epochs, minibatch_size=args.minibatch_size,
        group_size=args.group_size, share_trunk=share_trunk, share_prefix=prefix_cache,
        progress_bar=False, seed=0,
    )  # fmt: skip
    return env, agent


def _cache_counts(env: Any) -> dict[str, int] | None:
    cache = env.engine.prefix_cache
    return (
        None
        if cache is None
        else {"hits": cache.hits, "misses": cache.misses, "copies": cache.copies}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda)")
    parser.add_argument("--frozen", type=int, default=24, help="frozen:N (N capped below the top)")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3, help="per setting; the first warms up")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=["on", "off"])
    add_option_argument(
        parser,
        "a task or env option (e.g. max_pairs=160: Harmless's reward model trained on fewer "
        "pairs, the same compute per iteration); repeatable",
    )
    parser.add_argument("--out", type=Path, help="JSON (default: benchmarks/results/...)")
    args = parser.parse_args(argv)  # fmt: skip

    if "off" not in args.settings:
        parser.error("--settings must include off (the figures are ratios to it)")
    settings = {}
    for name in args.settings:
        torch.manual_seed(0)
        settings[name] = build(args, *SETTINGS[name])
    depths = {name: env.engine.trunk.depth for name, (env, _) in settings.items()}
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    first_rollouts: dict[str, Any] = {}
    for iteration in range(args.iterations):
        row: dict[str, Any] = {"iteration": iteration}
        for name, (_, agent) in settings.items():
            start = time.perf_counter()
            rollout = agent.collect()
            collected = time.perf_counter()
            agent.update(rollout)
            done = time.perf_counter()
            row[name] = {
                "rollout_s": round(collected - start, 3),
                "update_s": round(done - collected, 3),
                "tokens": rollout.num_tokens,
            }
            if iteration == 0:  # the same weights and seeds: the same work
                first_rollouts[name] = rollout
                mask = rollout.action_mask.bool()
                first[name] = checksum(
                    rollout.continuation_ids[mask].numpy(), logprob=rollout.logprobs[mask].numpy(),
                    kl=rollout.kl[mask].numpy(),
                )  # fmt: skip
        for name in settings:
            if name == "off":
                continue
            for phase in ("rollout", "update"):
                row[f"{name}/{phase}_speedup"] = round(
                    row["off"][f"{phase}_s"] / row[name][f"{phase}_s"], 3
                )
            whole = {key: row[key]["rollout_s"] + row[key]["update_s"] for key in (name, "off")}
            row[f"{name}/iteration_speedup"] = round(whole["off"] / whole[name], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = list(settings)
    print(agreement(first, names))
    same_tokens = len({first[name]["tokens"] for name in names}) == 1
    sums = [first[name]["logprob_sum"] for name in names]
    logprob_gap = max(sums) - min(sums)
    diverged = {
        name: divergence(first_rollouts[name], first_rollouts["off"])
        for name in names
        if name != "off"
    }
    measured = rows[1:] or rows
    summary = {
        key: round(statistics.median(row[key] for row in measured), 3)
        for key in rows[0]
        if key.endswith("_speedup")
    }
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "engine": type(settings["off"][0].engine).__name__,
        "shared_blocks": depths,
        "prefix_cache": {name: _cache_counts(env) for name, (env, _) in settings.items()},
        "checksums": first,
        "divergence": diverged,
        "iterations": rows,
        "median_speedups_after_warm_up": summary,
    }
    out = args.out or RESULTS / f"shared_compute_{args.task.lower()}_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"shared blocks {depths}; median speed-ups {summary}")
    print(f"wrote {out}")
    if same_tokens and logprob_gap <= 1e-3:
        return 0
    for name, found in diverged.items():
        print(
            f"{name} vs off: {found['same_episodes']} of {found['episodes']} episodes drew the "
            f"same tokens; log-probs before the first difference within "
            f"{found['max_logprob_gap_before']:.1e}; the differing draws' log-probs "
            f"{[d['logprobs'] for d in found['diverged']]}"
        )
    if all(found["max_logprob_gap_before"] <= 1e-4 for found in diverged.values()):
        print(
            "the settings computed the same log-probs but drew different tokens where a draw "
            "fell between tokens closer together than the two routes' rounding; compare the work "
            "(each iteration's tokens) before the seconds"
        )
        return 0
    print("the settings computed different log-probs: their figures do not compare")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
