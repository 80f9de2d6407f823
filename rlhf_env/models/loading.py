"""Load causal LMs and tokenizers from a hub name, a local folder or a GGUF file; devices, dtypes,
pad tokens and the frozen reference."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.distributed import barrier, current_context
from rlhf_env.extras import require


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def split_gguf_path(name_or_path: str | Path) -> tuple[str, str | None]:
    """``(folder, gguf_file)`` for a path to a ``.gguf`` file, else ``(name_or_path, None)``."""
    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    return str(name_or_path), None


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token its EOS token as pad token (in place); return it.

    Raises:
        ValueError: the tokenizer has neither a pad nor an EOS token.
    """
    if tokenizer.pad_token_id is not None:
        return tokenizer
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has neither a pad token nor an EOS token; "
            "set one, e.g. tokenizer.add_special_tokens({'eos_token': '</s>'}), and resize the "
            "model's embeddings with model.resize_token_embeddings(len(tokenizer))"
        )
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(
    name_or_path: str | Path, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load a tokenizer by hub name, local folder or ``.gguf`` file, with a pad token ensured."""
    folder, gguf_file = split_gguf_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    return ensure_pad_token(tokenizer)


def load_causal_lm(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """Load a causal LM by hub name, local folder or ``.gguf`` file, in eval mode.

    Args:
        name_or_path: hub name, folder with ``config.json`` and weights, a ``.gguf`` file
            (dequantised on load; needs the ``gguf`` package), or a folder of LoRA adapters
            saved by ``peft`` (its base model is loaded and the adapters merged into it).
        device: where to put it; default CUDA when available, else CPU.
        dtype: default bfloat16 on CUDA that supports it, float32 otherwise.
        trust_remote_code: run model code shipped with the checkpoint. Off unless you trust it.
        allow_pickle: also accept pickled ``.bin`` weights; by default only safetensors load.
    """
    target = pick_device(device)
    dtype = dtype or pick_dtype(target)
    if not allow_pickle:
        refuse_pickled_weights(name_or_path)
    if (Path(name_or_path) / "adapter_config.json").is_file():
        return _load_adapter_folder(
            Path(name_or_path), target, dtype, trust_remote_code, allow_pickle
        )
    folder, gguf_file = split_gguf_path(name_or_path)
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        # GGUF tensors are dequantised to float32 first, then cast.
        kwargs.update(gguf_file=gguf_file, dtype=torch.float32)
    else:
        kwargs.update(dtype=dtype, use_safetensors=None if allow_pickle else True)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (SafetensorError, OSError, ValueError) as error:
        corrupt = corrupt_safetensors(folder)
        if corrupt is None:
            raise
        raise ValueError(
            f"{corrupt} is truncated or corrupt ({error}); save or copy the model again"
        ) from error
    return model.to(device=target, dtype=dtype).eval()


def corrupt_safetensors(folder: str | Path) -> Path | None:
    """The first ``*.safetensors`` file of the local ``folder`` whose header does not read
    (truncated, or not safetensors at all), or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError, ValueError):
            return file
    return None


def save_policy(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """Save a (trained) policy with its tokenizer as safetensors, for :func:`load_causal_lm`;
    a peft policy saves its adapters, which ``load_causal_lm`` merges back on load."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return Path(folder)


#: Weight files that unpickle (and so may run code) on load.
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def refuse_pickled_weights(name_or_path: str | Path) -> None:
    """Raise if the local folder ``name_or_path`` holds pickled weights and no safetensors.

    Raises:
        ValueError: naming the file, and the two ways on (convert it, or ``allow_pickle``).
    """
    folder = Path(name_or_path)
    if not folder.is_dir() or any((folder / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickled = [name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
    if pickled:
        raise ValueError(
            f"{folder / pickled[0]} holds pickled weights, which can run code when loaded, and "
            f"{folder} has no safetensors file: convert it to safetensors (model.save_pretrained("
            "folder, safe_serialization=True)), or pass allow_pickle=True if you trust the file"
        )


def _load_adapter_folder(
    folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> PreTrainedModel:
    """The base model named in a peft adapter folder, with the adapters merged in."""
    peft = require("peft", "train", f"{folder} holds LoRA adapters; loading them")
    config = peft.PeftConfig.from_pretrained(folder)
    base = load_causal_lm(
        config.base_model_name_or_path,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    merged = peft.PeftModel.from_pretrained(base, folder).merge_and_unload()
    return merged.eval()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a ``.gguf`` checkpoint once into a safetensors folder (model and tokenizer).

    Loading a GGUF file dequantises it on every load (SmolLM2-135M: about 13 s and 3.5 GB peak);
    the converted folder loads in about a second. An existing conversion in ``out_dir`` is
    reused. The write is atomic: a crash leaves no half-written folder, and processes
    converting at once leave one complete folder. Under ``torch.distributed``, rank 0 converts
    while the others wait (``out_dir`` must then be on a filesystem every node sees).

    Returns:
        ``out_dir``, loadable by :func:`load_causal_lm` and :func:`load_tokenizer`.
    """
    out = Path(out_dir)
    context = current_context()
    if not context.enabled:
        return _convert_gguf_once(gguf_path, out)
    if context.is_main:
        _convert_gguf_once(gguf_path, out)
    barrier()
    if not _is_converted(out):
        raise FileNotFoundError(
            f"rank 0 converted {gguf_path} into {out}, which this node does not see: put "
            "RLHF_ENV_CACHE on a shared filesystem, or convert once on every node first"
        )
    return out


def _is_converted(out: Path) -> bool:
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def _convert_gguf_once(gguf_path: str | Path, out: Path) -> Path:
    if _is_converted(out):
        return out
    folder, gguf_file = split_gguf_path(gguf_path)
    if gguf_file is None:
        raise ValueError(f"{gguf_path} is not a .gguf file")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # save_pretrained refuses models that still carry their GGUF quantisation config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(out)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_converted(out):
            raise
    return out


def vocab_size_of(model: torch.nn.Module) -> int:
    """Number of rows of the model's output layer: the size of its action space."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and hasattr(output, "weight"):
        return int(output.weight.shape[0])
    return int(model.config.vocab_size)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter frozen: the default reference."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference
