"""Resident memory of the vector env over a long run with constant autoresets.

Steps a ``TextGenerationVectorEnv`` on a tiny model with random actions (EOS now and then, so
sub-envs end and reset at different times) and samples the process's resident set size (RSS).
Prints RSS after warm-up and at the end, and the growth between them; writes JSON.

    python benchmarks/vector_env_memory.py --steps 20000 --num-envs 16
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
from pathlib import Path

import numpy as np
import torch

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/vector_env_memory.json")
    )
    args = parser.parse_args()

    tokenizer = build_tiny_tokenizer(vocab_size=2048)
    policy = build_tiny_gpt2(tokenizer, n_layer=4, n_embd=256, n_head=4, n_positions=512)
    prompts = [f"Review {i}: " + "this film " * (i % 13) for i in range(200)]
    venv = TextGenerationVectorEnv(
        policy=policy, tokenizer=tokenizer, reward_fn=lambda p, r: [len(x) for x in r],
        prompts=prompts, max_new_tokens=48, max_prompt_tokens=48, num_envs=args.num_envs,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    samples: list[tuple[int, float]] = []
    episodes = 0
    for step in range(1, args.steps + 1):
        actions = rng.integers(3, len(tokenizer), size=args.num_envs)
        actions[rng.random(args.num_envs) < 0.03] = tokenizer.eos_token_id
        _, _, terminations, truncations, _ = venv.step(actions)
        episodes += int((terminations | truncations).sum())
        if step % 500 == 0:
            samples.append((step, rss_mib()))
    after_warmup = next(rss for step, rss in samples if step >= args.warmup)
    final = samples[-1][1]
    result = {
        "steps": args.steps,
        "env_steps": args.steps * args.num_envs,
        "num_envs": args.num_envs,
        "episodes": episodes,
        "rss_after_warmup_mib": after_warmup,
        "rss_final_mib": final,
        "rss_peak_sampled_mib": max(rss for _, rss in samples),
        "growth_percent": 100 * (final - after_warmup) / after_warmup,
        "samples": samples,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    print(
        f"{args.steps} steps x {args.num_envs} envs ({episodes} episodes): RSS after warm-up "
        f"{after_warmup:.1f} MiB, final {final:.1f} MiB, peak {result['rss_peak_sampled_mib']:.1f}"
        f" MiB, growth {result['growth_percent']:+.2f}%"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
