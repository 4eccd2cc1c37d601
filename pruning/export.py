"""Export block-pruned checkpoints.

`layer`: a standard checkpoint with L-K layers that stock transformers loads.
`attn`: the checkpoint without the dropped attention weights, plus `modeling_entrodrop.py`
(registered through `config.auto_map`), which needs `trust_remote_code=True`. With
`layout="vllm"` it is written in the DeciLM / nemotron-nas form that vLLM also runs
(`pruning.vllm_layout`).

The source model is never saved directly (a GGUF-loaded model refuses `save_pretrained`)
and never modified: a fresh model is built from a copy of its config and given the pruned
state dict. Everything is written to a temporary folder beside the target and renamed into
place once complete.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from analysis.architectures import Architecture, count_parameters, get_architecture
from analysis.errors import EntroDropError
from analysis.paths import (
    disk_shortfall,
    make_temp_dir,
    remove_stale_temp_dirs,
    stale_temp_dirs,
    tensor_bytes,
)
from analysis.settings import Granularity
from pruning.apply import active_pruning, check_blocks, check_granularity, layer_config_changes
from pruning.attn_export import DROPPED_ATTN_KEY, MODELING_NAME, attn_config, write_attn_code
from pruning.vllm_layout import (
    DEFAULT_LAYOUT,
    VLLM_MODEL_TYPE,
    ExportLayout,
    VllmAttnPlan,
    check_layout,
    vllm_attn_config,
    vllm_attn_plan,
    vllm_attn_state,
    write_vllm_code,
)

MANIFEST_NAME = "entrodrop.json"

Progress = Callable[[float, str], None]


class ExportError(EntroDropError):
    """An export cannot be written; the message says why and what to do."""


class TargetExistsError(ExportError):
    """The target folder exists and is not empty, and overwrite was not asked for."""


class TargetIsFileError(ExportError):
    """The target path is a file, not a folder."""


class TargetNotWritableError(ExportError):
    """The target's parent folder cannot be created or written to."""


class InsufficientDiskSpaceError(ExportError):
    """The disk holding the target has less free space than the export needs."""


class UnsupportedExportError(ExportError):
    """This model cannot be exported in the requested form."""


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


