"""``rlhf-env bench NAME [ARGS...]``: run one of the benchmark scripts of a source checkout."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

#: Benchmark names and what each measures (the scripts are ``benchmarks/<name>.py``).
BENCHMARKS = {
    "rollout_throughput": "env rollout tokens/s against a fused loop, a no-cache env, generate",
    "ppo_training": "PPO peak memory and throughput: full, frozen layers, LoRA",
    "engine_step": "latency of one env step's model work (policy + reference, KL), per engine",
    "episode_collection": "collecting one episode per sub-env: finished rows held vs autoreset",
    "dialogue_rollout": "3-turn dialogue rollouts against single-turn episodes and re-encoding",
    "game_rollout": "a 5-turn game token-level through the vector env against a turn-level loop",
    "textarena_survey": "which TextArena games make, reset and step offline here",
    "reasoning_gym_survey": "which reasoning-gym datasets build and score offline here",
    "sb3_rollout": "stable-baselines3 rollout collection with and without the KV cache",
    "vector_env_memory": "resident memory of the vector env over a long run",
    "vs_trl": "TRL's RLOO, GRPO and PPO trainers against our agents on equal work",
    "overoptimization": "gold and learned reward against sqrt(KL) over a long PPO run",
    "ddp_scaling": "PPO training throughput on 1 process against 2 (torchrun)",
    "suite": "every agent on every task and seed on equal token budgets: leaderboard, curves",
    "held_out_strata": "a ReasoningGym or Arithmetic suite result's gold by answer sign or kind",
    "time_breakdown": "an RL iteration's time by phase and by block",
    "shared_compute": "an RL iteration with the shared trunk and the prefix cache on and off",
    "sampling": "drawing a token: inverse CDF against multinomial and an exponential race",
    "ppo_stability": "PPO over seeds on tiny Arithmetic: does it collapse (KL, explained variance)",
    "ppo_critic_cost": "PPO's separate critic against the shared one: update seconds, memory",
}


def benchmarks_folder() -> Path:
    """``benchmarks/`` of the source checkout this package runs from."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    if not folder.is_dir():
        raise FileNotFoundError(
            "the benchmark scripts ship with the source checkout, not the installed package: "
            "clone the repository and install it with pip install -e ."
        )
    return folder


def bench(args: argparse.Namespace) -> int:
    script = benchmarks_folder() / f"{args.name}.py"
    sys.argv = [str(script), *args.script_args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def register(commands: Any) -> None:
    """Add ``bench``."""
    parser = commands.add_parser(
        "bench",
        help="run a benchmark script (figures in benchmarks/RESULTS.md)",
        description="Runs benchmarks/NAME.py with the arguments after NAME (pass -- --help for "
        "a script's own options). "
        + "; ".join(f"{name}: {what}" for name, what in BENCHMARKS.items()),
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's arguments")
    parser.set_defaults(handler=bench)
