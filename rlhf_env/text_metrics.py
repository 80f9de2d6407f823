"""Metrics of generated text: diversity (distinct-n, repetition) and fluency (perplexity).

Pure functions of the responses (and, for perplexity, of a causal LM), for evaluation; none of
them is a reward. ``responses`` are the decoded response texts, ``prompts`` the prompts they
answer, in the same order.

=================== ==========================================================================
metric              definition
=================== ==========================================================================
``distinct_n``      distinct n-grams / n-grams, both counted over *all* responses pooled
                    (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
                    Conversation Models"); 0.0 when the responses hold no n-gram
``repetition_rate`` the mean over responses of the fraction of a response's n-grams that repeat
                    an earlier n-gram of the *same* response, ``1 - distinct / total`` per
                    response (seq-rep-n of Welleck et al. 2019, "Neural Text Generation with
                    Unlikelihood Training"); responses with no n-gram are left out
``perplexity``      of each response given its prompt under a causal LM:
                    ``exp(NLL_i / T_i)``; over the corpus ``exp(sum_i NLL_i / sum_i T_i)``,
                    where ``NLL_i`` is the summed negative log-likelihood (nats) of response
                    ``i``'s ``T_i`` tokens, teacher-forced after its prompt
=================== ==========================================================================

Words come from ``tokenize`` (``str.split`` by default: whitespace, punctuation kept on the
word). Standard errors: the per-response figures' spread for means (:func:`standard_error`);
the delete-one jackknife for the pooled ones (:func:`distinct_n_standard_error`,
:attr:`Perplexity.standard_error`).

Example:
    >>> distinct_n(["the film was good", "the film was long"], n=1)
    0.625
    >>> repetition_rate(["great great great great great great"])
    0.75
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from rlhf_env.models.modules import device_of, eval_mode

Tokenize = Callable[[str], Sequence[str]]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of ``tokens`` in order (none when there are fewer than ``n`` tokens)."""
    _check_n(n)
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(responses: Sequence[str], n: int = 1, tokenize: Tokenize = str.split) -> float:
    """Distinct n-grams over total n-grams, all responses pooled (Li et al. 2016).

    1.0 when no n-gram occurs twice anywhere, ``1 / total`` when every n-gram is the same;
    0.0 when the responses hold no n-gram at all (empty, or all shorter than ``n`` words).
    """
    counts = _pooled_counts(responses, n, tokenize)
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def distinct_n_standard_error(
    responses: Sequence[str], n: int = 1, tokenize: Tokenize = str.split
) -> float:
    """The delete-one jackknife standard error of :func:`distinct_n` over responses.

    ``sqrt((E - 1) / E * sum_i (d_(i) - mean d_(.)) ** 2)``, where ``d_(i)`` is distinct-n of
    the responses without response ``i`` (computed exactly in one pass over the counts).
    0.0 for fewer than two responses.
    """
    if len(responses) < 2:
        return 0.0
    own = [Counter(ngrams(list(tokenize(text)), n)) for text in responses]
    pooled: Counter[tuple[str, ...]] = Counter()
    for counts in own:
        pooled.update(counts)
    total, distinct = sum(pooled.values()), len(pooled)
    left_out = []
    for counts in own:
        rest_total = total - sum(counts.values())
        # The n-grams that only response i has vanish with it.
        rest_distinct = distinct - sum(pooled[gram] == count for gram, count in counts.items())
        left_out.append(rest_distinct / rest_total if rest_total else 0.0)
    return _jackknife(np.asarray(left_out))


