"""Export block-pruned checkpoints.

`layer`: a standard checkpoint with L-K layers that stock transformers loads.
`attn`: the checkpoint without the dropped attention weights, plus `modeling_entrodrop.py`
(registered through `config.auto_map`), which needs `trust_remote_code=True`. With
`layout="vllm"` it is written in the DeciLM / nemotron-nas form that vLLM also runs
(`pruning.vllm_layout`).

The pieces every kind of export shares live beside this module: where an export is written
and its errors (`pruning.export_target`), how the pruned weights are saved through a fresh
model (`pruning.checkpoint`), and the manifest file and model cards
(`pruning.export_record`). Their public names are importable from here as well.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.architectures import Architecture, get_architecture
from analysis.paths import tensor_bytes
from analysis.settings import Granularity
from pruning.apply import active_pruning, check_blocks, check_granularity, layer_config_changes
from pruning.attn_export import attn_config, write_attn_code
from pruning.checkpoint import meta_model as meta_model
from pruning.checkpoint import provenance, save_clean_checkpoint, stock_class
from pruning.export_record import block_model_card, json_ready, write_manifest
from pruning.export_target import MANIFEST_NAME as MANIFEST_NAME
from pruning.export_target import ExportError, staged_output_dir
from pruning.export_target import InsufficientDiskSpaceError as InsufficientDiskSpaceError
from pruning.export_target import TargetExistsError as TargetExistsError
from pruning.export_target import TargetIsFileError as TargetIsFileError
from pruning.export_target import TargetNotWritableError as TargetNotWritableError
from pruning.export_target import UnsupportedExportError as UnsupportedExportError
from pruning.export_target import check_export_target as check_export_target
from pruning.export_target import recover_interrupted_overwrite as recover_interrupted_overwrite
from pruning.vllm_layout import (
    DEFAULT_LAYOUT,
    ExportLayout,
    VllmAttnPlan,
    check_layout,
    vllm_attn_config,
    vllm_attn_plan,
    vllm_attn_state,
    write_vllm_code,
)

__all__ = [
    # block exports (this module)
    "Progress", "block_fields", "checked_blocks_export", "export_pruned",
    "export_size_estimate", "layout_plan", "prune_config", "pruned_state_dict",
    "write_block_code",
    # pruning.export_target
    "MANIFEST_NAME", "ExportError", "InsufficientDiskSpaceError", "TargetExistsError",
    "TargetIsFileError", "TargetNotWritableError", "UnsupportedExportError",
    "check_export_target", "recover_interrupted_overwrite", "staged_output_dir",
    # pruning.checkpoint
    "meta_model", "provenance", "save_clean_checkpoint", "stock_class",
    # pruning.export_record
    "block_model_card", "json_ready", "write_manifest",
]

Progress = Callable[[float, str], None]


def export_size_estimate(model: nn.Module, granularity: Granularity,
                         blocks: Sequence[int], layout: ExportLayout = DEFAULT_LAYOUT) -> int:
    """Bytes of weights the export writes: the kept tensors, tied ones counted once."""
    arch, drop = checked_blocks_export(model, granularity, blocks)
    plan = layout_plan(model.config, granularity, drop, layout)
    state = pruned_state_dict(model, arch, granularity, drop, plan)
    return tensor_bytes(state.values())


def layout_plan(config, granularity: Granularity, drop: tuple[int, ...],
                layout: str) -> VllmAttnPlan | None:
    """What the vLLM layout does to an attn export's blocks; None for anything that is
    written the same in every layout (`layer` exports, the `transformers` layout)."""
    if check_layout(layout) != "vllm" or granularity != "attn":
        return None
    return vllm_attn_plan(config, drop)


def pruned_state_dict(model: nn.Module, arch: Architecture, granularity: Granularity,
                      drop: Sequence[int],
                      plan: VllmAttnPlan | None = None) -> dict[str, torch.Tensor]:
    """The source state dict as the pruned model names it, without copying any tensor:
    `layer` leaves out the dropped layers and renumbers the rest; `attn` leaves out the
    dropped layers' attention weights (under a vLLM `plan`: the removed layers' attention
    and pre-attention norm, with zeros for the kept-at-zero output projections)."""
    if plan is not None:
        state = pruned_state_dict(model, arch, granularity, plan.removed)
        return vllm_attn_state(state, arch, plan)
    layers = arch.layers(model)
    names = {id(m): name for name, m in model.named_modules()}
    prefix = names[id(layers)] + "."
    kept = [i for i in range(len(layers)) if i not in set(drop)]
    new_index = {old: new for new, old in enumerate(kept)}
    attn_prefix = arch.attn_name + "."
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix):].partition(".")
            old = int(index)
            if granularity == "layer":
                if old not in new_index:
                    continue
                key = f"{prefix}{new_index[old]}.{rest}"
            elif old in drop and rest.startswith(attn_prefix):
                continue
        state[key] = tensor
    return state


def export_pruned(model: nn.Module, tokenizer, out_dir: str | os.PathLike, *,
                  granularity: Granularity, blocks: Sequence[int], manifest: Mapping[str, Any],
                  overwrite: bool = False, progress: Progress | None = None,
                  layout: ExportLayout = DEFAULT_LAYOUT) -> Path:
    """Write `model` with `blocks` pruned to `out_dir`, with tokenizer, `entrodrop.json`
    (the manifest plus what was done) and a README model card. Returns the folder.

    `model` must be the unpruned source model; it is left unchanged. `layout`: see
    `pruning.vllm_layout.ExportLayout`.
    """
    report = progress or (lambda frac, msg: None)
    arch, drop = checked_blocks_export(model, granularity, blocks)
    base = stock_class(model, granularity)
    plan = layout_plan(model.config, granularity, drop, layout)
    record = json_ready(dict(manifest), "manifest")
    num_layers = len(arch.layers(model))
    out_dir = Path(out_dir)

    report(0.0, "checking the target folder")
    state = pruned_state_dict(model, arch, granularity, drop, plan)
    with staged_output_dir(out_dir, overwrite=overwrite,
                           needed_bytes=tensor_bytes(state.values())) as tmp:
        report(0.1, "building the pruned model")
        config = copy.deepcopy(model.config)
        prepare = prune_config(config, arch, base, granularity, drop, num_layers, plan)

        report(0.2, "writing the weights")
        fresh = save_clean_checkpoint(model, tmp, config=config, state_dict=state,
                                      model_class=base, prepare=prepare)
        if granularity == "attn":
            write_block_code(tmp, base, arch, config, plan)

        report(0.7, "writing the tokenizer")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

        report(0.85, "writing the manifest and model card")
        record.update({**block_fields(granularity, drop, num_layers, layout, plan),
                       **provenance(model, fresh)})
        del fresh
        write_manifest(tmp, record, block_model_card(out_dir.name, record))
        report(0.95, "moving the export into place")
    report(1.0, f"exported to {out_dir}")
    return out_dir


def prune_config(config, arch: Architecture, base: type, granularity: Granularity,
                 drop: tuple[int, ...], num_layers: int,
                 plan: VllmAttnPlan | None = None) -> Callable[[nn.Module], None] | None:
    """Make `config` (the export's own copy) that of the pruned model; returns what the fresh
    model must do before it takes the weights (attn: swap out attention), or None. `plan`:
    the vLLM layout's (`layout_plan`), None for the transformers layout."""
    if granularity == "attn":
        if plan is not None:
            return vllm_attn_config(config, arch, base, plan)
        return attn_config(config, arch, base, drop)
    text_config = config.get_text_config(decoder=True)
    kept = [i for i in range(num_layers) if i not in drop]
    for name, value in layer_config_changes(text_config, kept, num_layers, arch).items():
        setattr(text_config, name, value)
    return None


def write_block_code(folder: Path, base: type, arch: Architecture, config,
                     plan: VllmAttnPlan | None) -> None:
    """The modeling file of an attn export and its config.json's class fields."""
    if plan is not None:
        write_vllm_code(folder, base, arch, config)
    else:
        write_attn_code(folder, base, arch, config)


def block_fields(granularity: Granularity, drop: tuple[int, ...], num_layers: int,
                 layout: ExportLayout = DEFAULT_LAYOUT,
                 plan: VllmAttnPlan | None = None) -> dict:
    """The fields a block export adds to its manifest (before provenance). Under the vLLM
    layout an attn export also says which attention sub-blocks are gone from the files and
    which are kept with a zero output projection (block 0)."""
    fields = {
        "granularity": granularity,
        "blocks": list(drop),
        "num_layers_before": num_layers,
        "num_layers_after": num_layers - len(drop) if granularity == "layer" else num_layers,
        "layout": check_layout(layout),
    }
    if plan is not None:
        fields.update(attn_removed=list(plan.removed), attn_zeroed=list(plan.zeroed))
    return fields


def checked_blocks_export(model: nn.Module, granularity: str,
                          blocks: Sequence[int]) -> tuple[Architecture, tuple[int, ...]]:
    """(architecture, sorted blocks) of a block export, refused if the model is pruned."""
    granularity = check_granularity(granularity)
    arch = get_architecture(model)
    if active_pruning(model) is not None:
        raise ExportError(
            f"the model has {active_pruning(model)} pruned in memory; export from the unpruned "
            "model and pass the blocks instead"
        )
    return arch, check_blocks(blocks, len(arch.layers(model)))
