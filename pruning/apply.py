"""Block pruning of a loaded model, in place and reversibly.

`layer` removes decoder layers and renumbers everything that is indexed by layer (module
`layer_idx` attributes, `num_hidden_layers`, `layer_types` and other per-layer config
lists, Qwen2's `max_window_layers`), so that the KV cache built from the config matches the
remaining layers. `attn` swaps the attention sub-block of a layer for `IdentityAttention`;
the layer keeps its index and its MLP.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from analysis.architectures import Architecture, get_architecture
from analysis.errors import EntroDropError
from analysis.settings import GRANULARITIES, Granularity
from pruning.modeling_template import IdentityAttention

_STATE_ATTR = "_entrodrop_pruning"
# Config fields holding one entry per layer in some families, besides the table's own list.
_KNOWN_PER_LAYER_FIELDS = ("layer_types", "mlp_layer_types", "no_rope_layers")


class PruningError(EntroDropError):
    """Pruning was asked for something impossible; the message says what and what to do."""


class BlockSelectionError(PruningError):
    """The blocks to prune are out of range, repeated, not integers, or all of them."""


class PruningStateError(PruningError):
    """The model already has pruning applied, or its config cannot be renumbered."""


def check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise PruningError(
            f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}"
        )
    return granularity  # type: ignore[return-value]


def check_blocks(blocks: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """The blocks as a sorted tuple of ints, or `BlockSelectionError` naming the problem."""
    try:
        if isinstance(blocks, (str, bytes)):
            raise TypeError
        items = list(blocks)
        if any(isinstance(b, bool) for b in items):
            raise TypeError
        values = [operator.index(b) for b in items]
    except TypeError:
        raise BlockSelectionError(
            f"blocks must be a list of whole layer indices; got {blocks!r}"
        ) from None
    bad = [b for b in values if not 0 <= b < num_layers]
    if bad:
        raise BlockSelectionError(
            f"blocks {bad} are out of range: this model has {num_layers} layers, "
            f"indexed 0..{num_layers - 1}"
        )
    repeated = sorted({b for b in values if values.count(b) > 1})
    if repeated:
        raise BlockSelectionError(f"blocks {repeated} are listed more than once; list each once")
    if values and len(values) >= num_layers:
        raise BlockSelectionError(
            f"cannot prune all {num_layers} blocks; leave at least one in place"
        )
    return tuple(sorted(values))


def active_pruning(model: nn.Module) -> tuple[Granularity, tuple[int, ...]] | None:
    """(granularity, blocks) of the pruning currently applied to `model`, if any."""
    return getattr(model, _STATE_ATTR, None)


def layer_config_changes(config: Any, kept: Sequence[int], num_layers: int,
                         arch: Architecture | None = None) -> dict[str, Any]:
    """New values of the config fields indexed by layer, once only layers `kept` remain.

    Per-layer lists of length L keep the entries of the kept layers. Qwen2's
    `max_window_layers` is a threshold (layers at or above it slide): it becomes the number
    of kept layers below it, which keeps every kept layer's type.
    """
    if getattr(config, "is_heterogeneous", False):
        raise PruningStateError(
            "this model's config has per-layer overrides (per_layer_config), which layer "
            "pruning does not renumber; prune attention blocks instead"
        )
    changes: dict[str, Any] = {"num_hidden_layers": len(kept)}
    names = set(_KNOWN_PER_LAYER_FIELDS) | set(arch.layer_config_lists if arch else ())
    names |= {key for key in config.to_dict() if "layer" in key}
    for name in sorted(names):
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and len(value) == num_layers:
            changes[name] = type(value)(value[i] for i in kept)
    threshold = getattr(config, "max_window_layers", None)
    if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold < num_layers:
        changes["max_window_layers"] = sum(1 for i in kept if i < threshold)
    return changes


def apply_pruning(model: nn.Module, granularity: Granularity,
                  blocks: Sequence[int]) -> Callable[[], None]:
    """Prune `blocks` of `model` in place; returns `restore()`, which undoes it exactly
    (same module objects, config values and `layer_idx` values) and may be called twice."""
    granularity = check_granularity(granularity)
    arch = get_architecture(model)
    if active_pruning(model) is not None:
        raise PruningStateError(
            f"the model already has {active_pruning(model)} pruned; restore it before pruning again"
        )
    layers = arch.layers(model)
    drop = check_blocks(blocks, len(layers))
    undo: list[Callable[[], None]] = []
    try:
        if granularity == "layer":
            _remove_layers(model, arch, layers, drop, undo)
        else:
            drop_attention(arch, layers, drop, undo)
        setattr(model, _STATE_ATTR, (granularity, drop))
        undo.append(lambda: delattr(model, _STATE_ATTR))
    except BaseException:
        undo_all(undo)
        raise

    done = False

    def restore() -> None:
        nonlocal done
        if not done:
            done = True
            undo_all(undo)

    return restore


@contextmanager
def pruned(model: nn.Module, granularity: Granularity,
           blocks: Sequence[int]) -> Iterator[nn.Module]:
    """Prune `blocks` of `model` in place for the duration of the block, even on error."""
    restore = apply_pruning(model, granularity, blocks)
    try:
        yield model
    finally:
        restore()


def _remove_layers(model: nn.Module, arch: Architecture, layers: nn.ModuleList,
                   drop: tuple[int, ...], undo: list[Callable[[], None]]) -> None:
    original = list(layers)
    kept = [i for i in range(len(original)) if i not in drop]
    config = model.config.get_text_config(decoder=True)
    changes = layer_config_changes(config, kept, len(original), arch)
    new_index = {old: new for new, old in enumerate(kept)}

    undo.append(lambda: _set_modules(layers, original))
    _set_modules(layers, [original[i] for i in kept])

    for name, value in changes.items():
        old_value = getattr(config, name)
        undo.append(lambda name=name, old_value=old_value: setattr(config, name, old_value))
        setattr(config, name, value)

    # The attention modules give the cache their `layer_idx`; Gemma 3's layers keep one too.
    for old in kept:
        for module in original[old].modules():
            idx = getattr(module, "layer_idx", None)
            if isinstance(idx, int) and idx in new_index:
                undo.append(lambda module=module, idx=idx: setattr(module, "layer_idx", idx))
                module.layer_idx = new_index[idx]


def drop_attention(arch: Architecture, layers: nn.ModuleList, drop: tuple[int, ...],
                   undo: list[Callable[[], None]]) -> None:
    """Swap the attention of layers `drop` for `IdentityAttention`, recording the way back."""
    for i in drop:
        layer = layers[i]
        original = arch.attention(layer)
        layer_idx = getattr(original, "layer_idx", None)
        stand_in = IdentityAttention(i if layer_idx is None else layer_idx)
        undo.append(lambda layer=layer, original=original: setattr(layer, arch.attn_name, original))
        setattr(layer, arch.attn_name, stand_in)


def _set_modules(module_list: nn.ModuleList, modules: list[nn.Module]) -> None:
    module_list._modules.clear()
    for i, module in enumerate(modules):
        module_list.add_module(str(i), module)


def undo_all(undo: list[Callable[[], None]]) -> None:
    """Put back what `drop_attention` and layer removal recorded in `undo`, latest first."""
    for step in reversed(undo):
        step()
    undo.clear()
