"""Tokenizers with chat templates for the dialogue tests: SmolLM2's real one (packaged in
``tests/data``), and tiny BPE tokenizers with a ChatML and a Llama-3-style template."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from rlhf_env.models.tiny import DEFAULT_CORPUS

SMOLLM2_TOKENIZER = Path(__file__).parent / "data" / "smollm2_tokenizer"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Meta's Llama 3 template (the content of each turn is trimmed).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

#: Llama 3's pre-tokenizer pattern: runs of newlines stay one piece whatever follows them.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    *DEFAULT_CORPUS,
    "Hello! How can I help you today?",
    "I would like a recipe for bread, please.",
    "Sure, here is a simple one.\n\nMix flour and water.",
    *["First.\n\n", "Second.\n\n"] * 4,  # so that "\n\n" becomes one token
]


def smollm2_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """SmolLM2-135M-Instruct's tokenizer, unpacked into ``directory``."""
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(SMOLLM2_TOKENIZER / name, directory / name)
    with gzip.open(SMOLLM2_TOKENIZER / "tokenizer.json.gz") as packed:
        (directory / "tokenizer.json").write_bytes(packed.read())
    return AutoTokenizer.from_pretrained(directory)


def tiny_chat_tokenizer(
    style: str, llama3_pretokenizer: bool | None = None
) -> PreTrainedTokenizerFast:
    """A tiny BPE tokenizer with ``style``'s special tokens and template: ``"chatml"`` or
    ``"llama3"``. ``llama3_pretokenizer`` (default: for the Llama 3 style) splits text as
    Llama 3 does; otherwise as GPT-2 does."""
    if style == "chatml":
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        eos, bos, template = "<|im_end|>", None, CHATML_TEMPLATE
    elif style == "llama3":
        special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]  # fmt: skip
        eos, bos, template = "<|eot_id|>", "<|begin_of_text|>", LLAMA3_TEMPLATE
    else:
        raise ValueError(f"unknown style {style!r}")
    if llama3_pretokenizer is None:
        llama3_pretokenizer = style == "llama3"
    tokenizer = Tokenizer(models.BPE())
    if llama3_pretokenizer:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=eos, bos_token=bos, pad_token=special[0]
    )
    wrapped.chat_template = template
    return wrapped


#: The chat tokenizers the dialogue tests run on.
CHAT_TOKENIZERS = ("smollm2", "chatml", "llama3")


def chat_models(name: str, folder: Path) -> tuple[PreTrainedTokenizerFast, Any, Any]:
    """``(tokenizer, policy, reference)`` for the dialogue tests: tokenizer ``name`` (SmolLM2's
    real one, copied into ``folder``, or a tiny one with a ChatML or Llama-3 template) and two
    tiny random Llamas of its vocabulary, the second frozen."""
    from rlhf_env.models import build_tiny_llama

    tokenizer = smollm2_tokenizer(folder) if name == "smollm2" else tiny_chat_tokenizer(name)
    policy = build_tiny_llama(tokenizer, seed=0)
    reference = build_tiny_llama(tokenizer, seed=1).requires_grad_(False)
    return tokenizer, policy, reference
