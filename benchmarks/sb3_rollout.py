"""stable-baselines3 rollout collection with ``LanguageModelPolicy``: with and without KV cache.

Each case collects one SB3 rollout of ``new`` steps from ``batch`` sub-envs (``PPO`` with its
update switched off, so only ``collect_rollouts`` is timed) on movie-review prompts, with the
policy reusing its KV caches (``kv_cache=True``, the default) and re-encoding every context
(``kv_cache=False``). The two rows share the env, the LM and the seeds, run interleaved within
each repeat, and the figure is the median over repeats. Prints a table and writes JSON.

Before each rollout both rows seed SB3 (torch, numpy, the env's prompts) alike, so they sample
the same tokens from the same distributions: the JSON's ``checksums`` hold, per row, a digest of
the actions in its rollout buffers over all repeats and the sums of the log-probs and values
the policy computed for them (with the cache and by re-encoding: they must agree), and of the
rewards the env paid (compared by ``tests/test_benchmarks.py``).

    python benchmarks/sb3_rollout.py --models tiny-gpt2 smollm2-135m --batch 16 --new 32 128
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from checksums import agreement, checksum
from stable_baselines3 import PPO
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_agents.sb3_policy import LanguageModelPolicy
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.assets import smollm2_folder
from rlhf_env.data.prompts import imdb_prompts
from rlhf_env.models import build_tiny_tokenizer, load_causal_lm, load_tokenizer
from rlhf_env.models.tiny import DEFAULT_CORPUS
from rlhf_env.sb3_vec_env import SB3VecEnv

RESULTS = Path(__file__).parent / "results"
#: ``kv_cache`` -> the row's name in the JSON's checksums.
ROW = {True: "cache", False: "no_cache"}


class CollectOnly(PPO):
    """SB3's PPO with the update switched off: ``learn`` only collects rollouts."""

    def train(self) -> None:
        """No update."""


def build_policy(name: str, tokenizer) -> torch.nn.Module:
    """``tiny-gpt2`` (4 x 256, SmolLM2's vocabulary) or ``smollm2-135m`` (the packaged asset)."""
    if name == "smollm2-135m":
        return load_causal_lm(smollm2_folder(), device="cpu", dtype=torch.float32)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=4, n_embd=256, n_head=4, n_positions=512, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def random_value_head(policy: LanguageModelPolicy) -> None:
    """Give the value head (zero at the start) the same random weights in every row, so that
    the values the rows compute, and their checksums, depend on the LM's hidden states."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.value_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def collect_seconds(model: PPO, steps: int, seed: int) -> float:
    """Wall time of one rollout of ``steps`` steps per sub-env, after seeding SB3 (torch,
    numpy, the env's next reset) with ``seed``."""
    model.set_random_seed(seed)
    start = time.perf_counter()
    model.learn(total_timesteps=steps * model.n_envs, reset_num_timesteps=True)
    return time.perf_counter() - start


def rollout(model: PPO) -> dict[str, np.ndarray]:
    """The last rollout's actions, log-probs, values and rewards, each ``(steps, n_envs)``."""
    buffer = model.rollout_buffer
    return {
        "tokens": buffer.actions.reshape(buffer.actions.shape[:2]).astype(np.int64),
        "logprob": buffer.log_probs,
        "value": buffer.values,
        "reward": buffer.rewards,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "smollm2-135m"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tokenizer", choices=["smollm2", "tiny"], default="smollm2", help="tiny: smoke runs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "sb3_rollout.json")
    args = parser.parse_args()

    if args.tokenizer == "tiny":
        tokenizer, prompts = build_tiny_tokenizer(vocab_size=2048), list(DEFAULT_CORPUS)
    else:
        tokenizer, prompts = load_tokenizer(smollm2_folder()), imdb_prompts(512)
    results = []
    print(f"{'model':<14}{'batch':>6}{'new':>5} | {'cache tok/s':>11} {'no cache':>9} | ratio")
    for name in args.models:
        policy = build_policy(name, tokenizer)
        for new in args.new:
            vector_env = TextGenerationVectorEnv(
                policy, tokenizer, lambda p, r: [len(x) / 100 for x in r], prompts,
                num_envs=args.batch, max_new_tokens=new, max_prompt_tokens=24,
                autoreset_mode="SameStep", eos_token_ids=[],
            )  # fmt: skip
            venv = SB3VecEnv(vector_env)
            models = {
                cache: CollectOnly(
                    LanguageModelPolicy,
                    venv,
                    n_steps=new,
                    seed=0,
                    device="cpu",
                    policy_kwargs={"model": vector_env.policy, "kv_cache": cache},
                )
                for cache in (True, False)
            }
            for model in models.values():
                random_value_head(model.policy)
            times: dict[bool, list[float]] = {True: [], False: []}
            rollouts: dict[bool, list[dict[str, np.ndarray]]] = {True: [], False: []}
            for repeat in range(args.repeats):
                for cache, model in models.items():
                    times[cache].append(collect_seconds(model, new, seed=repeat))
                    rollouts[cache].append(rollout(model))
            checksums = {
                ROW[cache]: checksum(**{key: np.stack([r[key] for r in done]) for key in done[0]})
                for cache, done in rollouts.items()
            }
            tokens = args.batch * new
            rates = {cache: tokens / statistics.median(times[cache]) for cache in times}
            ratio = rates[True] / rates[False]
            print(f"{name:<14}{args.batch:>6}{new:>5} | {rates[True]:>11.1f} {rates[False]:>9.1f}"
                  f" | {ratio:5.2f}")  # fmt: skip
            print(f"  {agreement(checksums, list(ROW.values()))}")
            results.append({
                "model": name, "batch": args.batch, "new_tokens": new,
                "tokens_per_second_cache": rates[True], "tokens_per_second_no_cache": rates[False],
                "ratio": ratio, "seconds": {str(k): v for k, v in times.items()},
                "checksums": checksums,
            })  # fmt: skip
            vector_env.close()
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
