"""Dialogue rollouts: 3-turn conversations against single-turn episodes of the same length.

In dialogue mode the env inserts each next user turn as observation tokens in the step that
ends an assistant turn, with one batched, ragged append to the KV caches (no re-encoding).
Three ways to produce the same conversations, one episode per sub-env, timed side by side:

    dialogue     the dialogue env: ``max_turns`` assistant turns; the user turns are appended
    single-turn  one response per sub-env as long as its whole dialogue continuation (assistant
                 and user tokens), every token a step: the same total length
    re-encode    what turn-level env libraries do: one single-turn episode per assistant turn,
                 each starting on the whole conversation so far, templated and encoded again;
                 the env's prefix cache keeps the prompt prefix the conversation shares with
                 its previous turn, so only the new part is prefilled
    re-encode (no cache)  the same without the prefix cache: every turn prefills the whole
                 conversation, as a library without one does

Workload: the Dialogue task's held-out HH conversations (``--batch`` sub-envs), assistant turns
of ``--turn-tokens`` tokens (a fixed filler token, then the end-of-turn token). Tokens/s counts
every continuation token (assistant and inserted: the same count in all three variants) over
the seconds from reset to the last step, median over ``--repeats`` with the variants
alternating. The target (issue 19): dialogue >= 0.9x the single-turn tokens/s.

The dialogue and its re-encoding step the same assistant tokens on the same contexts (the
filler is a one-token word, so the decoded turns encode back to the same ids), so they must
compute the same log-probs. The JSON's ``checksums`` hold, for both, a digest of the tokens of
every assistant turn the dialogue completed (all ``--turn-tokens`` of it: a turn the budget
cuts is left out, and so are the turns re-encode replays for conversations that ended early)
over all repeats, and the sums of their log-probs (policy, reference, KL); compared by
``tests/test_benchmarks.py``. Single-turn episodes run other contexts: no checksum.

    python benchmarks/dialogue_rollout.py --model smollm2-135m --batch 16 --turn-tokens 24
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from checksums import agreement, checksum

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.tasks import make_task_vector_env, smoke_arguments

TURNS = 3
#: Per sub-env, per assistant turn, the ``(token, log pi, log pi_ref, KL)`` of each step.
Turns = list[list[list[tuple[int, float, float, float]]]]


def dialogue_env(model: str, batch: int, turn_tokens: int) -> TextGenerationVectorEnv:
    """The Dialogue task's vector env on SmolLM2-135M-Instruct, or on a tiny random GPT-2
    with the task's smoke options (a plumbing check, not a figure)."""
    options = dict(num_envs=batch, progress=False, max_turns=TURNS, max_new_tokens=turn_tokens)
    if model == "tiny-gpt2":
        options = {**smoke_arguments("Dialogue"), **options}
    return make_task_vector_env("Dialogue", **options)


def filler_id(tokenizer) -> int:
    """The assistant turns' filler: the first of `` ok``, `` the`` that is one token (so a
    turn's text encodes back to its ids), else the first token of `` ok``."""
    for word in (" ok", " the"):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0])
    return int(tokenizer(" ok", add_special_tokens=False)["input_ids"][0])


def turn_actions(tokenizer, turn_tokens: int) -> list[int]:
    """An assistant turn: ``turn_tokens - 1`` fillers, then the end-of-turn token."""
    end = IncrementalChatTemplate(tokenizer).end_of_turn_id
    return [filler_id(tokenizer)] * (turn_tokens - 1) + [end]


def record(turns: Turns, rows_turn: np.ndarray, actions: np.ndarray, info: dict[str, Any]):
    """Add a step's tokens and statistics to ``turns`` (the turn of row ``i`` is
    ``rows_turn[i]``), for the sub-envs that acted."""
    for row in np.flatnonzero(info["_policy_logprob"]):
        stats = (info[key][row] for key in ("policy_logprob", "ref_logprob", "kl"))
        turns[row][rows_turn[row]].append((int(actions[row]), *map(float, stats)))


