"""Language models: loading, devices and dtypes, the frozen reference, tiny test models."""

from rlhf_env.models.loading import (
    convert_gguf,
    ensure_pad_token,
    frozen_copy,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    pick_dtype,
    save_policy,
    split_gguf_path,
    vocab_size_of,
)
from rlhf_env.models.tiny import build_tiny_gpt2, build_tiny_llama, build_tiny_tokenizer

__all__ = [
    "build_tiny_gpt2",
    "build_tiny_llama",
    "build_tiny_tokenizer",
    "convert_gguf",
    "ensure_pad_token",
    "frozen_copy",
    "load_causal_lm",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "save_policy",
    "split_gguf_path",
    "vocab_size_of",
]
