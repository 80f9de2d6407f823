"""The probe reward model (a linear head on a frozen LM's hidden layer), the Harmless and
Dialogue tasks' gold."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlhf_env.data.preferences import PreferencePair
from rlhf_env.models import build_tiny_gpt2, build_tiny_llama
from rlhf_env.rewards.model import RewardModelError
from rlhf_env.rewards.probe import (
    PROBE_CONFIG,
    PROBE_WEIGHTS,
    ProbeRewardModel,
    fit_linear_preference,
    fit_probe_reward,
)


@pytest.fixture(scope="module")
def lm(tokenizer):
    return build_tiny_llama(tokenizer, seed=0)


def probe_of(lm, tokenizer, **settings) -> ProbeRewardModel:
    hidden = lm.get_input_embeddings().weight.shape[1]
    weight = torch.randn(hidden, generator=torch.Generator().manual_seed(0))
    return ProbeRewardModel(lm, tokenizer, 1, weight, **settings)


def test_features_are_the_layers_hidden_states_averaged_over_the_response(lm, tokenizer):
    """Each row of a padded batch equals the hand computation on its own unpadded ids: the
    output of block ``layer`` (``hidden_states[layer]``) averaged over the response's tokens."""
    probe = probe_of(lm, tokenizer)
    prompts = [
        "\n\nHuman: hi there\n\nAssistant:",
        "\n\nHuman: a much longer question?\n\nAssistant:",
    ]
    responses = [" Hello.", " It is a much longer answer than the first."]
    batched = probe.features(prompts, responses)
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.no_grad():
            hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[1][0]
        expected = hidden[len(prompt_ids) :].mean(0)
        torch.testing.assert_close(batched[row], expected, atol=1e-5, rtol=1e-4)


def test_the_prompt_loses_its_start_and_the_response_its_end(lm, tokenizer):
    """Over ``max_length``, only the prompt's first tokens are cut (the latest turns stay); past
    ``max_response_tokens``, only the response's last ones."""
    probe = probe_of(lm, tokenizer, max_length=20, max_response_tokens=8)  # 12 of prompt
    latest = " and then the last turn:"
    response = " fine words here"
    features = probe.features(
        ["an early turn that is cut away" + latest, "another early turn, cut as well" + latest,
         "an early turn that is cut away and then another turn:"],
        [response] * 3,
    )  # fmt: skip
    torch.testing.assert_close(features[0], features[1])
    assert not torch.allclose(features[0], features[2], atol=1e-4)
    cut = probe.features(["a prompt:"] * 2, [" eight token reply, then", " eight token reply, xyz"])
    assert len(tokenizer(" eight token reply, ")["input_ids"]) >= 8
    torch.testing.assert_close(cut[0], cut[1])


def test_fit_linear_preference_finds_the_direction_that_orders_the_pairs():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(16, generator=generator)
    differences = torch.randn(400, 16, generator=generator)
    differences *= torch.sign(differences @ truth).unsqueeze(1)  # every pair ordered by truth
    weight = fit_linear_preference(differences, l2=0.01)
    assert torch.nn.functional.cosine_similarity(weight, truth, dim=0) > 0.9
    assert (differences @ weight > 0).float().mean() > 0.97
    assert fit_linear_preference(differences, l2=10.0).norm() < weight.norm()  # L2 shrinks


def planted_pairs(count: int, seed: int) -> list[PreferencePair]:
    """Pairs whose chosen response says ``good`` where the rejected says ``bad``."""
    rng = random.Random(seed)
    words = ["film", "day", "idea", "meal", "plan", "song", "book", "trip"]
    pairs = []
    for index in range(count):
        noun = rng.choice(words)
        prompt = f"\n\nHuman: What about the {noun} number {index}?\n\nAssistant:"
        pairs.append(PreferencePair(prompt, f" A good {noun}.", f" A bad {noun}."))
    return pairs


