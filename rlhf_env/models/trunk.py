"""Run the bottom blocks of a causal LM once and hand their output to other forwards.

Under ``frozen:N`` (:func:`rlhf_env.models.efficient.freeze_lower_layers`) the policy and the
reference hold the *same* embedding and bottom-block modules, so on the same input those
blocks compute the same hidden states; and in an update their output never changes, since
nothing below block ``N`` trains. This module lets a forward start from that output instead
of computing it again, without re-implementing any architecture's forward: it builds *views*
of a Hugging Face model, structural copies that share every module and parameter with it (no
weights copied, the user's model untouched) and differ only in their list of decoder blocks:

- :func:`recording_view`: the whole model, its block ``N - 1`` also leaving its output in a
  :class:`TrunkHandoff` (the engines' policy forward);
- :func:`replaying_view`: blocks ``0 .. N - 2`` skipped and block ``N - 1`` returning the
  handoff's hidden states, the upper blocks as they are (the engines' reference forward, the
  update's forward from a kept trunk);
- :func:`trunk_view`: the bottom ``N`` blocks alone, recorded, the upper ones skipped (the
  update's trunk pass; call it with one logit kept).

The model's own forward runs in every view (embeddings, rotary tables and masks are computed
as usual, a small cost next to the blocks), so positions, masks, sliding windows and
soft-capping stay the model's. A skipped block writes nothing to the cache: a replaying
forward's cache must answer for the bottom ``N`` layers without being written (see the
engines). :func:`shared_trunk_depth` detects the shared blocks; :func:`frozen_trunk_depth`
the frozen ones.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from rlhf_env.models.efficient import AdaptersDisabled, decoder_layers


class TrunkHandoff:
    """The hidden states ``(B, T, H)`` one forward's block ``N - 1`` left for the next
    forward to start from (``None`` between uses)."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None

    def take(self) -> torch.Tensor:
        """The hidden states left by the last recording forward.

        Raises:
            RuntimeError: no recording forward ran since the last :meth:`clear`.
        """
        if self.hidden is None:
            raise RuntimeError(
                "a replaying forward ran before the trunk's output was recorded: run the "
                "recording forward (or set TrunkHandoff.hidden) first"
            )
        return self.hidden

    def clear(self) -> None:
        """Forget the hidden states (frees their memory)."""
        self.hidden = None


class RecordOutput(torch.nn.Module):
    """A decoder block that also leaves its output in ``handoff``."""

    def __init__(self, block: torch.nn.Module, handoff: TrunkHandoff) -> None:
        super().__init__()
        self.block = block
        self.handoff = handoff

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The block's output, recorded."""
        output = self.block(*args, **kwargs)
        self.handoff.hidden = output
        return output


class SkipBlock(torch.nn.Module):
    """A decoder block not computed: its input passes through, nothing is cached."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``hidden_states`` unchanged."""
        return hidden_states


