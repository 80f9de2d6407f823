"""A sequence-classification model as a reward function."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.models.modules import device_of, eval_mode


class SequenceClassifierReward:
    """Scores ``prompt + response`` with a sequence-classification model.

    With one output (a reward-model head) the score is the raw logit ``z``. With several labels
    the score is ``P(label | text) = softmax(z)[label]``, e.g. the probability of "positive" of a
    sentiment classifier.

    Args:
        model: an ``AutoModelForSequenceClassification``-style module returning ``.logits``.
        tokenizer: its tokenizer (a pad token is needed for batches).
        label: index or name (looked up in ``model.config.label2id``) of the label whose
            probability is the score; required when the model has more than one label.
        include_prompt: score ``prompt + response`` (default) or the response alone.
        batch_size: texts per forward.
        max_length: texts are truncated (from the right) to this many tokens.

    Example:
        >>> reward_fn = SequenceClassifierReward(model, tokenizer, label="POSITIVE")
        >>> reward_fn(["The film was"], [" great fun."])
        [0.97...]
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        label: int | str | None = None,
        include_prompt: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        num_labels = int(model.config.num_labels)
        if isinstance(label, str):
            label2id = getattr(model.config, "label2id", {}) or {}
            if label not in label2id:
                raise ValueError(f"label {label!r} not in the model's labels {list(label2id)}")
            label = int(label2id[label])
        if num_labels > 1 and label is None:
            raise ValueError(
                f"the classifier has {num_labels} labels; pass label= (an index or a name) to "
                "choose whose probability is the reward"
            )
        if label is not None and not 0 <= label < num_labels:
            raise ValueError(f"label {label} is outside the model's {num_labels} labels")
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the classifier's tokenizer has no pad token; set tokenizer.pad_token (e.g. to "
                "its eos_token) and model.config.pad_token_id to the same id"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.include_prompt = include_prompt
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One score per response (see the class docstring for the formula)."""
        texts = [
            p + r if self.include_prompt else r for p, r in zip(prompts, responses, strict=True)
        ]
        device = device_of(self.model)
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.no_grad(), eval_mode(self.model):
                logits = self.model(**batch).logits.float()  # (B, num_labels)
            if self.label is None:
                batch_scores = logits[:, 0]
            else:
                batch_scores = logits.softmax(dim=-1)[:, self.label]
            scores.extend(batch_scores.tolist())
        return scores