def provenance(source: nn.Module, saved: nn.Module) -> dict[str, Any]:
    """Manifest fields every export records: sizes, family, library versions and time."""
    return {
        "parameters_before": count_parameters(source),
        "parameters_after": count_parameters(saved),
        "model_type": source.config.model_type,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(folder: Path, record: Mapping[str, Any], model_card: str) -> None:
    """`entrodrop.json` and the README model card of an export being staged in `folder`."""
    (folder / MANIFEST_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card, encoding="utf-8")


def save_clean_checkpoint(model: nn.Module, folder: Path, *, config=None,
                          state_dict: Mapping[str, torch.Tensor] | None = None,
                          model_class: type | None = None,
                          prepare: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Save `state_dict` (default: the model's) under `config` (default: a copy of the
    model's) as a safetensors checkpoint, through a fresh model of `model_class`.

    The fresh model is built on the meta device and takes the given tensors without a copy;
    `quantization_config` is dropped, so a GGUF-loaded source gives a plain checkpoint.
    `prepare(fresh)` runs before the weights are loaded (e.g. to swap modules out).
    Returns the fresh model (its tensors are the source's; do not run it).
    """
    config = copy.deepcopy(model.config) if config is None else config
    fresh = meta_model(model_class or type(model), config, _weights_dtype(model), prepare)
    state = model.state_dict() if state_dict is None else state_dict
    result = fresh.load_state_dict(dict(state), strict=False, assign=True)
    fresh.tie_weights()
    # Non-persistent buffers stay on meta: they are not saved.
    missing = [k for k, v in fresh.state_dict().items() if v.is_meta]
    if missing or result.unexpected_keys:
        raise ExportError(
            f"the pruned weights do not fit the rebuilt model (missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}); this family may need a table update"
        )
    if getattr(model, "generation_config", None) is not None:
        fresh.generation_config = copy.deepcopy(model.generation_config)
    fresh.save_pretrained(folder, safe_serialization=True)
    return fresh


def meta_model(model_class: type, config, dtype: torch.dtype,
               prepare: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """A weightless `model_class` for `config` (changed to a plain `dtype` checkpoint's)."""
    # A GGUF-loaded source's quantization fields would make the saved folder claim to be
    # quantized; the dtype is what config.json records for the written weights.
    for name in ("quantization_config", "_pre_quantization_dtype"):
        if name in config.__dict__:
            delattr(config, name)
    config.dtype = dtype
    with torch.device("meta"):
        fresh = model_class(config)
    if prepare is not None:
        prepare(fresh)
    return fresh


def check_export_target(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a target that cannot take an export, before any work is done: a file, a
    non-empty folder (unless `overwrite`), a path under a file, or a folder this process
    cannot write in (tried for real: permission bits do not stop root). Returns the parent
    folder, created if missing."""
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise TargetIsFileError(f"{out_dir} is a file; choose a folder path for the export")
    here = Path.cwd().resolve()
    try:
        resolved = out_dir.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise TargetNotWritableError(f"cannot use {out_dir} as the export folder: {err}") from None
    if resolved in (here, *here.parents):
        raise TargetExistsError(
            f"{out_dir} is the current folder or one that holds it; an export replaces its "
            "target, so choose a new folder for it (e.g. --out pruned-model)")
    recover_interrupted_overwrite(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise TargetExistsError(
                f"{out_dir} already exists and is not empty; choose another folder or allow "
                "overwrite")
        if not (out_dir / MANIFEST_NAME).is_file():
            # Overwrite replaces a previous export, never a folder of anything else.
            raise TargetExistsError(
                f"{out_dir} is not empty and holds no export of this tool (no {MANIFEST_NAME}), "
                "so it is not replaced even with overwrite; choose a new or empty folder")
    for ancestor in out_dir.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise TargetNotWritableError(
                    f"{ancestor} is a file, so no folder can be created under it; choose "
                    "another path for the export")
            break
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".probe", dir=parent))
    except OSError as err:
        raise TargetNotWritableError(
            f"cannot write in {parent}: {err.strerror or err}; choose another folder") from err
    return parent


@contextmanager
def staged_output_dir(out_dir: Path, *, overwrite: bool = False,
                      needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on
    error it is deleted and `out_dir` is left as it was.

    Refuses what `check_export_target` refuses, and a disk with less than `needed_bytes`
    (plus a margin) free. A temporary folder left by a killed export to the same target is
    deleted first.
    """
    out_dir = Path(out_dir)
    parent = check_export_target(out_dir, overwrite=overwrite)
    remove_stale_temp_dirs(parent, out_dir.name)
    shortfall = disk_shortfall(parent, needed_bytes) if needed_bytes is not None else None
    if shortfall is not None:
        need, free = shortfall
        raise InsufficientDiskSpaceError(
            f"the export needs about {_mib(need)} MiB but only {_mib(free)} MiB are free on "
            f"the disk holding {parent}; free some space or choose another disk"
        )
    try:
        tmp = make_temp_dir(parent, out_dir.name)
    except OSError as err:
        raise TargetNotWritableError(f"cannot write in {parent}: {err.strerror or err}") from err
    try:
        yield tmp
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def stock_class(model: nn.Module, granularity: str) -> type:
    """The model's transformers class, refused where the export could not reproduce it."""
    cls = type(model)
    if getattr(transformers, cls.__name__, None) is not cls:
        raise UnsupportedExportError(
            f"{cls.__name__} is not a stock transformers class; only models of the built-in "
            "families can be exported"
        )
    config = model.config.get_text_config(decoder=True)
    if granularity == "layer" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        # The reloaded layers would rescale attention by their new index.
        raise UnsupportedExportError(
            "this GPT-2 model scales attention by layer index, so a layer-pruned checkpoint "
            "would not reproduce it; export attention pruning instead"
        )
    return cls


def recover_interrupted_overwrite(out_dir: Path) -> list[Path]:
    """Tidy what an overwrite killed between its two renames left beside `out_dir`: the
    previous export, moved aside into `.<name>.<pid>.<random>.old/previous`. While the
    target is absent it is moved back (restored); otherwise the aside folder is removed.
    Only folders of processes that no longer run are touched. Returns what was handled."""
    out_dir = Path(out_dir)
    handled = []
    for aside in stale_temp_dirs(out_dir.parent, out_dir.name, ".old"):
        previous = aside / "previous"
        if not out_dir.exists() and (previous / MANIFEST_NAME).is_file():
            os.replace(previous, out_dir)
        shutil.rmtree(aside, ignore_errors=True)
        handled.append(aside)
    return handled


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    # Tagged with this process id: a kill between the two renames below is undone by
    # recover_interrupted_overwrite on the next export to this target.
    aside = make_temp_dir(out_dir.parent, out_dir.name, suffix=".old")
    os.replace(out_dir, aside / "previous")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(aside / "previous", out_dir)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _weights_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _mib(n: int) -> int:
    return math.ceil(n / 2**20)


def json_ready(value: Any, where: str) -> Any:
    """A JSON-safe copy: numpy/torch scalars and arrays become numbers and lists, paths
    strings; anything else unknown is an error naming where it was found."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [json_ready(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return json_ready(value.tolist(), where)
    raise ExportError(
        f"{where} holds a {type(value).__name__}, which cannot be written to {MANIFEST_NAME}; "
        "pass numbers, strings, lists or dicts"
    )


def block_model_card(name: str, record: Mapping[str, Any]) -> str:
    """The README of a block export, from its manifest `record`."""
    granularity = record["granularity"]
    blocks = ", ".join(map(str, record["blocks"])) or "none"
    source = record.get("source_model") or record.get("model") or record.get("model_name")
    if granularity == "layer":
        what = (f"Decoder layers {blocks} were removed: {record['num_layers_before']} layers "
                f"became {record['num_layers_after']}. The remaining layers are renumbered "
                "from 0.")
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}")')
        note = "This is a standard checkpoint: stock transformers loads it, no custom code."
        if record.get("layout") == "vllm":
            load += f'\n\n# or in vLLM:\nfrom vllm import LLM\nllm = LLM(model="{name}")'
            note += " vLLM loads it as it is."
    elif record.get("layout") == "vllm":
        removed = ", ".join(map(str, record.get("attn_removed", []))) or "none"
        what = (f"The attention sub-blocks of layers {blocks} (of "
                f"{record['num_layers_before']}) were pruned; the MLPs of those layers stay. "
                "config.json lists every layer in `block_configs` (the DeciLM / "
                f"`{VLLM_MODEL_TYPE}` form that vLLM runs). Attention is a no-op in layers "
                f"{removed}, whose attention and pre-attention norm weights are not stored.")
        if record.get("attn_zeroed"):
            what += (" Block 0's attention is kept with a zero output projection, so it adds "
                     "nothing: vLLM cannot start a model with a no-op attention.")
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}", '
                'trust_remote_code=True)\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}", '
                'trust_remote_code=False)\n\n'
                '# or in vLLM:\nfrom vllm import LLM\n'
                f'llm = LLM(model="{name}", trust_remote_code=True)')
        note = (f"Both engines need `trust_remote_code=True`: transformers takes the model "
                f"class from `{MODELING_NAME}` (in this folder, torch and transformers only), "
                "vLLM takes the config class from it and runs its own `DeciLMForCausalLM`. "
                f"Stock transformers has no `{VLLM_MODEL_TYPE}` class, so loading without it "
                "fails with an error instead of building a model with random weights.")
    else:
        what = (f"The attention sub-blocks of layers {blocks} (of "
                f"{record['num_layers_before']}) were made the identity; the MLPs of those "
                f"layers stay. Their indices are in `config.{DROPPED_ATTN_KEY}`.")
        # Only the model needs the export's code. The tokenizer is stock: without an explicit
        # False, transformers sees the config's auto_map and asks on the terminal.
        load = (f'model = AutoModelForCausalLM.from_pretrained("{name}", '
                'trust_remote_code=True)\n'
                f'tokenizer = AutoTokenizer.from_pretrained("{name}", '
                'trust_remote_code=False)')
        note = (f"Loading needs `trust_remote_code=True`: `{MODELING_NAME}` (in this folder, "
                "torch and transformers only) replaces the dropped attention sub-blocks, "
                "whose weights are not stored. The config's own `model_type` makes loading "
                "without it fail with an error instead of building a broken stock model.")
    lines = [
        f"# {name}", "",
        "Block-pruned with EntroDrop Studio (entropy-based pruning).", "",
    ]
    if source:
        lines += [f"Source model: `{source}`", ""]
    lines += [
        "## What was pruned", "",
        f"- granularity: `{granularity}`",
        f"- layout: `{record.get('layout', DEFAULT_LAYOUT)}`",
        f"- blocks: {blocks}",
        f"- parameters: {record['parameters_before']:,} before, "
        f"{record['parameters_after']:,} after", "",
        what, "",
        "## How to load", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        load,
        "```", "",
        note, "",
    ]
    figures = {k: v for k, v in record.items()
               if k not in _RECORD_KEYS and isinstance(v, (bool, int, float, str))}
    if figures:
        lines += ["## Figures from the manifest", "", "| field | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in figures.items()]
        lines.append("")
    lines += [
        f"Full details: `{MANIFEST_NAME}`. Exported with transformers "
        f"{record['transformers_version']} and torch {record['torch_version']} on "
        f"{record['exported_at']}.", "",
    ]
    return "\n".join(lines)


_RECORD_KEYS = frozenset({
    "granularity", "blocks", "num_layers_before", "num_layers_after", "parameters_before",
    "parameters_after", "transformers_version", "torch_version", "exported_at", "layout",
    "attn_removed", "attn_zeroed",
})


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
