"""The learned reward model: a transformer backbone with a scalar head, usable as ``reward_fn``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from rlhf_env.models.loading import ensure_pad_token, pick_device, refuse_pickled_weights
from rlhf_env.models.modules import device_of, eval_mode

REWARD_CONFIG = "reward_config.json"
POOLINGS = ("head", "sum", "mean")


class RewardModelError(ValueError):
    """A reward-model checkpoint or backbone cannot be used; the message names the file."""


class RewardModel:
    """A scalar reward ``r(prompt, response)`` from any Hugging Face backbone with a one-output
    sequence-classification head, normalised so that scores on a reference set have mean 0 and
    standard deviation 1::

        score = (head(backbone(prompt [SEP] response)) - mean) / std

    With ``include_prompt=False`` the backbone reads the response alone, for preferences that
    depend on the response only (such as the sentiment oracles' labels): shorter inputs, and
    the prompt's own content cannot leak into the score.

    ``pooling`` chooses how the scalar is read off the backbone:

    - ``"head"``: the model's sequence-classification head (``AutoModelForSequenceClassification``:
      the [CLS] pooler for BERT-like encoders, the last token for GPT-like decoders);
    - ``"sum"``: a per-token score ``w . h_t + b`` (``AutoModelForTokenClassification``) summed
      over the text's tokens, ``r = sum_t s_t``: an additive reward, the right bias when
      preferences add up word by word (lexicon sentiment such as VADER's sums word valences);
    - ``"mean"``: the same per-token scores averaged, ``r = mean_t s_t``.

    Call it as the env's ``reward_fn``: ``reward_model(prompts, responses) -> list[float]``.
    Train it with :func:`rlhf_env.rewards.training.train_reward_model`.

    Args:
        model: a sequence-classification model with ``num_labels == 1``.
        tokenizer: its tokenizer (a pad token is ensured).
        max_length: a pair is truncated to this many tokens, each token taken from the longer
            of prompt and response (``longest_first``), on the tokenizer's ``truncation_side``
            (the Harmless and Dialogue tasks set ``"left"``: the latest turns stay).
        include_prompt: read ``(prompt, response)`` as a text pair (default) or the response only.
        pooling: ``"head"``, ``"sum"`` or ``"mean"`` (see above); the model must be of the
            matching kind (sequence classification for ``"head"``, token classification else).
        mean, std: the normalisation (see :meth:`normalize`).
        batch_size: texts per forward when scoring.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        mean: float = 0.0,
        std: float = 1.0,
        batch_size: int = 64,
        include_prompt: bool = True,
        pooling: str = "head",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if int(model.config.num_labels) != 1:
            raise RewardModelError(
                f"a reward model needs one output, the backbone's head has "
                f"{model.config.num_labels}; build it with num_labels=1 (RewardModel.from_backbone)"
            )
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.model = model
        self.tokenizer = ensure_pad_token(tokenizer)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length
        self.mean, self.std = float(mean), float(std)
        self.batch_size = batch_size
        self.include_prompt = bool(include_prompt)
        self.pooling = pooling

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        max_length: int = 256,
        trust_remote_code: bool = False,
        seed: int = 0,
        include_prompt: bool = True,
        pooling: str = "head",
        allow_pickle: bool = False,
    ) -> RewardModel:
        """A fresh scalar head on a pretrained backbone (hub name or local folder).

        ``allow_pickle``: also accept pickled ``.bin`` weights (they can run code when
        loaded); by default only safetensors load.

        Raises:
            RewardModelError: the backbone has no usable tokenizer.
            ValueError: a local backbone with pickled weights only, and ``allow_pickle`` off.
        """
        if not allow_pickle:
            refuse_pickled_weights(name_or_path)
        tokenizer = _load_tokenizer(name_or_path, trust_remote_code)
        # transformers may build an empty tokenizer from a config alone: check it encodes text.
        if not tokenizer("The film was good.", add_special_tokens=False)["input_ids"]:
            raise RewardModelError(
                f"backbone {name_or_path} has no usable tokenizer (it encodes text to no tokens); "
                "pass a folder or hub name that holds tokenizer files as well as weights"
            )
        torch.manual_seed(seed)  # the head's initialisation
        # A backbone that already has a classification head of another size gets a fresh one.
        # The head is new by design: silence transformers' report of its missing weights.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            model = _model_class(pooling).from_pretrained(
                name_or_path,
                num_labels=1,
                ignore_mismatched_sizes=True,
                trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True,
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
        return cls(
            model.to(pick_device(device)),
            tokenizer,
            max_length=max_length,
            include_prompt=include_prompt,
            pooling=pooling,
        )

    @property
    def device(self) -> torch.device:
        """Where the backbone lives."""
        return device_of(self.model)

    def encode(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """Tokenise ``(prompt, response)`` text pairs (or the responses alone, when
        ``include_prompt`` is off), padded, on the model's device."""
        texts = (list(prompts), list(responses)) if self.include_prompt else (list(responses),)
        batch = self.tokenizer(
            *texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in batch.items()}

    def raw_forward(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Unnormalised rewards ``(B,)`` with gradients (for training)."""
        batch = self.encode(prompts, responses)
        if batch["input_ids"].shape[1] == 0:  # every text empty, and no special tokens added
            return torch.zeros(len(responses), device=self.device)
        logits = self.model(**batch).logits.float()
        if self.pooling == "head":
            return logits[:, 0]
        mask = batch["attention_mask"].float()  # (B, T)
        total = (logits[..., 0] * mask).sum(dim=1)  # (B,)
        return total if self.pooling == "sum" else total / mask.sum(dim=1).clamp(min=1)

    @torch.no_grad()
    def raw_scores(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Unnormalised rewards ``(B,)`` in eval mode, in batches of ``batch_size``."""
        scores = []
        with eval_mode(self.model):
            for start in range(0, len(responses), self.batch_size):
                end = start + self.batch_size
                scores.append(self.raw_forward(prompts[start:end], responses[start:end]).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Normalised rewards, one per response: the env's ``reward_fn`` interface."""
        return ((self.raw_scores(prompts, responses) - self.mean) / self.std).tolist()

    def normalize(self, prompts: list[str], responses: list[str]) -> tuple[float, float]:
        """Set ``mean`` and ``std`` so that these responses score mean 0, std 1."""
        raw = self.raw_scores(prompts, responses)
        if raw.numel() < 2:
            raise ValueError("normalize() needs at least two responses")
        self.mean = float(raw.mean())
        self.std = float(raw.std()) or 1.0
        return self.mean, self.std

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the backbone and head (safetensors), tokenizer and ``reward_config.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        config = {
            "mean": self.mean,
            "std": self.std,
            "max_length": self.max_length,
            "include_prompt": self.include_prompt,
            "pooling": self.pooling,
        }
        (directory / REWARD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
    ) -> RewardModel:
        """Load a reward model written by :meth:`save_pretrained` (safetensors only).

        Raises:
            RewardModelError: missing or corrupt files, named in the message.
        """
        directory = Path(directory)
        config_path = directory / REWARD_CONFIG
        weights = directory / "model.safetensors"
        for required in (config_path, weights):
            if not required.is_file():
                raise RewardModelError(
                    f"{required} is missing; {directory} is not a reward model saved by "
                    "RewardModel.save_pretrained"
                )
        try:
            config = json.loads(config_path.read_text())
            mean, std, max_length = (
                float(config["mean"]),
                float(config["std"]),
                config["max_length"],
            )
            include_prompt = bool(config.get("include_prompt", True))
            pooling = str(config.get("pooling", "head"))
            model_class = _model_class(pooling)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise RewardModelError(f"{config_path} is corrupt: {error}") from error
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise RewardModelError(
                f"{config_path}: the normalisation must be finite with std > 0, got mean {mean}, "
                f"std {std}"
            )
        if not isinstance(max_length, int) or max_length < 1:
            raise RewardModelError(
                f"{config_path}: max_length must be a positive integer, got {max_length!r}"
            )
        try:
            model = model_class.from_pretrained(
                directory, trust_remote_code=trust_remote_code, use_safetensors=True
            )
        except Exception as error:
            raise RewardModelError(f"cannot load the weights in {weights}: {error}") from error
        if getattr(model.config, "num_labels", 1) != 1:
            raise RewardModelError(
                f"{directory / 'config.json'} describes {model.config.num_labels} outputs; a "
                "reward model has one"
            )
        tokenizer = _load_tokenizer(directory, trust_remote_code)
        model = model.to(pick_device(device)).eval()
        return cls(
            model,
            tokenizer,
            max_length=int(max_length),
            mean=mean,
            std=std,
            include_prompt=include_prompt,
            pooling=pooling,
        )


def _load_tokenizer(name_or_path: str | Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The tokenizer of a backbone or saved reward model.

    Raises:
        RewardModelError: no usable tokenizer files there.
    """
    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as error:
        raise RewardModelError(
            f"{name_or_path} has no usable tokenizer ({error}); pass a folder or hub name that "
            "holds tokenizer files as well as weights"
        ) from error


def _model_class(pooling: str) -> type:
    """The transformers auto class whose outputs the pooling reads."""
    if pooling not in POOLINGS:
        raise RewardModelError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return (
        AutoModelForSequenceClassification if pooling == "head" else AutoModelForTokenClassification
    )
