"""Text-metric rewards against references, length penalties, and a weighted composite.

Each is a reward function ``reward(prompts, responses) -> list[float]``. Reference-based
metrics look up the references of each prompt in ``references`` (a mapping from prompt to a
list of reference texts, or a callable ``prompt -> list[str]``).

The missing-EOS penalty lives in the environments (``missing_eos_penalty``), because only they
know whether a response ended with EOS or was cut at ``max_new_tokens``: the decoded text
passed to a reward function no longer shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from rlhf_env.extras import require
from rlhf_env.rewards.base import RewardFunction, score_responses

References = Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]]


class _ReferenceMetric:
    def __init__(self, references: References) -> None:
        self._references = references

    def references_for(self, prompt: str) -> list[str]:
        """The reference texts of ``prompt``; a ``KeyError`` names a prompt without any."""
        if callable(self._references):
            found = self._references(prompt)
        else:
            if prompt not in self._references:
                raise KeyError(f"no references for prompt {prompt!r}; add it to `references`")
            found = self._references[prompt]
        if isinstance(found, str) or not found:
            raise ValueError(f"references for prompt {prompt!r} must be a non-empty list of str")
        return list(found)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [
            self.score(response, self.references_for(prompt))
            for prompt, response in zip(prompts, responses, strict=True)
        ]

    def score(self, response: str, references: list[str]) -> float:
        raise NotImplementedError


class BLEUReward(_ReferenceMetric):
    """Sentence BLEU of the response against its prompt's references, scaled to ``[0, 1]``.

    ``score = sacrebleu.sentence_bleu(response, references).score / 100`` (exponential
    smoothing, sacrebleu's default for sentences).
    """

    def score(self, response: str, references: list[str]) -> float:
        """BLEU / 100 of one response."""
        sacrebleu = require("sacrebleu", "metrics", "BLEUReward")
        return float(sacrebleu.sentence_bleu(response, references).score) / 100


class ChrFReward(_ReferenceMetric):
    """Sentence chrF (character n-gram F-score, Popovic 2015) against the references, in [0, 1].

    ``score = sacrebleu.sentence_chrf(response, references).score / 100``.
    """

    def score(self, response: str, references: list[str]) -> float:
        """chrF / 100 of one response."""
        sacrebleu = require("sacrebleu", "metrics", "ChrFReward")
        return float(sacrebleu.sentence_chrf(response, references).score) / 100


class RougeReward(_ReferenceMetric):
    """ROUGE F-measure against the references (best over references), in ``[0, 1]``.

    ``score = max_ref rouge_scorer.RougeScorer([variant]).score(ref, response)[variant].fmeasure``

    Args:
        references: prompt -> reference texts.
        variant: ``"rouge1"``, ``"rouge2"`` or ``"rougeL"`` (default).
        use_stemmer: Porter-stem words before matching.
    """

    def __init__(
        self, references: References, variant: str = "rougeL", use_stemmer: bool = False
    ) -> None:
        rouge_scorer = require("rouge_score.rouge_scorer", "metrics", "RougeReward")
        super().__init__(references)
        self.variant = variant
        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer)

    def score(self, response: str, references: list[str]) -> float:
        """Best ROUGE F-measure of one response over its references."""
        return max(
            float(self._scorer.score(reference, response)[self.variant].fmeasure)
            for reference in references
        )


class LengthPenalty:
    """Penalises responses outside a length range, in tokens (or characters without tokenizer).

    ``score = -coef * (max(0, min_length - n) + max(0, n - max_length))`` with ``n`` the length
    of the response.

    Args:
        min_length: shortest length without penalty (default 0).
        max_length: longest length without penalty (default no limit).
        coef: penalty per token (or character) outside the range.
        tokenizer: count tokens with it; without one, characters are counted.
    """

    def __init__(
        self,
        min_length: int = 0,
        max_length: int | None = None,
        coef: float = 0.01,
        tokenizer=None,
    ) -> None:
        if max_length is not None and max_length < min_length:
            raise ValueError(f"max_length ({max_length}) must be >= min_length ({min_length})")
        if coef < 0:
            raise ValueError(f"coef must be >= 0, got {coef}; it is the size of a penalty")
        self.min_length, self.max_length, self.coef = min_length, max_length, coef
        self.tokenizer = tokenizer

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One penalty (<= 0) per response."""
        scores = []
        for response in responses:
            n = (
                len(self.tokenizer(response, add_special_tokens=False)["input_ids"])
                if self.tokenizer is not None
                else len(response)
            )
            outside = max(0, self.min_length - n)
            if self.max_length is not None:
                outside += max(0, n - self.max_length)
            scores.append(-self.coef * outside)
        return scores


class CompositeReward:
    """A weighted sum of reward functions: ``score = sum_i w_i * reward_i(prompt, response)``.

    Example:
        >>> reward = CompositeReward([(1.0, reward_model), (1.0, LengthPenalty(max_length=40))])
    """

    def __init__(self, components: Sequence[tuple[float, RewardFunction]]) -> None:
        if not components:
            raise ValueError("CompositeReward needs at least one (weight, reward_fn) pair")
        for _, function in components:
            if not callable(function):
                raise TypeError(f"component {function!r} is not a callable reward function")
        self.components = [(float(w), f) for w, f in components]

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The weighted sum, one float per response."""
        total = [0.0] * len(responses)
        for weight, function in self.components:
            scores = score_responses(function, prompts, responses)
            total = [t + weight * float(s) for t, s in zip(total, scores, strict=True)]
        return total
