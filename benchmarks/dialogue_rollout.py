"""Dialogue rollouts: 3-turn conversations against single-turn episodes of the same length.

In dialogue mode the env inserts each next user turn as observation tokens in the step that
ends an assistant turn, with one batched, ragged append to the KV caches (no re-encoding).
Three ways to produce the same conversations, one episode per sub-env, timed side by side:

    dialogue     the dialogue env: ``max_turns`` assistant turns; the user turns are appended
    single-turn  one response per sub-env as long as its whole dialogue continuation (assistant
                 and user tokens), every token a step: the same total length
    re-encode    what turn-level env libraries do: one single-turn episode per assistant turn,
                 each starting on the whole conversation so far, templated and encoded again

Workload: the Dialogue task's held-out HH conversations (``--batch`` sub-envs), assistant turns
of ``--turn-tokens`` tokens (a fixed filler token, then the end-of-turn token). Tokens/s counts
every continuation token (assistant and inserted: the same count in all three variants) over
the seconds from reset to the last step, median over ``--repeats`` with the variants
alternating. The target (issue 19): dialogue >= 0.9x the single-turn tokens/s.

    python benchmarks/dialogue_rollout.py --model smollm2-135m --batch 16 --turn-tokens 24
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

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.tasks import make_task_vector_env, smoke_arguments

TURNS = 3


def dialogue_env(model: str, batch: int, turn_tokens: int) -> TextGenerationVectorEnv:
    """The Dialogue task's vector env on SmolLM2-135M-Instruct, or on a tiny random GPT-2
    with the task's smoke options (a plumbing check, not a figure)."""
    options = dict(num_envs=batch, progress=False, max_turns=TURNS, max_new_tokens=turn_tokens)
    if model == "tiny-gpt2":
        options = {**smoke_arguments("Dialogue"), **options}
    return make_task_vector_env("Dialogue", **options)


def run_dialogue(
    env: TextGenerationVectorEnv, turn_tokens: int, seed: int
) -> tuple[float, int, list]:
    """Seconds for one conversation per sub-env, the continuation tokens, and the
    conversations (their messages)."""
    template = IncrementalChatTemplate(env.tokenizer)
    filler = int(env.tokenizer(" ok", add_special_tokens=False)["input_ids"][0])
    n = env.num_envs
    position = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    tokens = inserted_tokens = 0
    conversations: list = [None] * n
    start = time.perf_counter()
    with env.holding_ended():
        env.reset(seed=seed, options={"prompts": env.task.eval_prompts[:n]})
        while not done.all():
            actions = np.where(position + 1 >= turn_tokens, template.end_of_turn_id, filler)
            _, _, terms, truncs, info = env.step(actions)
            tokens += int((~done).sum())
            inserted = info.get("_inserted_ids", np.zeros(n, bool))
            added = sum(len(info["inserted_ids"][row]) for row in np.flatnonzero(inserted))
            tokens += added
            inserted_tokens += added
            position = np.where(inserted, 0, position + 1)
            for row in np.flatnonzero((terms | truncs) & ~done):
                conversations[row] = info["conversation"][row]
            done |= terms | truncs
    return time.perf_counter() - start, tokens, inserted_tokens, conversations


def single_env(
    dialogue: TextGenerationVectorEnv, length: int, max_prompt_tokens: int | None = None
) -> TextGenerationVectorEnv:
    """A single-turn env over the dialogue env's models, responses of ``length`` tokens (no
    EOS ends them), prompts of up to ``max_prompt_tokens`` (default: the dialogue env's)."""
    config = dict(
        num_envs=dialogue.num_envs,
        max_prompt_tokens=max_prompt_tokens or dialogue.config.max_prompt_tokens,
        max_new_tokens=length, kl_coef=dialogue.kl_coef, engine=dialogue.config.engine,
    )  # fmt: skip
    return TextGenerationVectorEnv(
        dialogue.policy, dialogue.tokenizer, lambda p, r: [0.0] * len(r), ["x"],
        dialogue.reference, eos_token_ids=(-1,), **config,
    )  # fmt: skip


