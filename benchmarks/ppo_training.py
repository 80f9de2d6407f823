"""PPO training cost by parameter-efficiency setup: peak memory and throughput, side by side.

Each setup runs in its own process (a clean peak) for the same work: ``--iterations`` PPO
updates of ``--num-envs`` responses x ``--new`` tokens on movie-review prompts, reward = VADER
compound (a stand-in: any reward costs the same here).

Setups:
    full        every weight trained; the reference is a full frozen copy (the simple default)
    frozen:N    embeddings and the bottom N layers frozen; the reference shares them
    lora:R      LoRA adapters of rank R; the reference is the same model with adapters off

Peak memory is the process's peak resident set (CPU) or ``torch.cuda.max_memory_allocated``
(CUDA). Throughput is generated tokens per second of wall time over whole iterations (rollout
and update), the median after the first (warm-up) iteration.

    python benchmarks/ppo_training.py --model smollm2-135m-instruct --setups full frozen:24 lora:16
    python benchmarks/ppo_training.py --model tiny  # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def build_models(model: str, random_init: bool, device: torch.device):
    """``(policy, tokenizer)``: ``tiny`` (a 2-layer GPT-2), a packaged asset name or a folder.

    ``random_init`` builds the folder's architecture from its config.json with random weights
    (same cost per token, for machines without the weights).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf_env.assets import resolve
    from rlhf_env.models import (
        build_tiny_gpt2,
        build_tiny_tokenizer,
        load_causal_lm,
        load_tokenizer,
    )

    if model == "tiny":
        tokenizer = build_tiny_tokenizer()
        return build_tiny_gpt2(tokenizer, seed=0).to(device), tokenizer
    folder = resolve(model)
    tokenizer = load_tokenizer(folder)
    if random_init:
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(folder)
        policy = AutoModelForCausalLM.from_config(config).to(device=device, dtype=torch.float32)
        return policy, tokenizer
    return load_causal_lm(folder, device=device, dtype=torch.float32), tokenizer


def prompts(count: int = 256) -> list[str]:
    """Movie-review prompts when the package is installed, else a fixed list."""
    try:
        from rlhf_env.data.prompts import imdb_prompts

        return imdb_prompts(count)
    except ImportError:
        return ["This movie was", "I think the acting", "The plot of this film", "Honestly,"]


def reward_function():
    """VADER compound when installed, else a length reward."""
    try:
        from rlhf_env.rewards import VaderSentiment

        return VaderSentiment()
    except ImportError:
        return lambda p, r: [len(x) / 100 for x in r]


def run_setup(args: argparse.Namespace) -> dict:
    """One setup in this process: build, train, measure."""
    from rlhf_agents import PPOAgent, PPOConfig
    from rlhf_env import TextGenerationVectorEnv
    from rlhf_env.models.efficient import add_lora, freeze_lower_layers

    torch.manual_seed(0)
    device = torch.device(args.device)
    policy, tokenizer = build_models(args.model, args.random_init, device)
    reference = None
    kind, _, amount = args.child.partition(":")
    if kind == "frozen":
        policy, reference = freeze_lower_layers(policy, int(amount))
    elif kind == "lora":
        policy, reference = add_lora(policy, r=int(amount), alpha=2 * int(amount))
    compile_step = {"auto": None, "yes": True, "no": False}[args.compile_step]
    env = TextGenerationVectorEnv(
        policy, tokenizer, reward_function(), prompts(), reference=reference,
        num_envs=args.num_envs, max_new_tokens=args.new, max_prompt_tokens=24, kl_coef=0.05,
        device=device, engine=args.engine, compile_step=compile_step,
    )  # fmt: skip
    config = PPOConfig(
        learning_rate=1e-5, minibatch_size=args.minibatch, epochs=args.epochs,
        gradient_accumulation_steps=args.accumulation, progress_bar=False,
        gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    agent = PPOAgent(env, config)
    trainable = sum(p.numel() for p in agent.trainable_parameters().values())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iterations):
        agent.learn(agent.num_timesteps + 1)
    seconds = time.perf_counter() - start
    rates = [record["perf/tokens_per_second"] for record in agent.history]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "setup": args.child,
        "engine": type(env.engine).__name__ + (" (compiled)" if env.engine.compiled else ""),
        "trainable_parameters": trainable,
        "peak_memory_mib": round(peak, 1),
        "tokens_per_second": round(statistics.median(rates[1:] or rates), 1),
        "seconds_per_iteration": round(seconds / args.iterations, 2),
        "rollout_seconds": round(_median(agent.history, "perf/rollout_seconds"), 2),
        "update_seconds": round(_median(agent.history, "perf/update_seconds"), 2),
        "final_kl": round(agent.history[-1]["rollout/kl"], 3),
    }


def _median(history: list[dict[str, float]], key: str) -> float:
    return statistics.median(record[key] for record in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny', an asset name or a folder")
    parser.add_argument("--random-init", action="store_true", help="architecture only")
    parser.add_argument("--setups", nargs="+", default=["full", "frozen:1", "lora:8"])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--new", type=int, default=24, help="tokens per response")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--minibatch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engine", choices=["auto", "static", "dynamic"], default="auto")
    parser.add_argument(
        "--compile-step", choices=["auto", "yes", "no"], default="auto",
        help="compile the static engine's step (auto: on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in updates"
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/...)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_setup(args)))
        return

    rows = []
    for setup in args.setups:
        command = [sys.executable, __file__, *sys.argv[1:], "--child", setup]
        output = subprocess.run(command, capture_output=True, text=True)
        if output.returncode:
            raise SystemExit(f"setup {setup} failed:\n{output.stderr[-3000:]}")
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
    full = next((row for row in rows if row["setup"] == "full"), rows[0])
    header = (
        f"{'setup':<10} {'trainable':>12} {'peak MiB':>9} {'vs full':>8} {'tok/s':>8} "
        f"{'s/iter':>7} {'rollout s':>9} {'update s':>8}  engine"
    )
    print(header)
    for row in rows:
        ratio = row["peak_memory_mib"] / full["peak_memory_mib"]
        print(
            f"{row['setup']:<10} {row['trainable_parameters']:>12,} {row['peak_memory_mib']:>9.0f} "
            f"{ratio:>8.2f} {row['tokens_per_second']:>8.1f} {row['seconds_per_iteration']:>7.2f} "
            f"{row['rollout_seconds']:>9.2f} {row['update_seconds']:>8.2f}  {row['engine']}"
        )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        "torch": torch.__version__,
        "arguments": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "rows": rows,
    }
    out = args.out or RESULTS / f"ppo_training_{Path(str(args.model)).name}_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