class ReplayOutput(torch.nn.Module):
    """Block ``N - 1`` of a replaying view: returns the recorded trunk output, computes
    nothing (the input, the embeddings passed through skipped blocks, is ignored)."""

    def __init__(self, handoff: TrunkHandoff) -> None:
        super().__init__()
        self.handoff = handoff

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The handoff's hidden states, which must have the input's shape."""
        hidden = self.handoff.take()
        if hidden.shape != hidden_states.shape:
            raise RuntimeError(
                f"the recorded trunk output is {tuple(hidden.shape)}, this forward's input "
                f"{tuple(hidden_states.shape)}: record and replay the same tokens"
            )
        return hidden


def frozen_trunk_depth(model: torch.nn.Module) -> int:
    """How many bottom blocks of ``model`` take no gradient, with the embeddings below them:
    ``N`` under ``frozen:N``, 0 when the input embeddings train, for full fine-tuning and for
    models whose blocks cannot be found (LoRA adapters in every block: 0 as well)."""
    if _is_wrapper(model):
        return 0
    try:
        layers = decoder_layers(model)
    except ValueError:
        return 0
    embeddings = model.get_input_embeddings()
    if embeddings is None or any(p.requires_grad for p in embeddings.parameters()):
        return 0
    depth = 0
    for block in layers:
        if any(p.requires_grad for p in block.parameters()):
            break
        depth += 1
    return depth


def shared_trunk_depth(policy: torch.nn.Module, reference: torch.nn.Module) -> int:
    """How many bottom blocks the two models share as the same module objects, below the same
    embeddings (``N`` for :func:`~rlhf_env.models.efficient.freeze_lower_layers` ``(model,
    N)``); 0 when they share none, when the reference is the policy (one forward already),
    for a peft model or its adapters-off view (the same blocks compute differently there) and
    for models whose blocks cannot be found."""
    if reference is policy or _is_wrapper(policy) or _is_wrapper(reference):
        return 0
    try:
        policy_layers, reference_layers = decoder_layers(policy), decoder_layers(reference)
    except ValueError:
        return 0
    if policy.config.to_dict() != reference.config.to_dict():
        return 0
    # Everything before block 0 must be the same: every embedding outside the blocks (token
    # and learned position embeddings; rotary tables follow from the equal configs).
    policy_embeddings = _embeddings_outside(policy, policy_layers)
    reference_embeddings = _embeddings_outside(reference, reference_layers)
    if not policy_embeddings or len(policy_embeddings) != len(reference_embeddings):
        return 0
    if any(a is not b for a, b in zip(policy_embeddings, reference_embeddings, strict=True)):
        return 0
    depth = 0
    for mine, theirs in zip(policy_layers, reference_layers, strict=False):
        if mine is not theirs:
            break
        depth += 1
    return depth


def recording_view(model: torch.nn.Module, depth: int, handoff: TrunkHandoff) -> torch.nn.Module:
    """``model`` with block ``depth - 1`` recording its output into ``handoff``."""
    layers = list(decoder_layers(model))
    _check_depth(depth, len(layers))
    layers[depth - 1] = RecordOutput(layers[depth - 1], handoff)
    return with_layers(model, layers)


def replaying_view(model: torch.nn.Module, depth: int, handoff: TrunkHandoff) -> torch.nn.Module:
    """``model`` starting from the trunk output in ``handoff``: blocks ``0 .. depth - 2``
    skipped, block ``depth - 1`` replaying, the blocks above computed."""
    layers: list[torch.nn.Module] = list(decoder_layers(model))
    _check_depth(depth, len(layers))
    layers[: depth - 1] = [SkipBlock() for _ in range(depth - 1)]
    layers[depth - 1] = ReplayOutput(handoff)
    return with_layers(model, layers)


def trunk_view(model: torch.nn.Module, depth: int, handoff: TrunkHandoff) -> torch.nn.Module:
    """``model``'s bottom ``depth`` blocks, block ``depth - 1`` recording into ``handoff``,
    the blocks above skipped (call it with ``logits_to_keep=1``: its logits mean nothing)."""
    layers: list[torch.nn.Module] = list(decoder_layers(model))
    _check_depth(depth, len(layers))
    layers[depth - 1] = RecordOutput(layers[depth - 1], handoff)
    layers[depth:] = [SkipBlock() for _ in range(len(layers) - depth)]
    return with_layers(model, layers)


def with_layers(model: torch.nn.Module, layers: list[torch.nn.Module]) -> torch.nn.Module:
    """A structural copy of ``model`` whose decoder block list is ``layers``: every module on
    the path to the list is copied shallowly (its own dict of children), every other module,
    parameter and buffer is ``model``'s own. ``model`` is not changed."""
    original = decoder_layers(model)
    path = next(name for name, module in model.named_modules() if module is original)
    view = _shallow_copy(model)
    parent = view
    names = path.split(".")
    for name in names[:-1]:
        child = _shallow_copy(parent._modules[name])
        parent._modules[name] = child
        parent = child
    parent._modules[names[-1]] = torch.nn.ModuleList(layers)
    return view


def _shallow_copy(module: torch.nn.Module) -> torch.nn.Module:
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def _check_depth(depth: int, count: int) -> None:
    if not 1 <= depth <= count:
        raise ValueError(f"a trunk depth must be in [1, {count}], got {depth}")


def _is_wrapper(model: torch.nn.Module) -> bool:
    return isinstance(model, AdaptersDisabled) or hasattr(model, "peft_config")


def _embeddings_outside(
    model: torch.nn.Module, layers: torch.nn.ModuleList
) -> list[torch.nn.Embedding]:
    inside = {id(module) for module in layers.modules()}
    return [
        module
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding) and id(module) not in inside
    ]


class SharedTrunk:
    """The forwards an engine runs for a policy and its reference: when they share their
    bottom ``depth`` blocks, ``policy`` computes them (recording their output) and
    ``reference`` starts from that output; otherwise the models themselves.

    Run ``policy`` then ``reference`` on the same tokens, then :meth:`done`.

    Args:
        policy, reference: the two models (the reference may be the policy itself).
        enabled: ``False`` computes the shared blocks in both forwards (as before sharing;
            for comparisons).
    """

    def __init__(
        self, policy: torch.nn.Module, reference: torch.nn.Module, enabled: bool = True
    ) -> None:
        self.depth = shared_trunk_depth(policy, reference) if enabled else 0
        self.handoff = TrunkHandoff()
        self.policy, self.reference = policy, reference
        if self.depth:
            self.policy = recording_view(policy, self.depth, self.handoff)
            self.reference = replaying_view(reference, self.depth, self.handoff)

    def done(self) -> None:
        """Forget the recorded output (after the reference's forward)."""
        self.handoff.clear()
