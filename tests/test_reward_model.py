"""The Bradley-Terry reward model: loss, training, accuracy, normalisation, save/load, errors."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from helpers import SUBJECTS, preference_margins, run_cli, separable_pairs
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_env.data.preferences import PreferencePair, write_jsonl_pairs
from rlhf_env.rewards.model import RewardModel, RewardModelError
from rlhf_env.rewards.training import (
    RewardTrainingConfig,
    _epoch_batches,
    bradley_terry_loss,
    pairwise_accuracy,
    split_pairs,
    train_reward_model,
)


def test_bradley_terry_loss_matches_the_formula():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected)
    with_margin = bradley_terry_loss(chosen, rejected, margin=0.5).item()
    assert with_margin == pytest.approx(
        (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.5))) / 2
    )
    centered = bradley_terry_loss(chosen, rejected, center_coef=0.1).item()
    assert centered == pytest.approx(expected + 0.1 * (9 + 1) / 2)


def test_training_lowers_the_loss_and_separates_a_trivial_set(backbone_dir):
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu")
    config = RewardTrainingConfig(
        epochs=6, batch_size=8, learning_rate=3e-3, eval_fraction=0.25, seed=0
    )
    metrics = train_reward_model(reward_model, separable_pairs(), config, progress=False)
    first, last = metrics["loss"][:3], metrics["loss"][-3:]
    assert sum(last) / 3 < 0.5 * sum(first) / 3
    assert metrics["eval_pairs"] == 16  # 2 of the 6 prompts, 8 pairs each
    assert metrics["eval_accuracy"][-1] == 1.0
    assert pairwise_accuracy(reward_model, separable_pairs()) == 1.0
    # Normalised on the distinct training responses (each once, though in several pairs).
    train, _ = split_pairs(separable_pairs(), config.eval_fraction, config.seed)
    distinct = dict.fromkeys([(p.prompt, p.chosen) for p in train] + [(p.prompt, p.rejected)
                                                                      for p in train])  # fmt: skip
    scores = torch.tensor(reward_model([t[0] for t in distinct], [t[1] for t in distinct]))
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-3)


def test_normalisation_save_and_load(backbone_dir, tmp_path):
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu")
    pairs = separable_pairs(12)
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    reward_model.normalize(prompts, responses)
    scores = torch.tensor(reward_model(prompts, responses))
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-4)

    saved = reward_model.save_pretrained(tmp_path / "rm")
    assert (saved / "model.safetensors").is_file()
    loaded = RewardModel.from_pretrained(saved, device="cpu")
    assert loaded(prompts, responses) == reward_model(prompts, responses)
    assert (loaded.mean, loaded.std) == (reward_model.mean, reward_model.std)


def test_response_only_reward_model_ignores_the_prompt_and_keeps_the_setting(
    backbone_dir, tmp_path
):
    both = RewardModel.from_backbone(backbone_dir, device="cpu")
    alone = RewardModel.from_backbone(backbone_dir, device="cpu", include_prompt=False)
    responses = [" was great.", " was great."]
    prompts = ["The film", "The music was awful and the ending"]
    scores = alone(prompts, responses)
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)  # the prompt is not read
    assert both(prompts, responses)[0] != both(prompts, responses)[1]
    assert (
        alone.encode(prompts, responses)["input_ids"].shape[1]
        < (both.encode(prompts, responses)["input_ids"].shape[1])
    )
    loaded = RewardModel.from_pretrained(alone.save_pretrained(tmp_path / "rm"), device="cpu")
    assert loaded.include_prompt is False and loaded(prompts, responses) == scores


@pytest.mark.parametrize("pooling", ["head", "sum"])
def test_empty_responses_score_without_error(backbone_dir, pooling):
    """A response-only reward model on responses that are all empty (the policy ended with EOS
    at once; GPT-2's tokenizer adds no special token): one finite score each."""
    model = RewardModel.from_backbone(
        backbone_dir, device="cpu", include_prompt=False, pooling=pooling
    )
    scores = model(["The film", "A plot"], ["", ""])
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert len(model(["The film", "A plot"], ["", " good"])) == 2


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_token_pooled_reward_model_trains_and_round_trips(backbone_dir, tmp_path, pooling):
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu", pooling=pooling)
    config = RewardTrainingConfig(epochs=6, batch_size=8, learning_rate=3e-3, eval_fraction=0.25)
    metrics = train_reward_model(reward_model, separable_pairs(), config, progress=False)
    assert metrics["eval_accuracy"][-1] == 1.0
    pairs = separable_pairs(6)
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    # The score is the pooled per-token scores of the backbone's token-classification head.
    batch = reward_model.encode(prompts, responses)
    with torch.no_grad():
        per_token = reward_model.model(**batch).logits[..., 0]  # (B, T)
    mask = batch["attention_mask"].float()
    pooled = (per_token * mask).sum(1)
    if pooling == "mean":
        pooled = pooled / mask.sum(1)
    torch.testing.assert_close(reward_model.raw_scores(prompts, responses), pooled)
    loaded = RewardModel.from_pretrained(reward_model.save_pretrained(tmp_path / "rm"))
    assert loaded.pooling == pooling
    assert loaded(prompts, responses) == pytest.approx(reward_model(prompts, responses), abs=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModel.from_backbone(backbone_dir, pooling="max")


def test_reward_model_plugs_into_the_env(backbone_dir):
    from rlhf_env import TextGenerationEnv
    from rlhf_env.models import build_tiny_gpt2

    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu")
    env = TextGenerationEnv(
        policy=build_tiny_gpt2(reward_model.tokenizer), tokenizer=reward_model.tokenizer,
        reward_fn=reward_model, prompts=SUBJECTS, max_new_tokens=3,
    )  # fmt: skip
    _, reset_info = env.reset(seed=0)
    for _ in range(3):
        *_, info = env.step(40)
    expected = reward_model([reset_info["prompt"]], [info["response"]])[0]
    assert info["score"] == pytest.approx(expected)


def test_corrupt_and_incomplete_checkpoints_name_the_file(backbone_dir, tmp_path):
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu")
    saved = reward_model.save_pretrained(tmp_path / "rm")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(RewardModelError, match=r"model\.safetensors"):
        RewardModel.from_pretrained(saved)
    (saved / "reward_config.json").write_text("{not json")
    with pytest.raises(RewardModelError, match=r"reward_config\.json is corrupt"):
        RewardModel.from_pretrained(saved)
    with pytest.raises(RewardModelError, match=r"reward_config\.json is missing"):
        RewardModel.from_pretrained(tmp_path)


def test_backbone_without_a_tokenizer_is_rejected(tmp_path):
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(RewardModelError, match="no usable tokenizer"):
        RewardModel.from_backbone(tmp_path)


def test_held_out_split_is_by_prompt():
    pairs = separable_pairs(60)
    train, held_out = split_pairs(pairs, eval_fraction=0.3, seed=3)
    assert len(train) + len(held_out) == 60 and held_out
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert split_pairs(pairs, eval_fraction=0.3, seed=3) == (train, held_out)
    with pytest.raises(ValueError, match="too few"):
        split_pairs(pairs[:1], eval_fraction=0.5, seed=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("learning_rate", 0.0), ("eval_fraction", 1.0), ("margin", -1.0)],
)
def test_training_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        RewardTrainingConfig(**{field: value})


def test_cli_train_rm_writes_model_and_metrics(backbone_dir, tmp_path):
    pairs = write_jsonl_pairs(separable_pairs(24), tmp_path / "pairs.jsonl")
    out = tmp_path / "rm"
    status, stdout, stderr = run_cli(
        "train-rm", "--pairs", str(pairs), "--backbone", str(backbone_dir), "--out", str(out),
        "--epochs", "2", "--batch-size", "8", "--learning-rate", "0.003",
        "--eval-fraction", "0.25",
    )  # fmt: skip
    assert status == 0, stderr[-2000:]
    assert "held-out pairwise accuracy" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_pairs"] == 8 and len(metrics["loss"]) == 2 * 2  # 16 train pairs
    assert min(preference_margins(RewardModel.from_pretrained(out))) > 0.1


def test_cli_train_rm_reports_bad_pairs_files(tmp_path, backbone_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    status, _, stderr = run_cli(
        "train-rm", "--pairs", str(empty), "--backbone", str(backbone_dir),
        "--out", str(tmp_path / "rm"),
    )  # fmt: skip
    assert status == 1 and "empty.jsonl holds no preference records" in stderr


def test_grouped_steps_hold_whole_prompts_and_score_each_text_once(backbone_dir, monkeypatch):
    pairs = separable_pairs(48)  # 6 prompts, 8 pairs each
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu")
    steps = []
    forward = reward_model.raw_forward

    def recording_forward(prompts, responses):
        steps.append(list(zip(prompts, responses, strict=True)))
        return forward(prompts, responses)

    monkeypatch.setattr(reward_model, "raw_forward", recording_forward)
    config = RewardTrainingConfig(epochs=1, batch_size=16, eval_fraction=0, normalize=False)
    metrics = train_reward_model(reward_model, pairs, config, progress=False)
    assert len(steps) == len(metrics["loss"]) == 3  # two whole prompts (16 pairs) per step
    for texts in steps:
        assert len(texts) == len(set(texts)) == 4  # each distinct response scored once
    prompts = [prompt for texts in steps for prompt in {p for p, _ in texts}]
    assert sorted(prompts) == sorted({pair.prompt for pair in pairs})  # no prompt split

    steps.clear()
    ungrouped = RewardTrainingConfig(epochs=1, batch_size=10, eval_fraction=0, normalize=False,
                                     group_by_prompt=False)  # fmt: skip
    train_reward_model(reward_model, pairs, ungrouped, progress=False)
    assert len(steps) == 5  # ceil(48 / 10) shuffled chunks


@pytest.mark.parametrize("batch_size", [5, 10, 16])
def test_a_step_never_holds_more_pairs_than_batch_size(batch_size):
    """Grouped by prompt, a step takes whole prompts while they fit and splits a prompt with
    more pairs than a step holds (1,200 pairs of one prompt once made a single 24 GiB step)."""
    one_prompt = [PreferencePair("The film", f" was great {i}.", f" was awful {i}.")
                  for i in range(1200)]  # fmt: skip
    mixed = one_prompt[:37] + separable_pairs(48)
    config = RewardTrainingConfig(batch_size=batch_size)
    for pairs in (one_prompt, mixed):
        steps = _epoch_batches(pairs, config, batch_size, random.Random(0))
        assert max(map(len, steps)) <= batch_size
        assert sorted(map(id, (p for step in steps for p in step))) == sorted(map(id, pairs))
    steps = _epoch_batches(separable_pairs(48), config, batch_size, random.Random(0))
    if batch_size >= 8:  # a prompt's 8 pairs fit a step: they stay together
        assert all(len({p.prompt for p in step}) * 8 == len(step) for step in steps)


def test_pairs_of_one_prompt_are_split_by_pair_with_a_warning():
    pairs = [PreferencePair("The film", f" was great {i}.", f" was awful {i}.")
             for i in range(20)]  # fmt: skip
    with pytest.warns(UserWarning, match="1 distinct prompt.*holding out 2 of the 20 pairs"):
        train, held_out = split_pairs(pairs, eval_fraction=0.1, seed=0)
    assert (
        len(train) == 18 and len(held_out) == 2 and not set(map(id, train)) & set(map(id, held_out))
    )
    with pytest.raises(ValueError, match="set eval_fraction to 0"):
        split_pairs(pairs[:1], eval_fraction=0.1, seed=0)
