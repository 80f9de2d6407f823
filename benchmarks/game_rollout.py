"""A 5-turn game, token-level through the vector env against the usual turn-level loop.

Turn-level env libraries (TextArena's and reasoning-gym's trainers, verifiers, GEM) play a
game turn by turn: generate the agent's turn on the conversation so far, decode it, step the
game, append the game's answer as text, then template and tokenise the whole conversation
again for the next turn. The token-level bridge (:mod:`rlhf_env.dialogue.turn_level`) keeps
one episode per sub-env instead and appends each next user turn to the KV caches in one
batched, ragged forward. Two ways to play the same games, timed side by side:

    token-level  the vector env on ``TurnLevelEpisode`` prompts: the game's answer is inserted
                 as observation tokens in the step that ends the agent's turn
    turn-level   each turn a fresh single-turn episode of the same vector env machinery on
                 the whole conversation so far (templated and encoded again, every token
                 prefilled: the usual loop), the game stepped with the decoded turn in between
    turn-level+  the same with the env's prefix cache on (the conversation so far, a prefix
                 of the next turn's prompt, is kept and only the new part prefilled: what an
                 inference server's automatic prefix caching gives a turn-level loop)

Both run the policy and the reference on every agent token (the env's KL) and play the same
agent tokens: ``--turn-tokens - 1`` filler tokens, then the end-of-turn token (scripted, so
both variants do the same work and the games go the same way). The game
(:class:`CountdownGame`) lasts exactly ``--turns`` turns and answers each with a board of
about 40 tokens, as a small board game's would. Tokens/s counts the agent's tokens over the
seconds from the first reset to the last step, median over ``--repeats`` with the variants
alternating. Target (issue 30): token-level >= 1.3x the turn-level loop.

The JSON's ``checksums`` hold, per variant, a digest of the agent tokens (sorted: the variants
step rows in other orders) and the sums of their log-probs and KL, which must agree: the same
tokens on the same contexts.

    python benchmarks/game_rollout.py --model smollm2-135m --batch 16 --turn-tokens 24
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from checksums import agreement, checksum
from dialogue_rollout import run_single, single_env, turn_actions

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.dialogue import IncrementalChatTemplate
from rlhf_env.dialogue.turn_level import TurnLevelEpisode
from rlhf_env.models import (
    build_tiny_gpt2,
    build_tiny_tokenizer,
    frozen_copy,
    load_causal_lm,
    load_tokenizer,
)


class CountdownGame:
    """A game of exactly ``turns`` agent turns: each answered with a 3x3 board and the turns
    left; reward 1 at the end. Deterministic by seed (the board's marks)."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.made = 0
        self.seed = 0

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        self.made, self.seed = 0, seed or 0
        return self._board(), {"system_prompt": "You are playing a board game. Make a move."}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self.made += 1
        over = self.made >= self.turns
        outcome = {"outcome": {"turns": float(self.made)}} if over else {}
        return ("" if over else self._board()), float(over), over, False, outcome

    def _board(self) -> str:
        marks = "XO."
        cells = [marks[(self.seed + self.made * 7 + k * 5) % 3] for k in range(9)]
        rows = [" | ".join(cells[r * 3 : r * 3 + 3]) for r in range(3)]
        return "\n---------\n".join(rows) + f"\nTurns left: {self.turns - self.made}. Your move."


def build(model: str) -> tuple[torch.nn.Module, Any, torch.nn.Module]:
    """Policy, tokenizer and reference: SmolLM2-135M-Instruct (the packaged asset) or a tiny
    random GPT-2 with a ChatML template (a plumbing check, not a figure)."""
    if model == "tiny-gpt2":
        tokenizer = build_tiny_tokenizer(chat_template=True)
        policy = build_tiny_gpt2(tokenizer, seed=0, n_positions=2048)
        return policy, tokenizer, build_tiny_gpt2(tokenizer, seed=1, n_positions=2048)
    from rlhf_env import assets

    path = assets.smollm2_folder()
    tokenizer = load_tokenizer(path)
    policy = load_causal_lm(path)
    return policy, tokenizer, frozen_copy(policy)


def games(count: int, turns: int) -> list[TurnLevelEpisode]:
    """``count`` games of ``turns`` turns, seeds 0, 1, ..."""
    return [TurnLevelEpisode(lambda: CountdownGame(turns), seed=s) for s in range(count)]


def game_env(models, batch: int, turns: int, turn_tokens: int) -> TextGenerationVectorEnv:
    policy, tokenizer, reference = models
    return TextGenerationVectorEnv(
        policy, tokenizer, None, games(batch, turns), reference, num_envs=batch, max_turns=turns,
        max_new_tokens=turn_tokens, max_prompt_tokens=128,
        max_total_tokens=turns * (turn_tokens + 64),
    )  # fmt: skip


def run_token_level(env: TextGenerationVectorEnv, turn_tokens: int) -> tuple[float, int, list]:
    """Seconds for one game per sub-env, the agent tokens, and the agent steps' statistics."""
    schedule = np.array(turn_actions(env.tokenizer, turn_tokens))
    n = env.num_envs
    position = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    tokens, stats = 0, []
    start = time.perf_counter()
    with env.holding_ended():
        env.reset(options={"prompts": games(n, env.config.max_turns)})
        while not done.all():
            actions = schedule[np.minimum(position, turn_tokens - 1)]
            _, _, terms, truncs, info = env.step(actions)
            acted = ~done
            tokens += int(acted.sum())
            stats.append(_stats(actions, info, acted))
            inserted = info.get("_inserted_ids", np.zeros(n, bool))
            position = np.where(inserted, 0, position + 1)
            done |= terms | truncs
    return time.perf_counter() - start, tokens, stats


def run_turn_level(
    env: TextGenerationVectorEnv, single: TextGenerationVectorEnv, turns: int, turn_tokens: int
) -> tuple[float, int, list]:
    """Seconds for the same games turn by turn: each turn a fresh single-turn episode on the
    whole conversation (templated and encoded again), the game stepped with the decoded turn."""
    template = IncrementalChatTemplate(env.tokenizer)
    actions = turn_actions(env.tokenizer, turn_tokens)
    n = env.num_envs
    start = time.perf_counter()
    games = [CountdownGame(turns) for _ in range(n)]
    conversations = []
    for seed, game in enumerate(games):
        board, info = game.reset(seed=seed)
        conversations.append(
            [
                {"role": "system", "content": info["system_prompt"]},
                {"role": "user", "content": board},
            ]
        )
    tokens, stats = 0, []
    for _ in range(turns):
        prompts = [template.render(messages) for messages in conversations]
        _, steps = run_single(single, prompts, actions)
        tokens += n * len(actions)
        stats.extend(_stats(a, info, np.ones(n, bool)) for a, info in steps)
        text = env.tokenizer.decode(actions, skip_special_tokens=True)
        for game, messages in zip(games, conversations, strict=True):
            board, _, over, _, _ = game.step(text)
            messages.append({"role": "assistant", "content": text})
            if not over:
                messages.append({"role": "user", "content": board})
    return time.perf_counter() - start, tokens, stats


def _stats(actions: np.ndarray, info: dict[str, Any], acted: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(acted & info["_policy_logprob"])
    return np.stack(
        [actions[rows].astype(float), info["policy_logprob"][rows], info["ref_logprob"][rows],
         info["kl"][rows]], axis=1,
    )  # fmt: skip


def _checksum(stats: list) -> dict[str, Any]:
    steps = np.concatenate([s for s in stats if len(s)])
    steps = steps[np.lexsort(steps.T[::-1])]  # the variants step rows in other orders
    token, logprob, ref_logprob, kl = steps.T
    return checksum(token.astype(np.int64), logprob=logprob, ref_logprob=ref_logprob, kl=kl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "tiny-gpt2"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--turn-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    models = build(args.model)
    env = game_env(models, args.batch, args.turns, args.turn_tokens)
    singles = {
        "turn-level": single_env(env, args.turn_tokens, max_prompt_tokens=1024, prefix_cache=False),
        "turn-level+": single_env(env, args.turn_tokens, max_prompt_tokens=1024),
    }
    seconds: dict[str, list[float]] = {"token-level": [], "turn-level": [], "turn-level+": []}
    tokens: dict[str, int] = {}
    stats: dict[str, list] = {}
    with torch.no_grad():
        run_token_level(env, args.turn_tokens)  # warm-up
        for _ in range(args.repeats):
            elapsed, tokens["token-level"], stats["token-level"] = run_token_level(
                env, args.turn_tokens
            )
            seconds["token-level"].append(elapsed)
            for name, single in singles.items():
                elapsed, tokens[name], stats[name] = run_turn_level(
                    env, single, args.turns, args.turn_tokens
                )
                seconds[name].append(elapsed)
    rates = {k: tokens[k] / statistics.median(v) for k, v in seconds.items()}
    checksums = {k: _checksum(v) for k, v in stats.items()}
    result = {
        "benchmark": "game_rollout",
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": rates,
        "speedup": rates["token-level"] / rates["turn-level"],
        "speedup_over_prefix_cached": rates["token-level"] / rates["turn-level+"],
        "checksums": checksums,
        "checksums_agree": agreement(checksums, list(checksums)),
    }
    shown = ("tokens_per_second", "speedup", "speedup_over_prefix_cached", "checksums_agree")
    print(json.dumps({k: result[k] for k in shown}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
