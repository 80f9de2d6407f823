"""Synthetic preferences from a gold oracle: the offline stand-in for human labellers.

1. :func:`sample_responses`: several sampled responses per prompt from a policy;
2. :func:`label_pairs`: an oracle scores them and labels every pair of responses to a prompt,
   deterministically (the higher score wins) or with Bradley-Terry noise,
   ``P(A > B) = sigmoid(k * (s_A - s_B))``, like disagreeing human labellers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_env.data.preferences import PreferencePair
from rlhf_env.models.modules import device_of, eval_mode

Oracle = Callable[[list[str], list[str]], Sequence[float]]


@torch.no_grad()
def sample_responses(
    policy: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    responses_per_prompt: int = 2,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[list[str]]:
    """``responses_per_prompt`` sampled continuations of each prompt (special tokens skipped).

    Pure ancestral sampling at ``temperature`` (no top-k / top-p), in left-padded batches of
    ``batch_size`` prompts, reproducible from ``seed``.
    """
    if responses_per_prompt < 1:
        raise ValueError(f"responses_per_prompt must be >= 1, got {responses_per_prompt}")
    device = device_of(policy)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    results: list[list[str]] = []
    try:
        for start in tqdm(
            range(0, len(prompts), batch_size), desc="sampling", unit="batch", disable=not progress
        ):
            chunk = list(prompts[start : start + batch_size])
            batch = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            with eval_mode(policy):
                output = policy.generate(
                    **batch,
                    do_sample=True,
                    temperature=temperature,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=responses_per_prompt,
                    pad_token_id=tokenizer.pad_token_id,
                )  # (B * k, P + T)
            texts = tokenizer.batch_decode(
                output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for i in range(len(chunk)):
                results.append(texts[i * responses_per_prompt : (i + 1) * responses_per_prompt])
    finally:
        tokenizer.padding_side = padding_side
    return results


def label_pairs(
    prompts: Sequence[str],
    responses: Sequence[Sequence[str]],
    oracle: Oracle,
    noise_k: float | None = None,
    min_gap: float = 0.0,
    seed: int = 0,
) -> list[PreferencePair]:
    """Label every pair of distinct responses to each prompt with the oracle.

    Args:
        prompts: one per group of responses.
        responses: ``responses[i]`` are the candidate responses to ``prompts[i]``.
        oracle: ``oracle(prompts, responses) -> scores``, e.g. VADER compound.
        noise_k: ``None`` for deterministic labels (the higher score is chosen; exact ties
            are skipped); else labels are drawn with ``P(A > B) = sigmoid(noise_k * (s_A -
            s_B))`` (ties are then coin flips).
        min_gap: skip pairs whose scores differ by less (ties carry no preference).
        seed: seed of the label noise.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} groups of responses")
    flat_prompts = [p for p, group in zip(prompts, responses, strict=True) for _ in group]
    flat_responses = [r for group in responses for r in group]
    scores = np.asarray(oracle(flat_prompts, flat_responses), dtype=np.float64)
    rng = np.random.default_rng(seed)
    pairs: list[PreferencePair] = []
    offset = 0
    for prompt, group in zip(prompts, responses, strict=True):
        group_scores = scores[offset : offset + len(group)]
        offset += len(group)
        for a, b in itertools.combinations(range(len(group)), 2):
            if group[a] == group[b] or abs(group_scores[a] - group_scores[b]) < min_gap:
                continue
            gap = group_scores[a] - group_scores[b]
            if noise_k is None:
                if gap == 0:
                    continue  # an exact tie states no preference
                a_wins = gap > 0
            else:
                a_wins = rng.random() < 1 / (1 + math.exp(-noise_k * gap))
            winner, loser = (a, b) if a_wins else (b, a)
            pairs.append(PreferencePair(prompt, group[winner], group[loser]))
    return pairs
