"""Tiny random-initialised language models and tokenizers, built offline in seconds.

For tests, examples and plumbing checks, never for results: the weights are random.

Example:
    >>> tokenizer = build_tiny_tokenizer()
    >>> model = build_tiny_gpt2(tokenizer)
    >>> model.config.vocab_size == len(tokenizer)
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

#: A ChatML template (SmolLM2's and Qwen's form, without a default system prompt), with the
#: special tokens it needs; ``build_tiny_tokenizer(chat_template=True)`` adds both.
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DEFAULT_CORPUS: tuple[str, ...] = (
    "This movie was a wonderful surprise from start to finish.",
    "The acting was terrible and the plot made no sense at all.",
    "I loved the music, the colours and the quiet ending.",
    "A dull, slow film that wastes a talented cast.",
    "One of the best stories I have seen in years, funny and warm.",
    "The director tries hard, but the script lets everyone down.",
    "If you enjoy thrillers, this one will keep you guessing.",
    "Honestly the worst two hours I have spent in a cinema.",
    "The characters feel real and the dialogue is sharp.",
    "It starts well, then falls apart in the second half.",
)


def build_tiny_tokenizer(
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 384,
    with_pad_token: bool = True,
    chat_template: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus``.

    Args:
        corpus: training texts.
        vocab_size: target vocabulary size (at least 256 byte tokens plus the special tokens).
        with_pad_token: add a dedicated pad token; without it the tokenizer has only an EOS.
        chat_template: add ChatML's special tokens and :data:`CHATML_TEMPLATE` (for dialogue).
    """
    special = [EOS_TOKEN, PAD_TOKEN] if with_pad_token else [EOS_TOKEN]
    if chat_template:
        special += CHATML_TOKENS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN if with_pad_token else None,
    )
    if chat_template:
        wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def _special_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int | None]:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_gpt2(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides: Any
) -> GPT2LMHeadModel:
    """A random-initialised GPT-2 sized to ``tokenizer`` (2 layers of width 64, 2 heads, 256
    positions), in eval mode, dropout off; ``overrides`` replace config fields (``n_embd=32``)."""
    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return build_tiny_causal_lm("gpt2", tokenizer, seed, **(no_dropout | overrides))


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides: Any
) -> LlamaForCausalLM:
    """A random-initialised Llama (RoPE, grouped-query attention) sized to ``tokenizer`` (2
    layers of width 64, 4 heads over 2 key/value heads); ``overrides`` replace config fields."""
    return build_tiny_causal_lm("llama", tokenizer, seed, **({"num_hidden_layers": 2} | overrides))


_DECODER = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256,
)  # fmt: skip

#: Tiny random configs of the architectures the engines are tested on, by ``model_type``.
#: Sliding windows are 5 tokens, so that short test contexts cross them.
TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, n_positions=256),
    "llama": _DECODER,
    "qwen2": {**_DECODER, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 2},
    "qwen3": {**_DECODER, "head_dim": 16},
    "mistral": {**_DECODER, "sliding_window": 5},
    "phi3": {**_DECODER, "num_key_value_heads": 4, "sliding_window": 5},
    "gemma2": {
        **_DECODER, "head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 16,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    },
    "gemma3_text": {
        **_DECODER, "head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 16,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    },
}  # fmt: skip


def build_tiny_causal_lm(
    architecture: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides: Any
) -> PreTrainedModel:
    """A random-initialised causal LM of ``architecture`` (a key of
    :data:`TINY_ARCHITECTURES`, e.g. ``"gemma3_text"``) sized to ``tokenizer``, in eval mode.

    ``overrides`` replace config fields (e.g. ``sliding_window=3``).
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(
            f"no tiny config for {architecture!r}; choose one of {sorted(TINY_ARCHITECTURES)}"
        )
    fields = {**TINY_ARCHITECTURES[architecture], **_special_ids(tokenizer), **overrides}
    config = AutoConfig.for_model(architecture, **fields)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
