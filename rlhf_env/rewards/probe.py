"""A reward model read off a frozen language model: a linear head on a hidden layer.

:class:`ProbeRewardModel` scores ``(prompt, response)`` as ``w . h + b``, where ``h`` is the
mean of a frozen causal LM's hidden states over the response's tokens at one layer, and
``(w, b)`` is a Bradley-Terry head fitted on preference pairs by
:func:`fit_probe_reward` (L2-regularised logistic regression on the pairs' feature
differences, the regularisation chosen by cross-validation). Only the head is learned: a few
hundred numbers, so a probe fitted on 1,600 pairs does not overfit its features the way a fine-tuned
backbone can, and a larger pretrained LM than the training reward model's backbone makes it the
stronger judge. The Harmless and Dialogue tasks use it as their gold (Gao et al., 2022: a gold
stronger than the proxy being optimised).

The backbone is not copied into the saved folder: ``probe_config.json`` names it (a packaged
asset, a folder or a hub name), and ``probe.safetensors`` holds the head.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.data.preferences import PreferencePair
from rlhf_env.models.efficient import decoder_layers
from rlhf_env.models.modules import device_of
from rlhf_env.models.trunk import TrunkHandoff, trunk_view
from rlhf_env.rewards.model import RewardModelError

PROBE_CONFIG = "probe_config.json"
PROBE_WEIGHTS = "probe.safetensors"
#: The L2 weights :func:`fit_probe_reward` chooses from by cross-validation.
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)

#: Loads a backbone by name: ``(name) -> (causal LM, tokenizer)``.
BackboneLoader = Callable[[str], tuple[PreTrainedModel, PreTrainedTokenizerBase]]


class ProbeRewardModel:
    """``r(prompt, response) = (w . mean_t h_layer(t) + b - mean) / std`` over the response's
    tokens ``t``, with the LM frozen.

    The text read is the prompt followed by the response, tokenised apart (no special tokens):
    the response cut to its first ``max_response_tokens`` tokens, the prompt to its last
    ``max_length`` minus the response's (the latest turns of a conversation stay).

    Args:
        model: a causal LM (only its bottom ``layer`` blocks run).
        tokenizer: its tokenizer (needs a pad token).
        layer: the hidden states read: the output of block ``layer`` (1 = the first block).
        weight, bias: the head (``weight`` has the model's hidden size).
        backbone: the name the model was loaded by (written into the saved config).
        max_length, max_response_tokens: the truncation above.
        mean, std: the normalisation of the raw score.
        batch_size: texts per forward.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        layer: int,
        weight: torch.Tensor,
        bias: float = 0.0,
        *,
        backbone: str = "",
        max_length: int = 192,
        max_response_tokens: int = 96,
        mean: float = 0.0,
        std: float = 1.0,
        batch_size: int = 16,
    ) -> None:
        depth = len(decoder_layers(model))
        if not 1 <= layer <= depth:
            raise ValueError(f"layer must be in [1, {depth}] for this model, got {layer}")
        if not 1 <= max_response_tokens < max_length:
            raise ValueError(
                f"max_response_tokens must be in [1, max_length={max_length}), got "
                f"{max_response_tokens}"
            )
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (rlhf_env.models.ensure_pad_token)")
        model.requires_grad_(False)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.layer = layer
        self.weight = weight.detach().float().cpu()
        self.bias = float(bias)
        self.backbone = backbone
        self.max_length = max_length
        self.max_response_tokens = max_response_tokens
        self.mean, self.std = float(mean), float(std)
        self.batch_size = batch_size
        self._handoff = TrunkHandoff()
        self._trunk = trunk_view(model, layer, self._handoff)

    @torch.no_grad()
    def features(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """The mean hidden state over each response's tokens, ``(B, hidden)`` float32 on CPU."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
        out = []
        for start in range(0, len(responses), self.batch_size):
            end = start + self.batch_size
            out.append(self._pooled(prompts[start:end], responses[start:end]))
        hidden = int(self.weight.numel())
        return torch.cat(out) if out else torch.zeros(0, hidden)

    def _pooled(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        rows, response_spans = [], []
        for prompt, response in zip(prompts, responses, strict=True):
            response_ids = self._ids(response)[: self.max_response_tokens]
            if not response_ids:  # an empty response: read the prompt's last token
                response_ids = self._ids(prompt)[-1:] or [self.tokenizer.pad_token_id]
                prompt = ""
            budget = self.max_length - len(response_ids)
            prompt_ids = self._ids(prompt)[-budget:] if prompt else []
            rows.append(prompt_ids + response_ids)
            response_spans.append((len(prompt_ids), len(prompt_ids) + len(response_ids)))
        width = max(len(row) for row in rows)
        device = device_of(self.model)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pool = torch.zeros((len(rows), width))
        for index, (row, (begin, end)) in enumerate(zip(rows, response_spans, strict=True)):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention[index, : len(row)] = 1
            pool[index, begin:end] = 1.0 / (end - begin)
        self._trunk(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            use_cache=False,
            logits_to_keep=1,
        )
        hidden = self._handoff.take().float()
        self._handoff.clear()
        # pooled where the states are: (B, H) crosses to the CPU, not (B, T, H)
        return torch.einsum("bt,bth->bh", pool.to(hidden.device), hidden).cpu()

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def raw_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Unnormalised scores ``w . h + b``, ``(B,)``."""
        return self.features(prompts, responses) @ self.weight + self.bias

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Normalised rewards, one per response: the env's ``reward_fn`` interface."""
        return ((self.raw_scores(prompts, responses) - self.mean) / self.std).tolist()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the head (``probe.safetensors``) and ``probe_config.json`` (which names the
        backbone; its weights are not copied)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.contiguous()}, str(directory / PROBE_WEIGHTS))
        config = {
            "backbone": self.backbone,
            "layer": self.layer,
            "bias": self.bias,
            "max_length": self.max_length,
            "max_response_tokens": self.max_response_tokens,
            "mean": self.mean,
            "std": self.std,
        }
        (directory / PROBE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, load_backbone: BackboneLoader
    ) -> ProbeRewardModel:
        """Load a probe written by :meth:`save_pretrained`, its backbone by
        ``load_backbone(name)``.

        Raises:
            RewardModelError: missing or corrupt files, or a head that does not fit the
                backbone, named in the message.
        """
        directory = Path(directory)
        config_path, weights_path = directory / PROBE_CONFIG, directory / PROBE_WEIGHTS
        for required in (config_path, weights_path):
            if not required.is_file():
                raise RewardModelError(
                    f"{required} is missing; {directory} is not a probe saved by "
                    "ProbeRewardModel.save_pretrained"
                )
        try:
            config = json.loads(config_path.read_text())
            settings = {
                "backbone": str(config["backbone"]),
                "max_length": int(config["max_length"]),
                "max_response_tokens": int(config["max_response_tokens"]),
                "mean": float(config["mean"]),
                "std": float(config["std"]),
            }
            layer, bias = int(config["layer"]), float(config["bias"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise RewardModelError(f"{config_path} is corrupt: {error}") from error
        try:
            weight = load_file(str(weights_path))["weight"]
        except Exception as error:
            raise RewardModelError(f"cannot load the head in {weights_path}: {error}") from error
        if not all(math.isfinite(settings[key]) for key in ("mean", "std")) or not bool(
            torch.isfinite(weight).all()
        ):
            raise RewardModelError(f"{directory}: the head or its normalisation is not finite")
        model, tokenizer = load_backbone(settings["backbone"])
        hidden = int(model.get_input_embeddings().weight.shape[1])
        if weight.shape != (hidden,):
            raise RewardModelError(
                f"{weights_path} holds a head of shape {tuple(weight.shape)}; the backbone "
                f"{settings['backbone']!r} has hidden size {hidden}"
            )
        try:
            return cls(model, tokenizer, layer, weight, bias, **settings)
        except ValueError as error:
            raise RewardModelError(f"{config_path}: {error}") from error


def fit_linear_preference(differences: torch.Tensor, l2: float) -> torch.Tensor:
    """The weight ``w`` minimising ``mean(softplus(-d . w)) + l2 / 2 * |w|^2`` over the rows
    ``d`` of ``differences`` (chosen minus rejected features): Bradley-Terry with a linear
    score, no bias (it cancels in a difference). Convex: L-BFGS in float64 to convergence."""
    d = differences.double()
    weight = torch.zeros(d.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.softplus(-(d @ weight)).mean() + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach().float()


def fit_probe_reward(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair] = (),
    *,
    layer: int,
    backbone: str = "",
    max_length: int = 192,
    max_response_tokens: int = 96,
    l2_grid: Sequence[float] = L2_GRID,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[ProbeRewardModel, dict[str, Any]]:
    """Fit a probe's head on ``train_pairs``; report its pairwise accuracy on ``eval_pairs``.

    The features are standardised over the training responses; the L2 weight is the one of
    ``l2_grid`` with the best ``folds``-fold cross-validated pairwise accuracy (folds by
    prompt), and the head is then fitted on every training pair with it and folded back into
    the raw features' scale. The scores are normalised to mean 0, std 1 over the distinct
    training responses.

    Returns:
        The probe, and metrics: ``eval_accuracy``, ``cv_accuracy`` (per L2 weight),
        ``l2``, ``train_accuracy``, ``train_pairs``, ``eval_pairs``.
    """
    if len(train_pairs) < folds:
        raise ValueError(
            f"fitting a probe needs at least folds={folds} pairs, got {len(train_pairs)}"
        )
    probe = ProbeRewardModel(
        model, tokenizer, layer, torch.zeros(model.get_input_embeddings().weight.shape[1]),
        backbone=backbone, max_length=max_length, max_response_tokens=max_response_tokens,
        batch_size=batch_size,
    )  # fmt: skip
    texts = _distinct_texts([*train_pairs, *eval_pairs])
    features = _features_by_text(probe, texts, progress)
    train_texts = _distinct_texts(train_pairs)
    train_features = torch.stack([features[text] for text in train_texts])
    centre, scale = train_features.mean(0), train_features.std(0).clamp(min=1e-6)

    def differences(pairs: Sequence[PreferencePair]) -> torch.Tensor:
        chosen = torch.stack([features[(p.prompt, p.chosen)] for p in pairs])
        rejected = torch.stack([features[(p.prompt, p.rejected)] for p in pairs])
        return (chosen - rejected) / scale

    train_d = differences(train_pairs)
    fold_of = _folds_by_prompt(train_pairs, folds, seed)
    cv_accuracy = {}
    for l2 in l2_grid:
        correct = 0
        for fold in range(folds):
            held = fold_of == fold
            weight = fit_linear_preference(train_d[~held], l2)
            correct += int((train_d[held] @ weight > 0).sum())
        cv_accuracy[l2] = correct / len(train_pairs)
    best_l2 = max(l2_grid, key=lambda l2: (cv_accuracy[l2], l2))  # ties: the stronger prior
    standardised = fit_linear_preference(train_d, best_l2)
    probe.weight = standardised / scale
    probe.bias = -float(probe.weight @ centre)
    raw = train_features @ probe.weight + probe.bias
    probe.mean, probe.std = float(raw.mean()), float(raw.std()) or 1.0
    metrics: dict[str, Any] = {
        "l2": best_l2,
        "cv_accuracy": {str(l2): accuracy for l2, accuracy in cv_accuracy.items()},
        "train_accuracy": float((train_d @ standardised > 0).double().mean()),
        "eval_accuracy": (
            float((differences(eval_pairs) @ standardised > 0).double().mean())
            if eval_pairs
            else None
        ),
        "train_pairs": len(train_pairs),
        "eval_pairs": len(eval_pairs),
        "layer": layer,
        "backbone": backbone,
    }
    return probe, metrics


def _distinct_texts(pairs: Sequence[PreferencePair]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for pair in pairs:
        seen.setdefault((pair.prompt, pair.chosen), None)
        seen.setdefault((pair.prompt, pair.rejected), None)
    return list(seen)


def _features_by_text(
    probe: ProbeRewardModel, texts: list[tuple[str, str]], progress: bool
) -> dict[tuple[str, str], torch.Tensor]:
    # Longest first in a batch: less padding (the order of the results is restored by key).
    order = sorted(texts, key=lambda text: len(text[0]) + len(text[1]), reverse=True)
    features: dict[tuple[str, str], torch.Tensor] = {}
    batches = range(0, len(order), probe.batch_size)
    for start in tqdm(batches, desc="probe features", disable=not progress):
        batch = order[start : start + probe.batch_size]
        pooled = probe.features([p for p, _ in batch], [r for _, r in batch])
        features.update(zip(batch, pooled, strict=True))
    return features


def _folds_by_prompt(pairs: Sequence[PreferencePair], folds: int, seed: int) -> torch.Tensor:
    prompts = sorted({pair.prompt for pair in pairs})
    random.Random(seed).shuffle(prompts)
    fold_of_prompt = {prompt: index % folds for index, prompt in enumerate(prompts)}
    return torch.tensor([fold_of_prompt[pair.prompt] for pair in pairs])


__all__ = ["L2_GRID", "ProbeRewardModel", "fit_linear_preference", "fit_probe_reward"]
