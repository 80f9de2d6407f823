"""What PPO's separate critic costs against the shared one: the update's seconds and the memory
of the critic's parameters, on the same rollout.

One env (a task on a model, ``full`` or ``frozen:N``) collects one rollout; then an agent with
``critic="shared"`` and one with ``critic="separate"`` (the default) each update on that same
rollout, interleaved over ``--repeats`` (each agent re-created from the same weights before every
update, so that every update starts from the same point), and the median seconds per setting
are compared as a ratio measured side by side. Memory: the parameters each agent adds to the
policy's (the value head; the separate critic's own copies: under ``frozen:N`` its trainable
blocks, final norm and head, the frozen bottom being shared), in MiB.

    python benchmarks/ppo_critic_cost.py                        # SmolLM2 frozen:24, Arithmetic
    python benchmarks/ppo_critic_cost.py --model tiny --repeats 1 --out /tmp/c.json  # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from time_breakdown import RESULTS, add_model_arguments, build_env

from rlhf_agents import make_agent

CRITICS = ("shared", "separate")


def added_mib(agent: Any, policy: torch.nn.Module) -> float:
    """MiB of the parameters the agent holds beyond the policy's (tensors counted once)."""
    policy_tensors = {p.data_ptr() for p in policy.parameters()}
    extra = {
        p.data_ptr(): p.numel() * p.element_size()
        for module in agent.extra_modules().values()
        for p in module.parameters()
        if p.data_ptr() not in policy_tensors
    }
    return sum(extra.values()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--training-setup", default="frozen:24", help="full or frozen:N")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="updates per setting")
    parser.add_argument("--out", type=Path, help="JSON (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    args.engine, args.share_trunk, args.prefix_cache = "auto", True, True  # build_env's

    torch.manual_seed(0)
    env = build_env(args)
    weights = copy.deepcopy(env.policy.state_dict())
    config = {"learning_rate": 1e-4, "epochs": args.epochs, "minibatch_size": args.minibatch_size,
              "progress_bar": False, "seed": 0}  # fmt: skip
    rollout = make_agent("ppo", env, critic="shared", **config).collect()
    seconds: dict[str, list[float]] = {critic: [] for critic in CRITICS}
    memory: dict[str, float] = {}
    for _ in range(args.repeats):
        for critic in CRITICS:  # interleaved: the machine's noise falls on both alike
            env.policy.load_state_dict(weights)
            agent = make_agent("ppo", env, critic=critic, **config)
            memory[critic] = added_mib(agent, env.policy)
            start = time.perf_counter()
            agent.update(rollout)
            seconds[critic].append(time.perf_counter() - start)
            print(f"{critic}: update {seconds[critic][-1]:.2f} s", flush=True)
    median = {critic: statistics.median(values) for critic, values in seconds.items()}
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "rollout_shape": list(rollout.continuation_ids.shape),
        "update_seconds": seconds,
        "median_update_seconds": median,
        "separate_over_shared": median["separate"] / median["shared"],
        "added_parameter_mib": memory,
    }
    out = args.out or RESULTS / f"ppo_critic_cost_{args.task.lower()}_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"update: shared {median['shared']:.2f} s, separate {median['separate']:.2f} s "
        f"({result['separate_over_shared']:.2f}x); parameters added: shared "
        f"{memory['shared']:.1f} MiB, separate {memory['separate']:.1f} MiB"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
