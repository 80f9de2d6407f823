"""Soak: resident memory of the env over a long run with constant resets.

Steps a ``TextGenerationVectorEnv`` (or, ``--env single``, a ``TextGenerationEnv``, reset by
hand after every episode) on a tiny model with random actions (EOS now and then, so episodes
end, and sub-envs reset, at different times) and samples the process's resident set size (RSS).
Prints RSS after warm-up and at the end, and the growth between them; writes JSON. Exits with
status 1 when the growth after warm-up exceeds ``--limit`` percent.

    python benchmarks/vector_env_memory.py --steps 20000 --num-envs 16
    python benchmarks/vector_env_memory.py --env single --steps 100000
    python benchmarks/vector_env_memory.py --steps 10000 --num-envs 16 --autoreset SameStep
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
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
    parser.add_argument("--env", choices=["vector", "single"], default="vector")
    parser.add_argument("--steps", type=int, default=20_000, help="step() calls")
    parser.add_argument("--num-envs", type=int, default=16, help="sub-envs (vector env)")
    parser.add_argument("--autoreset", choices=["NextStep", "SameStep"], default="NextStep")
    parser.add_argument("--warmup", type=int, default=1_000, help="steps before the baseline")
    parser.add_argument("--limit", type=float, default=5.0, help="allowed growth, percent")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/...)")
    args = parser.parse_args()
    if args.env == "single":
        args.num_envs = 1
    name = "single_env_memory" if args.env == "single" else f"vector_env_memory_{args.autoreset}"
    out = args.out or Path(f"benchmarks/results/{name}.json")

    tokenizer = build_tiny_tokenizer(vocab_size=2048)
    policy = build_tiny_gpt2(tokenizer, n_layer=4, n_embd=256, n_head=4, n_positions=512)
    prompts = [f"Review {i}: " + "this film " * (i % 13) for i in range(200)]
    shared = dict(
        policy=policy, tokenizer=tokenizer, reward_fn=lambda p, r: [len(x) for x in r],
        prompts=prompts, max_new_tokens=48, max_prompt_tokens=48,
    )  # fmt: skip
    if args.env == "single":
        env = TextGenerationEnv(**shared)
    else:
        env = TextGenerationVectorEnv(
            **shared, num_envs=args.num_envs, autoreset_mode=args.autoreset
        )
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    samples: list[tuple[int, float]] = []
    episodes = 0
    for step in range(1, args.steps + 1):
        actions = rng.integers(3, len(tokenizer), size=args.num_envs)
        actions[rng.random(args.num_envs) < 0.03] = tokenizer.eos_token_id
        if args.env == "single":
            _, _, terminated, truncated, _ = env.step(int(actions[0]))
            if terminated or truncated:
                episodes += 1
                env.reset()
        else:
            _, _, terminations, truncations, _ = env.step(actions)
            episodes += int((terminations | truncations).sum())
        if step % 500 == 0:
            samples.append((step, rss_mib()))
    after_warmup = next(rss for step, rss in samples if step >= args.warmup)
    final = samples[-1][1]
    growth = 100 * (final - after_warmup) / after_warmup
    result = {
        "env": args.env,
        "autoreset": args.autoreset if args.env == "vector" else "reset() by hand",
        "steps": args.steps,
        "env_steps": args.steps * args.num_envs,
        "num_envs": args.num_envs,
        "episodes": episodes,
        "rss_after_warmup_mib": after_warmup,
        "rss_final_mib": final,
        "rss_peak_sampled_mib": max(rss for _, rss in samples),
        "growth_percent": growth,
        "limit_percent": args.limit,
        "passed": growth <= args.limit,
        "samples": samples,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    print(
        f"{args.env} env, {args.steps} steps x {args.num_envs} envs ({episodes} episodes): RSS "
        f"after warm-up {after_warmup:.1f} MiB, final {final:.1f} MiB, peak "
        f"{result['rss_peak_sampled_mib']:.1f} MiB, growth {growth:+.2f}% (limit "
        f"{args.limit:g}%: {'pass' if result['passed'] else 'FAIL'})"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not result["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
