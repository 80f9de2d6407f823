"""Collecting one episode per sub-env: finished sub-envs held vs autoreset.

Agents collect a batch of complete episodes per rollout (``rlhf_agents.rollout.collect_episodes``):
every sub-env starts together and the batch steps until the longest response ends. A sub-env
that ended early must not start a new episode nobody records. Two ways, same token schedule:

    held       inside ``env.holding_ended()``: the finished sub-env waits (what the agents do)
    autoreset  plain next-step autoreset: the finished sub-env is reset by the next step, which
               encodes and prefills a new prompt for it (what the agents did until 2026-12)

The workload is the Arithmetic task's (long prompts, short answers: the case where a prefill
costs the most against the tokens generated): its held-out prompts, ``--batch`` sub-envs,
response lengths spread evenly over ``--lengths MIN MAX`` (each sub-env emits EOS at its length;
the other actions are a fixed token). The two variants alternate within each repeat; the figure
is the median over repeats. Prints a table and writes JSON.

Both variants start every sub-env on the same prompt (the same seed) and step the same tokens
through its first episode, so they must compute the same log-probs for it: the JSON's
``checksums`` hold, per variant, a digest of each sub-env's first-episode tokens over all
repeats and the sums of their log-probs (policy, reference, KL), compared by
``tests/test_benchmarks.py``. The tokens autoreset steps in the new episodes it starts are work
the held variant does not do: left out.

    python benchmarks/episode_collection.py --model smollm2-135m --batch 16 --lengths 8 24
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from checksums import agreement, checksum

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.tasks import make_task_vector_env, smoke_arguments

#: The statistics of a step's tokens in its infos, as named in the checksums.
STATS = {"policy_logprob": "logprob", "ref_logprob": "ref_logprob", "kl": "kl"}


def make_env(model: str, batch: int) -> TextGenerationVectorEnv:
    """The Arithmetic task's vector env on SmolLM2-135M-Instruct, or on a tiny random GPT-2
    with the task's smoke options (a plumbing check, not a figure)."""
    if model == "smollm2-135m":
        return make_task_vector_env("Arithmetic", num_envs=batch, progress=False)
    return make_task_vector_env(
        "Arithmetic", num_envs=batch, progress=False, **smoke_arguments("Arithmetic")
    )


def collect(
    env: TextGenerationVectorEnv, lengths: np.ndarray, hold: bool, seed: int
) -> tuple[float, dict[str, np.ndarray]]:
    """Seconds to reset and step until every sub-env has ended once (sub-env ``i`` after
    ``lengths[i]`` tokens), and the first episodes' tokens and statistics
    (:func:`first_episodes`)."""
    eos = int(env.tokenizer.eos_token_id)
    filler = int(env.tokenizer(" 1", add_special_tokens=False)["input_ids"][0])
    steps = []
    start = time.perf_counter()
    context = env.holding_ended() if hold else contextlib.nullcontext()
    with context:
        env.reset(seed=seed)
        for t in range(int(lengths.max())):
            actions = np.where(lengths == t + 1, eos, filler)
            steps.append((actions, env.step(actions)))
    seconds = time.perf_counter() - start
    return seconds, first_episodes(steps)


def first_episodes(steps: list[tuple[np.ndarray, Any]]) -> dict[str, np.ndarray]:
    """From a collection's ``(actions, step results)``: each sub-env's tokens up to the end of
    its first episode, and their statistics, sub-env after sub-env (flat arrays)."""
    n = len(steps[0][0])
    ended = np.zeros(n, dtype=bool)
    taken: list[list[tuple]] = [[] for _ in range(n)]
    for actions, (_, _, terminations, truncations, info) in steps:
        for row in np.flatnonzero(info["_policy_logprob"] & ~ended):
            taken[row].append((actions[row], *(info[key][row] for key in STATS)))
        ended |= terminations | truncations
    values = np.array([step for row in taken for step in row]).reshape(-1, 1 + len(STATS))
    arrays = {"tokens": values[:, 0].astype(np.int64)}
    arrays.update({name: values[:, 1 + i] for i, name in enumerate(STATS.values())})
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2-135m", "tiny-gpt2"], default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs=2, default=[8, 24], metavar=("MIN", "MAX"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    low, high = args.lengths
    if not 1 <= low <= high:
        parser.error(f"--lengths needs 1 <= MIN <= MAX, got {low} {high}")

    env = make_env(args.model, args.batch)
    if high > env.max_new_tokens:
        parser.error(f"--lengths MAX must be <= the env's max_new_tokens ({env.max_new_tokens})")
    lengths = np.round(np.linspace(low, high, args.batch)).astype(np.int64)
    prompt_tokens = env.task.details["longest_eval_prompt_tokens"]
    collect(env, lengths, hold=True, seed=0)  # warm-up
    seconds: dict[str, list[float]] = {"held": [], "autoreset": []}
    episodes: dict[str, list[dict[str, np.ndarray]]] = {"held": [], "autoreset": []}
    for repeat in range(args.repeats):
        for variant in ("held", "autoreset"):
            elapsed, first = collect(env, lengths, variant == "held", seed=repeat)
            seconds[variant].append(elapsed)
            episodes[variant].append(first)
    tokens = int(lengths.sum())
    result = {
        "model": args.model,
        "batch": args.batch,
        "lengths": [low, high],
        "prompt_tokens": prompt_tokens,
        "tokens_per_collection": tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{args.model}, batch {args.batch}, prompts <= {prompt_tokens} tokens, responses "
          f"{low}-{high} tokens ({tokens} per collection), {args.repeats} repeats")  # fmt: skip
    for variant, values in seconds.items():
        median = statistics.median(values)
        result[f"{variant}_s"] = median
        result[f"{variant}_tok_s"] = tokens / median
        print(f"  {variant:10s} {median:8.3f} s  {tokens / median:9.1f} tok/s")
    result["speedup"] = result["autoreset_s"] / result["held_s"]
    print(f"  held is {result['speedup']:.2f}x as fast as autoreset")
    result["checksums"] = {
        variant: checksum(**{key: np.concatenate([r[key] for r in runs]) for key in runs[0]})
        for variant, runs in episodes.items()
    }
    print(f"  {agreement(result['checksums'], list(episodes))}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
