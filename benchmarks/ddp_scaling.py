"""Data-parallel scaling: PPO training throughput on 1 process against 2 (``torchrun``, gloo on
the CPU, NCCL on GPUs), side by side in one run.

Each setup is one ``torchrun`` launch training ``PPOAgent`` for ``--iterations`` updates; every
process runs ``--num-envs`` sub-envs on its shard of the IMDB prompts (so 2 processes make
twice the global batch per update, as data parallelism does). Setups:

    1x1   1 process, 1 thread
    1x2   1 process, 2 threads (2 cores in one process: the fair baseline on a 2-core machine)
    2x1   2 processes, 1 thread each
    PxT   any other count: P processes of T threads (on GPUs: P processes, one GPU each)

Figure: global generated tokens per second of training (rollout + update), the median over the
updates after the first (warm-up); ``--threads`` picks the setups' thread counts.

    python benchmarks/ddp_scaling.py --model tiny --iterations 3         # seconds, a smoke test
    python benchmarks/ddp_scaling.py --model smollm2-135m-instruct --training-setup frozen:24 \\
        --setups 1x1 1x2 2x1 --num-envs 8 --new 16 --iterations 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
RESULT_PREFIX = "DDP_SCALING_RESULT "


def child(args: argparse.Namespace) -> None:
    """One process of a launch: train, then rank 0 prints the result line."""
    from rlhf_agents import PPOAgent, PPOConfig
    from rlhf_env import TextGenerationVectorEnv, assets
    from rlhf_env.data.prompts import balanced_imdb_prompts
    from rlhf_env.distributed import init_distributed, shard
    from rlhf_env.models import (
        build_tiny_gpt2,
        build_tiny_tokenizer,
        load_causal_lm,
        load_tokenizer,
    )
    from rlhf_env.models.efficient import apply_training_setup
    from rlhf_env.rewards.oracles import make_oracle

    context = init_distributed()
    if args.model == "tiny":
        tokenizer = build_tiny_tokenizer()
        policy = build_tiny_gpt2(tokenizer, seed=0)
    else:
        folder = assets.resolve(args.model)
        tokenizer = load_tokenizer(folder)
        policy = load_causal_lm(folder, device=context.device, dtype=torch.float32)
    policy, reference = apply_training_setup(policy.to(context.device), args.training_setup)
    env = TextGenerationVectorEnv(
        policy, tokenizer, make_oracle("vader"), shard(balanced_imdb_prompts(512, words=8)),
        reference=reference, num_envs=args.num_envs, max_new_tokens=args.new,
        device=context.device,
    )  # fmt: skip
    agent = PPOAgent(
        env, PPOConfig(epochs=2, minibatch_size=min(8, args.num_envs), learning_rate=1e-5,
                       kl_coef=0.1, seed=0, progress_bar=False),
    )  # fmt: skip
    start = time.perf_counter()
    budget = args.iterations * args.num_envs * args.new * context.world_size + 1
    agent.learn(budget, callback=lambda done, _rollout, _record: done.iterations < args.iterations)
    seconds = time.perf_counter() - start
    rates = [record["perf/tokens_per_second"] for record in agent.history]
    if context.is_main:
        timed = rates[1:] or rates
        result = {
            "processes": context.world_size,
            "threads_per_process": torch.get_num_threads(),
            "device": str(context.device),
            "tokens_per_second": round(statistics.median(timed), 2),
            "iterations": agent.iterations,
            "global_responses_per_update": args.num_envs * context.world_size,
            "train_seconds": round(seconds, 1),
            "rates": [round(rate, 2) for rate in rates],
        }
        print(RESULT_PREFIX + json.dumps(result), flush=True)


def launch(setup: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``torchrun`` launch of ``setup`` (``PROCESSESxTHREADS``); its rank-0 result."""
    processes, threads = (int(part) for part in setup.split("x"))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", __file__, "--child", *sys.argv[1:],
    ]  # fmt: skip
    print(f"running {setup} ...", file=sys.stderr, flush=True)
    output = subprocess.run(command, capture_output=True, text=True, env=environment)
    marked = [line for line in output.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if output.returncode or not marked:
        raise SystemExit(f"setup {setup} failed:\n{output.stderr[-4000:]}")
    return {"setup": setup, **json.loads(marked[-1].removeprefix(RESULT_PREFIX))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a packaged asset / folder")
    parser.add_argument("--training-setup", default="full", help="full, frozen:N or lora:R")
    parser.add_argument("--setups", nargs="+", default=["1x1", "1x2", "2x1"])
    parser.add_argument("--num-envs", type=int, default=8, help="sub-envs per process")
    parser.add_argument("--new", type=int, default=16, help="max new tokens per response")
    parser.add_argument("--iterations", type=int, default=4, help="updates per setup")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/...)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = [launch(setup, args) for setup in args.setups]
    baseline = rows[0]["tokens_per_second"]
    print(f"| setup | processes x threads | tokens/s | vs {rows[0]['setup']} | updates |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['setup']} | {row['processes']} x {row['threads_per_process']} "
            f"| {row['tokens_per_second']:.1f} | {row['tokens_per_second'] / baseline:.2f}x "
            f"| {row['iterations']} |"
        )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "arguments": {k: v for k, v in vars(args).items() if k != "child"},
        "rows": rows,
    }
    name = Path(str(args.model)).name
    out = args.out or RESULTS / f"ddp_scaling_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
