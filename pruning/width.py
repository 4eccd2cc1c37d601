"""Width pruning: keep the most important MLP neurons of every layer.

The kept neurons stay in their original order. Their rows of gate/up (or fc1, c_fc, the
two halves of Phi-3's fused gate_up) and their columns of the down projection are kept,
and the config's intermediate size is set, so the result is a standard checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from analysis.architectures import MLPLayout, get_architecture, get_submodule
from analysis.errors import EntroDropError
from analysis.paths import tensor_bytes
from analysis.taylor import NeuronScores, intermediate_size, layer_mlp, mlp_modules
from pruning.apply import active_pruning
from pruning.checkpoint import provenance, save_clean_checkpoint
from pruning.export_record import json_ready, width_model_card, write_manifest
from pruning.export_target import MANIFEST_NAME as MANIFEST_NAME  # users import it from here
from pruning.export_target import staged_output_dir

KeepMode = Literal["per_layer", "uniform"]
# Set on a model while its MLPs are width-pruned in memory (the kept width).
_STATE_ATTR = "_entrodrop_width"
Change = tuple[nn.Module, str, object]
"""(module, attribute, new value): a sliced weight or bias tensor, or a new width."""
Undo = list[tuple[object, str, object]]
"""(object, attribute, old value) of every change made, oldest first."""


class WidthPruningError(EntroDropError):
    """Bad width-pruning input; the message names what was wrong and what to do."""


def keep_indices(
    scores: NeuronScores,
    ratio: float,
    *,
    hidden_size: int | None = None,
    mode: KeepMode = "per_layer",
) -> list[torch.Tensor]:
    """The neurons to keep in each layer, as sorted LongTensors (original order).

    `per_layer` (the SPEC, the research code's `mlp_ratio`): every layer keeps
    k = int(ratio * hidden_size) neurons, truncated as the official code does (460 at 0.8
    with D = 576), so ratio is the new intermediate size in units of the hidden size (2.0 on
    a model with I = 4D keeps half). `uniform`: ratio is a keep-fraction in (0, 1] and each
    layer keeps round(ratio * I). k is clamped to [1, I]: a ratio asking for more than I
    keeps the whole layer. Ties go to the lower index.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
            or ratio <= 0:
        raise WidthPruningError(f"ratio must be a positive number; got {ratio!r}")
    if mode == "per_layer":
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise WidthPruningError(
                f"mode 'per_layer' keeps int(ratio * hidden_size) neurons and needs the "
                f"model's hidden_size (a positive integer); got {hidden_size!r}"
            )
    elif mode == "uniform":
        if ratio > 1:
            raise WidthPruningError(f"mode 'uniform' takes a keep-fraction in (0, 1]; got {ratio}")
    else:
        raise WidthPruningError(f"mode must be 'per_layer' or 'uniform'; got {mode!r}")
    keep = []
    for layer_idx, s in enumerate(scores.scores):
        if s.ndim != 1 or s.numel() == 0 or not torch.isfinite(s).all():
            raise WidthPruningError(
                f"scores of layer {layer_idx} must be a non-empty 1-D tensor of finite values"
            )
        size = s.numel()
        k = min(max(requested_neurons(ratio, mode, hidden_size, size), 1), size)
        best = torch.sort(s, descending=True, stable=True).indices[:k]
        keep.append(torch.sort(best).values.long())
    return keep


def requested_neurons(ratio: float, mode: KeepMode, hidden_size: int | None,
                      intermediate: int) -> int:
    """Neurons a ratio asks a layer of `intermediate` neurons to keep, before clamping to
    [1, I]: int(ratio * D) per layer (truncated, as the official code does), or
    round(ratio * I) in `uniform` mode."""
    return int(ratio * hidden_size) if mode == "per_layer" else round(ratio * intermediate)


def apply_width_pruning(model: nn.Module, keep: list[torch.Tensor]) -> None:
    """Prune the MLPs of `model` in place to the neurons in `keep` (one tensor per layer)."""
    _prune(model, keep)


@contextmanager
def width_pruned(model: nn.Module, keep: list[torch.Tensor]) -> Iterator[nn.Module]:
    """Prune in place for the duration of the block; the original weights and config return
    afterwards (even after an exception). The full weights stay in memory meanwhile."""
    undo = _prune(model, keep)
    try:
        yield model
    finally:
        undo_changes(undo)


def export_width_pruned(
    model: nn.Module,
    tokenizer,
    keep: list[torch.Tensor],
    out_dir: str | os.PathLike,
    *,
    manifest: dict,
    overwrite: bool = False,
) -> Path:
    """Write the pruned model as a standard Hugging Face folder (stock transformers loads it),
    with the tokenizer (if not None), `entrodrop.json` and a README model card.

    `model` must be unpruned and is never modified: the sliced tensors and a config copy go
    into a fresh model that is saved. The folder appears complete or not at all.
    """
    if active_pruning(model) is not None or getattr(model, _STATE_ATTR, None) is not None:
        what = active_pruning(model) or "its MLP width"
        raise WidthPruningError(
            f"the model has {what} pruned in memory; export width pruning from the unpruned "
            "model"
        )
    record = checked_manifest(manifest)
    plan = _plan(model, keep)
    names = {id(m): name for name, m in model.named_modules()}
    state = dict(model.state_dict())
    for module, attr, value in plan.changes:
        if isinstance(value, torch.Tensor):
            state[f"{names[id(module)]}.{attr}"] = value
    config = copy.deepcopy(model.config)
    setattr(config_holding(config, plan.config_key), plan.config_key, plan.width)

    out_dir = Path(out_dir)
    with staged_output_dir(out_dir, overwrite=overwrite,
                           needed_bytes=tensor_bytes(state.values())) as tmp:
        fresh = save_clean_checkpoint(model, tmp, config=config, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        record.update({**width_fields(record, plan.config_key, plan.sizes, plan.keep),
                       **provenance(model, fresh)})
        del fresh
        write_manifest(tmp, record, width_model_card(out_dir.name, record))
    return out_dir


def checked_manifest(manifest: Mapping) -> dict:
    """A width export's manifest as a JSON-ready dict; anything but a mapping is refused."""
    if not isinstance(manifest, Mapping):
        raise WidthPruningError(f"manifest must be a dict; got {type(manifest).__name__}")
    return json_ready(dict(manifest), "manifest")


def width_fields(record: Mapping, config_key: str, sizes: list[int],
                 keep: list[torch.Tensor]) -> dict:
    """The fields a width export adds to its manifest `record` (before provenance)."""
    return {
        "method": record.get("method", "width"),
        "width_pruning": {
            "config_key": config_key,
            "intermediate_size_before": sizes,
            "intermediate_size_after": len(keep[0]),
            "kept_neurons": [k.tolist() for k in keep],
        },
    }


@dataclass
class _Plan:
    keep: list[torch.Tensor]
    sizes: list[int]
    width: int
    config_key: str
    changes: list[Change]


def _plan(model: nn.Module, keep: list[torch.Tensor]) -> _Plan:
    """Everything width pruning changes, computed without changing anything."""
    arch = get_architecture(model)
    layout = arch.mlp
    sizes = [intermediate_size(down, layout) for _, down in mlp_modules(model)]
    keep = checked_keep(keep, sizes)
    changes: list[Change] = []
    for layer, idx in zip(arch.layers(model), keep, strict=True):
        changes += mlp_slice_changes(layer, layout, idx)
    return _Plan(keep, sizes, len(keep[0]), layout.config_key, changes)


def mlp_slice_changes(layer: nn.Module, layout: MLPLayout, keep: torch.Tensor) -> list[Change]:
    """What cutting one decoder layer's MLP to the neurons `keep` changes, changing nothing."""
    inputs, down = layer_mlp(layer, layout)
    size = intermediate_size(down, layout)
    changes: list[Change] = []
    with torch.no_grad():
        for module in inputs:
            rows = torch.cat([keep, keep + size]) if layout.fused_gate_up else keep
            changes += _sliced(module, rows, out_side=True, conv1d=layout.conv1d)
        changes += _sliced(down, keep, out_side=False, conv1d=layout.conv1d)
    # LlamaMLP-style modules remember their width; keep it truthful.
    parent_path = layout.output.rpartition(".")[0]
    parent = get_submodule(layer, parent_path) if parent_path else layer
    if isinstance(getattr(parent, "intermediate_size", None), int):
        changes.append((parent, "intermediate_size", len(keep)))
    return changes


def apply_changes(changes: list[Change], undo: Undo) -> None:
    """Make `changes` in place, recording in `undo` what `undo_changes` needs to revert them."""
    for module, attr, value in changes:
        if isinstance(value, torch.Tensor):
            # As trainable as the parameter it replaces.
            value = nn.Parameter(value, requires_grad=getattr(module, attr).requires_grad)
        _set(module, attr, value, undo)


def _prune(model: nn.Module, keep: list[torch.Tensor]) -> Undo:
    """Apply the plan in place; returns what `undo_changes` needs to undo it. All input is
    checked before anything changes, and a failure half-way is rolled back."""
    plan = _plan(model, keep)
    undo: Undo = []
    try:
        apply_changes(plan.changes, undo)
        _set(config_holding(model.config, plan.config_key), plan.config_key, plan.width, undo)
        _set(model, _STATE_ATTR, plan.width, undo)
    except BaseException:
        undo_changes(undo)
        raise
    return undo


def config_holding(config, key: str):
    """The config object holding the intermediate size (the text config of composite ones)."""
    if not hasattr(config, key) and hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True)
    return config


def checked_keep(keep: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """`keep` as sorted CPU LongTensors, one per layer of sizes `sizes`, all the same length."""
    if not isinstance(keep, (list, tuple)) or len(keep) != len(sizes):
        n = len(keep) if isinstance(keep, (list, tuple)) else type(keep).__name__
        raise WidthPruningError(f"keep must hold one index tensor per layer ({len(sizes)}); got {n}")
    checked = []
    for layer_idx, (idx, size) in enumerate(zip(keep, sizes, strict=True)):
        idx = torch.as_tensor(idx)
        if idx.ndim != 1 or idx.numel() == 0 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise WidthPruningError(
                f"keep[{layer_idx}] must be a non-empty 1-D tensor of neuron indices"
            )
        idx = idx.long().cpu()
        if int(idx.min()) < 0 or int(idx.max()) >= size:
            raise WidthPruningError(f"keep[{layer_idx}] has indices outside 0..{size - 1}")
        if torch.unique(idx).numel() != idx.numel():
            raise WidthPruningError(f"keep[{layer_idx}] repeats a neuron index")
        checked.append(torch.sort(idx).values)
    counts = sorted({len(idx) for idx in checked})
    if len(counts) > 1:
        raise WidthPruningError(
            f"every layer must keep the same number of neurons (a standard checkpoint has one "
            f"intermediate size); got counts {counts}. Use keep_indices(), which keeps "
            f"int(ratio * hidden_size) in every layer"
        )
    return checked


def _sliced(module: nn.Module, idx: torch.Tensor, *, out_side: bool,
            conv1d: bool) -> list[Change]:
    """Keep entries `idx` of the neuron axis. out_side: the neurons are this module's outputs
    (Linear weight rows, Conv1D columns, and the bias); else its inputs (bias unchanged)."""
    weight = module.weight
    if weight.device.type == "meta":
        raise WidthPruningError("cannot width-prune weights on the meta device (offloaded model)")
    # Linear stores [out, in], Conv1D [in, out].
    dim = (1 if conv1d else 0) if out_side else (0 if conv1d else 1)
    new_weight = weight.detach().index_select(dim, idx.to(weight.device)).contiguous()
    changes: list[Change] = [(module, "weight", new_weight)]
    if out_side and getattr(module, "bias", None) is not None:
        bias = module.bias.detach()
        changes.append((module, "bias", bias.index_select(0, idx.to(bias.device)).contiguous()))
    attr = ("nf" if out_side else "nx") if conv1d else ("out_features" if out_side else "in_features")
    if hasattr(module, attr):
        changes.append((module, attr, int(new_weight.shape[dim])))
    return changes


def _set(obj: object, name: str, value: object, undo: Undo) -> None:
    undo.append((obj, name, getattr(obj, name, None)))
    setattr(obj, name, value)


def undo_changes(undo: Undo) -> None:
    """Put back, latest first, the values `apply_changes` and the pruning recorded in `undo`."""
    for obj, name, value in reversed(undo):
        setattr(obj, name, value)