def run_single(env: TextGenerationVectorEnv, prompts: list[str], length: int) -> float:
    """Seconds for one response of ``length`` tokens per sub-env (no EOS: a filler token)."""
    filler = int(env.tokenizer(" ok", add_special_tokens=False)["input_ids"][0])
    start = time.perf_counter()
    with env.holding_ended():
        env.reset(options={"prompts": prompts})
        for _ in range(length):
            env.step(np.full(env.num_envs, filler))
    return time.perf_counter() - start


def run_reencoded(env: TextGenerationVectorEnv, conversations: list, turn_tokens: int) -> float:
    """Seconds for the conversations done turn by turn, each turn a fresh episode on the whole
    conversation so far (templated and encoded again)."""
    template = IncrementalChatTemplate(env.tokenizer)
    start = time.perf_counter()
    for turn in range(TURNS):
        prompts = []
        for messages in conversations:
            users = [k for k, m in enumerate(messages) if m["role"] == "user"]
            upto = users[min(turn, len(users) - 1)] + 1
            prompts.append(template.render(messages[:upto]))
        run_single(env, prompts, turn_tokens)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2-135m", "tiny-gpt2"], default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--turn-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    env = dialogue_env(args.model, args.batch, args.turn_tokens)
    _, tokens, inserted, conversations = run_dialogue(env, args.turn_tokens, seed=0)  # warm-up
    length = -(-tokens // args.batch)  # the continuation per sub-env, rounded up
    longest = max(len(env.tokenizer(template, add_special_tokens=False)["input_ids"])
                  for template in [IncrementalChatTemplate(env.tokenizer).render(c)
                                   for c in conversations])  # fmt: skip
    reencode_env = single_env(env, args.turn_tokens, max_prompt_tokens=longest)
    single = single_env(env, length)
    first_prompts = [IncrementalChatTemplate(env.tokenizer).render(c[:1]) for c in conversations]
    seconds: dict[str, list[float]] = {"dialogue": [], "single-turn": [], "re-encode": []}
    for repeat in range(args.repeats):
        seconds["dialogue"].append(run_dialogue(env, args.turn_tokens, seed=repeat)[0])
        seconds["single-turn"].append(run_single(single, first_prompts, length))
        seconds["re-encode"].append(run_reencoded(reencode_env, conversations, args.turn_tokens))
    counted = {"dialogue": tokens, "single-turn": length * args.batch, "re-encode": tokens}
    result = {
        "model": args.model, "batch": args.batch, "turns": TURNS,
        "turn_tokens": args.turn_tokens, "continuation_tokens": tokens,
        "inserted_tokens": inserted,
        "engine": type(env.engine).__name__, "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    print(f"{args.model} ({result['engine']}), batch {args.batch}, {TURNS} turns of "
          f"{args.turn_tokens} assistant tokens, {tokens} continuation tokens ({inserted} "
          f"inserted; {length} per sub-env), {args.repeats} repeats")  # fmt: skip
    for variant, values in seconds.items():
        median = statistics.median(values)
        result[f"{variant}_s"] = median
        result[f"{variant}_tok_s"] = counted[variant] / median
        print(f"  {variant:12s} {median:8.3f} s  {counted[variant] / median:9.1f} tok/s")
    ratio = result["dialogue_tok_s"] / result["single-turn_tok_s"]
    result["dialogue_vs_single"] = ratio
    result["dialogue_vs_reencode"] = result["dialogue_tok_s"] / result["re-encode_tok_s"]
    print(f"  dialogue / single-turn tokens/s: {ratio:.2f}x (target >= 0.9x); dialogue / "
          f"re-encode: {result['dialogue_vs_reencode']:.2f}x")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