def test_a_probe_fitted_on_planted_preferences_ranks_unseen_pairs(tokenizer):
    """A preference the features carry (one word) is learned from 80 pairs and holds on 40
    unseen prompts; the scores of the training responses are normalised to mean 0, std 1."""
    lm = build_tiny_gpt2(tokenizer, seed=0)
    train, held_out = planted_pairs(80, seed=0), planted_pairs(40, seed=1)
    probe, metrics = fit_probe_reward(lm, tokenizer, train, held_out, layer=2, folds=4)
    assert metrics["eval_accuracy"] > 0.9 and metrics["train_pairs"] == 80
    assert metrics["l2"] in {float(key) for key in metrics["cv_accuracy"]}
    assert max(metrics["cv_accuracy"].values()) == metrics["cv_accuracy"][str(metrics["l2"])]
    responses = [p.chosen for p in train] + [p.rejected for p in train]
    scores = torch.tensor(probe([p.prompt for p in train] * 2, responses))
    assert abs(float(scores.mean())) < 1e-3 and float(scores.std()) == pytest.approx(1.0, abs=1e-3)
    chosen, rejected = probe([held_out[0].prompt] * 2, [held_out[0].chosen, held_out[0].rejected])
    assert chosen > rejected


def test_a_probe_saves_and_loads_with_the_same_scores(lm, tokenizer, tmp_path):
    probe = probe_of(lm, tokenizer, mean=0.5, std=2.0, backbone="the-backbone")
    probe.save_pretrained(tmp_path)
    asked = []

    def load_backbone(name):
        asked.append(name)
        return lm, tokenizer

    loaded = ProbeRewardModel.from_pretrained(tmp_path, load_backbone)
    assert asked == ["the-backbone"]
    prompts, responses = ["\n\nHuman: hi\n\nAssistant:"] * 2, [" Hi.", " Go away."]
    assert loaded(prompts, responses) == pytest.approx(probe(prompts, responses), abs=1e-6)


def test_a_corrupt_or_mismatched_probe_is_refused_with_the_file_named(lm, tokenizer, tmp_path):
    probe_of(lm, tokenizer).save_pretrained(tmp_path)
    load = lambda name: (lm, tokenizer)  # noqa: E731
    config = json.loads((tmp_path / PROBE_CONFIG).read_text())
    (tmp_path / PROBE_CONFIG).write_text(json.dumps(config | {"std": float("nan")}))
    with pytest.raises(RewardModelError, match="not finite"):
        ProbeRewardModel.from_pretrained(tmp_path, load)
    (tmp_path / PROBE_CONFIG).write_text("{not json")
    with pytest.raises(RewardModelError, match=r"probe_config\.json is corrupt"):
        ProbeRewardModel.from_pretrained(tmp_path, load)
    (tmp_path / PROBE_CONFIG).write_text(json.dumps(config | {"layer": 99}))
    with pytest.raises(RewardModelError, match="layer must be in"):
        ProbeRewardModel.from_pretrained(tmp_path, load)
    (tmp_path / PROBE_CONFIG).write_text(json.dumps(config))
    wider = build_tiny_llama(tokenizer, seed=0, hidden_size=32, intermediate_size=64)
    with pytest.raises(RewardModelError, match="hidden size 32"):
        ProbeRewardModel.from_pretrained(tmp_path, lambda name: (wider, tokenizer))
    (tmp_path / PROBE_WEIGHTS).write_bytes(b"truncated")
    with pytest.raises(RewardModelError, match="cannot load the head"):
        ProbeRewardModel.from_pretrained(tmp_path, load)
    (tmp_path / PROBE_WEIGHTS).unlink()
    with pytest.raises(RewardModelError, match=r"probe\.safetensors is missing"):
        ProbeRewardModel.from_pretrained(tmp_path, load)


def test_bad_settings_are_refused(lm, tokenizer):
    with pytest.raises(ValueError, match="layer must be in"):
        ProbeRewardModel(lm, tokenizer, 0, torch.zeros(64))
    with pytest.raises(ValueError, match="max_response_tokens"):
        probe_of(lm, tokenizer, max_length=16, max_response_tokens=16)
    with pytest.raises(ValueError, match="at least folds=5 pairs"):
        fit_probe_reward(lm, tokenizer, planted_pairs(3, 0), layer=1)