def repetition(response: str, n: int = 3, tokenize: Tokenize = str.split) -> float:
    """The fraction of ``response``'s n-grams that repeat an earlier n-gram of it:
    ``1 - distinct / total``; NaN when it has no n-gram (fewer than ``n`` words)."""
    grams = ngrams(list(tokenize(response)), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(responses: Sequence[str], n: int = 3, tokenize: Tokenize = str.split) -> float:
    """The mean :func:`repetition` of the responses that have an n-gram (0.0 if none has).

    About 0 for ordinary text; ``(L - n) / (L - n + 1)`` for one word said ``L`` times, which
    tends to 1 (0.75 for "great" six times, with 3-grams).
    """
    values = np.array([repetition(text, n, tokenize) for text in responses], dtype=np.float64)
    measured = values[~np.isnan(values)]
    return float(measured.mean()) if measured.size else 0.0


def standard_error(values: Sequence[float] | np.ndarray) -> float:
    """The standard error of the mean, ``std(ddof=1) / sqrt(count)``, NaNs left out; 0.0 for
    fewer than two values."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size < 2:
        return 0.0
    return float(array.std(ddof=1) / np.sqrt(array.size))


@dataclass(frozen=True)
class Perplexity:
    """The perplexities of responses given their prompts (see :func:`response_perplexity`).

    Attributes:
        per_response: ``exp(nll / num_tokens)`` of each response ``(E,)``; NaN for an empty one.
        corpus: ``exp(sum(nll) / sum(num_tokens))``, the token-weighted figure; NaN when every
            response is empty.
        nll: the summed negative log-likelihood of each response's tokens ``(E,)``, nats.
        num_tokens: how many tokens of each response were scored ``(E,)`` (0: empty).
    """

    per_response: np.ndarray
    corpus: float
    nll: np.ndarray
    num_tokens: np.ndarray

    @property
    def num_empty(self) -> int:
        """Responses left out because they have no token to score."""
        return int((self.num_tokens == 0).sum())

    @property
    def standard_error(self) -> float:
        """The delete-one jackknife standard error of :attr:`corpus` over the scored
        responses (0.0 for fewer than two)."""
        scored = self.num_tokens > 0
        nll, tokens = self.nll[scored], self.num_tokens[scored]
        if nll.size < 2:
            return 0.0
        left_out = np.exp((nll.sum() - nll) / (tokens.sum() - tokens))  # (E,)
        return _jackknife(left_out)


@torch.no_grad()
def response_perplexity(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
) -> Perplexity:
    """Perplexity of each response given its prompt under the causal LM ``model``.

    Prompt and response are tokenised apart with ``model``'s own ``tokenizer`` (the prompt
    as the envs encode it, with the tokenizer's special tokens; the response without) and
    their ids concatenated, so the scored tokens are exactly the response's: one
    teacher-forced forward over ``prompt + response`` in eval mode without gradients, the
    loss taken on the response tokens only. Rows are right-padded (whatever the tokenizer's
    padding side) and batched by length; the figures do not depend on the batching. An empty
    prompt is conditioned on the BOS token (else EOS, as GPT-2 does); an empty response is
    left out (NaN, counted in :attr:`Perplexity.num_empty`). The model is typically the env's
    frozen reference, or another LM that shares nothing with the policy.

    Args:
        model: a causal LM (``model(input_ids=, attention_mask=).logits``).
        tokenizer: ``model``'s tokenizer.
        prompts, responses: the texts, one response per prompt.
        batch_size: rows per forward.
        max_length: tokens per row; longer prompts are cut from the left (default: the
            model's position limit where its config states one).

    Example:
        >>> result = response_perplexity(env.reference, env.tokenizer, prompts, responses)
        >>> result.corpus, result.per_response
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one each")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = max_length if max_length is not None else _position_limit(model)
    rows = [
        _row(tokenizer, prompt, response, limit)
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    nll = np.zeros(len(rows), dtype=np.float64)
    num_tokens = np.array([len(row) - start for row, start in rows], dtype=np.int64)
    order = [i for i in sorted(range(len(rows)), key=lambda i: -len(rows[i][0])) if num_tokens[i]]
    device = device_of(model)
    with eval_mode(model):
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            width = max(len(rows[i][0]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T) right-padded
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)  # (B, T) response tokens
            for b, i in enumerate(batch):
                row, start = rows[i]
                ids[b, : len(row)] = torch.tensor(row)
                mask[b, : len(row)] = 1
                scored[b, start : len(row)] = True
            ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
            # Position t - 1 predicts token t; only the response tokens' rows are kept.
            targets = scored[:, 1:]  # (B, T-1)
            picked = logits[:, :-1][targets].float()  # (K, V)
            token_nll = torch.nn.functional.cross_entropy(
                picked, ids[:, 1:][targets], reduction="none"
            )  # (K,)
            row_of = torch.arange(len(batch), device=device)[:, None].expand_as(targets)[targets]
            sums = torch.zeros(len(batch), dtype=torch.float64, device=device)
            sums.index_add_(0, row_of, token_nll.double())  # (B,)
            nll[batch] = sums.cpu().numpy()
    per_response = np.where(num_tokens > 0, np.exp(nll / np.maximum(num_tokens, 1)), np.nan)
    total = int(num_tokens.sum())
    corpus = float(np.exp(nll.sum() / total)) if total else float("nan")
    return Perplexity(per_response, corpus, nll, num_tokens)


def _row(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, limit: int | None
) -> tuple[list[int], int]:
    """``(prompt ids + response ids, index of the first scored token)``."""
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    prompt_ids = list(tokenizer(prompt)["input_ids"]) if prompt else []
    if not prompt_ids:
        start_id = tokenizer.bos_token_id
        if start_id is None:
            start_id = tokenizer.eos_token_id
        prompt_ids = [start_id] if start_id is not None else []
    if limit is not None:
        if len(response_ids) >= limit:
            raise ValueError(
                f"a response of {len(response_ids)} tokens does not fit in max_length={limit} "
                "with its prompt; pass a larger max_length or score shorter responses"
            )
        prompt_ids = prompt_ids[-(limit - len(response_ids)) :]
    if not response_ids:
        return prompt_ids, len(prompt_ids)
    # With no context at all, the first response token cannot be predicted: it becomes one.
    start = max(len(prompt_ids), 1)
    return prompt_ids + response_ids, start


def _position_limit(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _pooled_counts(
    responses: Sequence[str], n: int, tokenize: Tokenize
) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for text in responses:
        counts.update(ngrams(list(tokenize(text)), n))
    return counts


def _jackknife(left_out: np.ndarray) -> float:
    count = left_out.size
    return float(np.sqrt((count - 1) / count * ((left_out - left_out.mean()) ** 2).sum()))


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (1 for words, 2 for word pairs), got {n!r}")
