"""Parameter-efficient policies and the references that come with them without a full copy.

- :func:`freeze_lower_layers`: train only the top layers; the reference shares the frozen
  embeddings and lower layers with the policy and copies only the top ("hydra" reference).
- :func:`add_lora`: LoRA adapters via ``peft``; the reference is the same model with its
  adapters disabled (:class:`AdaptersDisabled`), so no weights are copied at all.

Both return ``(policy, reference)`` to pass to the environments; :func:`apply_training_setup`
picks one by a short name (``"full"``, ``"frozen:N"``, ``"lora:R"``), as the CLI takes it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import torch

from rlhf_env.extras import require

#: The training setups by short name: ``full``, ``frozen:N`` or ``lora:R``.
TRAINING_SETUP = re.compile(r"^(full|frozen:\d+|lora:\d+)$")
TRAINING_SETUP_HELP = (
    "'full' (every weight), 'frozen:N' (bottom N blocks frozen, shared with the reference) or "
    "'lora:R' (LoRA adapters of rank R; the reference is the model with adapters off)"
)


def check_training_setup(setup: str) -> str:
    """``setup`` if it names a training setup, else a ``ValueError`` saying which do."""
    if not TRAINING_SETUP.match(setup):
        raise ValueError(f"training setup must be {TRAINING_SETUP_HELP}, got {setup!r}")
    return setup


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (``config.num_hidden_layers``
    long), e.g. ``transformer.h`` for GPT-2, ``model.layers`` for Llama."""
    count = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(
        f"cannot find the {count} decoder layers of {type(model).__name__}; freezing by layer "
        "needs a model whose blocks are one ModuleList"
    )


def freeze_lower_layers(
    model: torch.nn.Module, num_layers: int
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Freeze the embeddings and the bottom ``num_layers`` blocks of ``model`` (in place).

    Returns ``(model, reference)``. The reference is frozen and in eval mode; it *shares* the
    frozen modules with the policy (same tensors, no copy) and holds frozen copies of the rest
    (the upper blocks, the final norm, the output layer unless tied to the frozen embeddings).
    Memory saved: the frozen share of the weights.

    Raises:
        ValueError: ``num_layers`` is negative or above the number of blocks.
    """
    layers = decoder_layers(model)
    if not 0 <= num_layers <= len(layers):
        raise ValueError(
            f"num_layers must be in [0, {len(layers)}] for this {len(layers)}-layer model, "
            f"got {num_layers}"
        )
    for module in _bottom_modules(model, num_layers):
        module.requires_grad_(False)
    reference = copy_sharing_bottom(model, num_layers).eval()
    reference.requires_grad_(False)  # the shared modules are frozen in the policy as well
    return model, reference


def copy_sharing_bottom(model: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """A deep copy of ``model`` that shares its embeddings and bottom ``num_layers`` blocks
    (the same modules and tensors, no copy) and copies the rest: for models that read the
    same frozen bottom (the reference and a separate critic under ``frozen:N``)."""
    shared: dict[int, Any] = {}
    for module in _bottom_modules(model, num_layers):
        for sub in module.modules():
            shared[id(sub)] = sub
        for parameter in module.parameters():
            shared[id(parameter)] = parameter
        for buffer in module.buffers():
            shared[id(buffer)] = buffer
    return copy.deepcopy(model, memo=shared)


def _bottom_modules(model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module]:
    """The embeddings (those outside the blocks) and the bottom ``num_layers`` blocks."""
    layers = decoder_layers(model)
    bottom: list[torch.nn.Module] = [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding) and not _inside(module, layers)
    ]
    return bottom + list(layers[:num_layers])


def _inside(module: torch.nn.Module, container: torch.nn.Module) -> bool:
    return any(module is sub for sub in container.modules())


class AdaptersDisabled(torch.nn.Module):
    """A view of a ``peft`` model with its adapters switched off: the frozen base model.

    Forwards run the shared base weights inside ``peft_model.disable_adapter()``; nothing is
    copied. Use it as the environment's ``reference`` for a LoRA policy.
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's forward, adapters off."""
        with self.peft_model.disable_adapter():
            return self.peft_model(*args, **kwargs)

    def get_base_model(self) -> torch.nn.Module:
        """The underlying Hugging Face model (its forward signature is the one called)."""
        return self.peft_model.get_base_model()

    def get_output_embeddings(self) -> torch.nn.Module:
        """The base model's output layer."""
        return self.peft_model.get_output_embeddings()

    @property
    def config(self) -> Any:
        """The base model's config."""
        return self.peft_model.config

    @property
    def generation_config(self) -> Any:
        """The base model's generation config."""
        return getattr(self.get_base_model(), "generation_config", None)


def add_lora(
    model: torch.nn.Module,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str | None = None,
) -> tuple[torch.nn.Module, AdaptersDisabled]:
    """Wrap ``model`` with LoRA adapters (``peft``); only the adapters are trainable.

    Args:
        model: a Hugging Face causal LM.
        r: adapter rank.
        alpha: scaling numerator (the update is ``alpha / r * B A``).
        dropout: dropout on the adapter input (0 keeps rollouts and updates consistent).
        target_modules: module names to adapt; default ``"all-linear"`` (every linear layer
            but the output layer).

    Returns:
        ``(policy, reference)``: the ``peft`` model and :class:`AdaptersDisabled` over it.

    Raises:
        ImportError: ``peft`` is not installed.
    """
    peft = require("peft", "train", "LoRA (add_lora)")
    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1, got {r}")
    from transformers.pytorch_utils import Conv1D

    # GPT-2's Conv1D stores weights transposed; tell peft instead of letting it warn.
    transposed = any(isinstance(module, Conv1D) for module in model.modules())
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules)
        if target_modules is not None and not isinstance(target_modules, str)
        else (target_modules or "all-linear"),
        fan_in_fan_out=transposed,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    policy = peft.get_peft_model(model, config)
    return policy, AdaptersDisabled(policy)


def apply_training_setup(
    model: torch.nn.Module, setup: str
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """``(policy, reference)`` for a setup name: ``"full"`` (every weight trains; reference
    ``None``, for the env to make a frozen copy), ``"frozen:N"`` (:func:`freeze_lower_layers`)
    or ``"lora:R"`` (:func:`add_lora` with rank R and alpha 2R)."""
    kind, _, number = check_training_setup(setup).partition(":")
    if kind == "full":
        return model, None
    if kind == "frozen":
        return freeze_lower_layers(model, int(number))
    return add_lora(model, r=int(number), alpha=2 * int(number))