def run_dialogue(
    env: TextGenerationVectorEnv, turn_tokens: int, seed: int
) -> tuple[float, int, int, list, Turns]:
    """Seconds for one conversation per sub-env, the continuation tokens, the inserted tokens,
    the conversations (their messages), and each sub-env's assistant turns."""
    schedule = np.array(turn_actions(env.tokenizer, turn_tokens))
    n = env.num_envs
    position = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    tokens = inserted_tokens = 0
    conversations: list = [None] * n
    steps = []
    start = time.perf_counter()
    with env.holding_ended():
        env.reset(seed=seed, options={"prompts": env.task.eval_prompts[:n]})
        while not done.all():
            actions = schedule[np.minimum(position, turn_tokens - 1)]
            _, _, terms, truncs, info = env.step(actions)
            steps.append((actions, info))
            tokens += int((~done).sum())
            inserted = info.get("_inserted_ids", np.zeros(n, bool))
            added = sum(len(info["inserted_ids"][row]) for row in np.flatnonzero(inserted))
            tokens += added
            inserted_tokens += added
            position = np.where(inserted, 0, position + 1)
            for row in np.flatnonzero((terms | truncs) & ~done):
                conversations[row] = info["conversation"][row]
            done |= terms | truncs
    seconds = time.perf_counter() - start
    turns: Turns = [[[] for _ in range(TURNS)] for _ in range(n)]
    turn = np.zeros(n, dtype=np.int64)
    for actions, info in steps:  # the turn a token belongs to: user turns inserted before it
        record(turns, turn, actions, info)
        turn += info.get("_inserted_ids", np.zeros(n, bool))
    return seconds, tokens, inserted_tokens, conversations, turns


def single_env(
    dialogue: TextGenerationVectorEnv,
    length: int,
    max_prompt_tokens: int | None = None,
    prefix_cache: bool = True,
) -> TextGenerationVectorEnv:
    """A single-turn env over the dialogue env's models, responses of ``length`` tokens (no
    EOS ends them), prompts of up to ``max_prompt_tokens`` (default: the dialogue env's), with
    or without the prefix cache (which keeps shared prompt prefixes across resets)."""
    config = dict(
        num_envs=dialogue.num_envs,
        max_prompt_tokens=max_prompt_tokens or dialogue.config.max_prompt_tokens,
        max_new_tokens=length, kl_coef=dialogue.kl_coef, engine=dialogue.config.engine,
        prefix_cache=prefix_cache,
    )  # fmt: skip
    return TextGenerationVectorEnv(
        dialogue.policy, dialogue.tokenizer, lambda p, r: [0.0] * len(r), ["x"],
        dialogue.reference, eos_token_ids=(-1,), **config,
    )  # fmt: skip


def run_single(
    env: TextGenerationVectorEnv, prompts: list[str], actions: Sequence[int]
) -> tuple[float, list]:
    """Seconds for one response per sub-env, the token ``actions[t]`` at step ``t`` (none
    ends it: the env has no EOS), and the steps' ``(actions, infos)``."""
    steps = []
    start = time.perf_counter()
    with env.holding_ended():
        env.reset(options={"prompts": prompts})
        for token in actions:
            step_actions = np.full(env.num_envs, token)
            steps.append((step_actions, env.step(step_actions)[-1]))
    return time.perf_counter() - start, steps


def run_reencoded(
    env: TextGenerationVectorEnv, conversations: list, turn_tokens: int
) -> tuple[float, Turns]:
    """Seconds for the conversations done turn by turn, each turn a fresh episode on the whole
    conversation so far (templated and encoded again), and each sub-env's assistant turns."""
    template = IncrementalChatTemplate(env.tokenizer)
    actions = turn_actions(env.tokenizer, turn_tokens)
    turns: Turns = [[[] for _ in range(TURNS)] for _ in conversations]
    seconds = 0.0
    for turn in range(TURNS):
        prompts = []
        for messages in conversations:
            users = [k for k, m in enumerate(messages) if m["role"] == "user"]
            upto = users[min(turn, len(users) - 1)] + 1
            prompts.append(template.render(messages[:upto]))
        elapsed, steps = run_single(env, prompts, actions)
        seconds += elapsed
        for step_actions, info in steps:
            record(turns, np.full(len(conversations), turn), step_actions, info)
    return seconds, turns


def complete_turns(turns: Turns, actions: list[int]) -> list[int]:
    """Per sub-env, how many of its first turns are whole: ``actions``, all of them."""
    counts = []
    for row_turns in turns:
        whole = [[token for token, *_ in turn] == actions for turn in row_turns]
        counts.append(whole.index(False) if False in whole else len(whole))
    return counts


def turns_checksum(runs: list[Turns], complete: list[int]) -> dict[str, Any]:
    """The checksum of the first ``complete[i]`` turns of sub-env ``i`` over ``runs``."""
    steps = np.array(
        [
            step
            for turns in runs
            for row, row_turns in enumerate(turns)
            for turn in row_turns[: complete[row]]
            for step in turn
        ]
    ).reshape(-1, 4)  # (tokens, 4): token, log pi, log pi_ref, KL
    token, logprob, ref_logprob, kl = steps.T
    return checksum(token.astype(np.int64), logprob=logprob, ref_logprob=ref_logprob, kl=kl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2-135m", "tiny-gpt2"], default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--turn-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    env = dialogue_env(args.model, args.batch, args.turn_tokens)
    warm_up = run_dialogue(env, args.turn_tokens, seed=0)
    _, tokens, inserted, conversations, first_turns = warm_up
    # The turns the dialogue completed: re-encode replays the others (compared: none of them).
    complete = complete_turns(first_turns, turn_actions(env.tokenizer, args.turn_tokens))
    length = -(-tokens // args.batch)  # the continuation per sub-env, rounded up
    longest = max(len(env.tokenizer(template, add_special_tokens=False)["input_ids"])
                  for template in [IncrementalChatTemplate(env.tokenizer).render(c)
                                   for c in conversations])  # fmt: skip
    reencode_envs = {
        "re-encode": single_env(env, args.turn_tokens, max_prompt_tokens=longest),
        "re-encode (no cache)": single_env(
            env, args.turn_tokens, max_prompt_tokens=longest, prefix_cache=False
        ),
    }
    single = single_env(env, length)
    first_prompts = [IncrementalChatTemplate(env.tokenizer).render(c[:1]) for c in conversations]
    seconds: dict[str, list[float]] = {"dialogue": [], "single-turn": []}
    seconds |= {name: [] for name in reencode_envs}
    runs: dict[str, list[Turns]] = {"dialogue": []} | {name: [] for name in reencode_envs}
    filler = filler_id(env.tokenizer)
    for repeat in range(args.repeats):
        elapsed, *_, turns = run_dialogue(env, args.turn_tokens, seed=repeat)
        seconds["dialogue"].append(elapsed)
        runs["dialogue"].append(turns)
        seconds["single-turn"].append(run_single(single, first_prompts, [filler] * length)[0])
        for name, reencode_env in reencode_envs.items():
            elapsed, turns = run_reencoded(reencode_env, conversations, args.turn_tokens)
            seconds[name].append(elapsed)
            runs[name].append(turns)
    counted = {"single-turn": length * args.batch} | dict.fromkeys(runs, tokens)
    result = {
        "model": args.model, "batch": args.batch, "turns": TURNS,
        "turn_tokens": args.turn_tokens, "continuation_tokens": tokens,
        "inserted_tokens": inserted, "compared_turns": sum(complete),
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
        print(f"  {variant:20s} {median:8.3f} s  {counted[variant] / median:9.1f} tok/s")
    ratio = result["dialogue_tok_s"] / result["single-turn_tok_s"]
    result["dialogue_vs_single"] = ratio
    result["dialogue_vs_reencode"] = result["dialogue_tok_s"] / result["re-encode_tok_s"]
    result["dialogue_vs_reencode_no_cache"] = (
        result["dialogue_tok_s"] / result["re-encode (no cache)_tok_s"]
    )
    print(f"  dialogue / single-turn tokens/s: {ratio:.2f}x (target >= 0.9x); dialogue / "
          f"re-encode: {result['dialogue_vs_reencode']:.2f}x, without its prefix cache "
          f"{result['dialogue_vs_reencode_no_cache']:.2f}x")  # fmt: skip
    result["checksums"] = {name: turns_checksum(done, complete) for name, done in runs.items()}
    print(f"  {agreement(result['checksums'], list(runs))} ({sum(complete)} whole turns)")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
