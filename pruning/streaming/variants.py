"""Pruning variants as per-layer actions, applied to one materialised layer at a time.

In memory, a variant changes the whole model (`pruning.apply.pruned`, `pruning.width.
width_pruned`). Streaming only ever has one layer, so a variant is described by what it
does at each layer:

- `skip`: the layer is removed (`layer` pruning); the hidden state passes unchanged.
- `attn=False`: the attention sub-block is the identity (`attn` pruning), by the same
  swap for `IdentityAttention` that `pruning.apply` makes, so the layer's own code runs.
- `keep`: the MLP keeps only these neurons (width pruning), by the same slicing as
  `pruning.width`, applied to the live layer.

A spec is `(granularity, blocks)` with granularity "layer" or "attn", `("width", keep)`
with one index tensor per layer, or a mapping combining them:
`{"layer": [...], "attn": [...], "width": keep}`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from analysis.architectures import Architecture, get_submodule
from analysis.errors import EntroDropError
from analysis.taylor import intermediate_size
from pruning.apply import check_blocks, drop_attention, undo_all
from pruning.width import Undo, apply_changes, checked_keep, mlp_slice_changes, undo_changes

SPEC_KINDS = ("layer", "attn", "width")


class VariantSpecError(EntroDropError):
    """A variant spec cannot be understood; the message says what to pass instead."""


@dataclass(frozen=True)
class LayerAction:
    """What a variant does at one decoder layer. Hashable: equal actions on equal inputs
    give equal outputs, which is what lets variants share hidden states."""

    skip: bool = False
    attn: bool = True
    keep: bytes | None = None
    """The kept MLP neurons (sorted int64 indices, as bytes), or None for the full MLP."""

    def kept(self) -> torch.Tensor | None:
        if self.keep is None:
            return None
        return torch.frombuffer(bytearray(self.keep), dtype=torch.int64)


RUN = LayerAction()


def layer_actions(spec, num_layers: int, mlp_sizes: Sequence[int]) -> tuple[LayerAction, ...]:
    """One `LayerAction` per layer for a spec (see the module docstring); blocks and kept
    neurons are checked as the in-memory pruning checks them."""
    parts = _parts(spec)
    skip = set(check_blocks(parts.get("layer", ()), num_layers)) if "layer" in parts else set()
    no_attn = set(check_blocks(parts.get("attn", ()), num_layers)) if "attn" in parts else set()
    both = sorted(skip & no_attn)
    if both:
        raise VariantSpecError(
            f"blocks {both} are listed for both 'layer' and 'attn' pruning; a removed layer "
            "has no attention to drop, so list each block under one granularity")
    keep: list[torch.Tensor | None] = [None] * num_layers
    if "width" in parts:
        keep = list(checked_keep(list(parts["width"]), list(mlp_sizes)))
    return tuple(
        LayerAction(skip=i in skip, attn=i not in no_attn,
                    keep=None if keep[i] is None or i in skip else keep[i].numpy().tobytes())
        for i in range(num_layers))


def _parts(spec) -> dict:
    if isinstance(spec, Mapping):
        parts = dict(spec)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        parts = {spec[0]: spec[1]}
    else:
        raise VariantSpecError(
            f"a variant is (granularity, blocks), ('width', keep) or a dict of those; got "
            f"{type(spec).__name__}. Example: ('attn', [5, 7]) or {{'layer': [3], 'width': keep}}")
    unknown = sorted(set(parts) - set(SPEC_KINDS))
    if unknown:
        raise VariantSpecError(
            f"unknown pruning kind(s) {unknown} in a variant; use {', '.join(SPEC_KINDS)}")
    return parts


def mlp_sizes(arch: Architecture, layers: nn.ModuleList) -> list[int]:
    """Each layer's intermediate size, from the (meta) down projection's shape."""
    return [intermediate_size(get_submodule(layer, arch.mlp.output), arch.mlp) for layer in layers]


@contextmanager
def acting(arch: Architecture, layers: nn.ModuleList, index: int,
           action: LayerAction) -> Iterator[nn.Module]:
    """Layer `index`, changed as `action` says for the duration (its weights must be
    loaded). `skip` is the caller's business: a removed layer is not run at all."""
    with ExitStack() as stack:
        if not action.attn:
            undo: list = []
            stack.callback(undo_all, undo)
            drop_attention(arch, layers, (index,), undo)
        kept = action.kept()
        if kept is not None:
            stack.enter_context(width_sliced(arch, layers[index], kept))
        yield layers[index]


@contextmanager
def width_sliced(arch: Architecture, layer: nn.Module, keep: torch.Tensor) -> Iterator[nn.Module]:
    """The layer's MLP cut to the neurons `keep` (sorted [k] int64) for the duration, by
    the in-memory width pruning's own per-layer changes (`pruning.width.mlp_slice_changes`);
    the originals come back on exit."""
    changes = mlp_slice_changes(layer, arch.mlp, keep)
    undo: Undo = []
    try:
        apply_changes(changes, undo)
        yield layer
    finally:
        undo_changes(undo)
