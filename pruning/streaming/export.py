"""Block and width exports written straight from the source checkpoint, tensor by tensor.

The in-memory exports (`pruning.export.export_pruned`, `pruning.width.export_width_pruned`)
give a fresh model of the stock class the pruned state dict and call `save_pretrained`.
Here the same fresh model is built on the meta device only, which gives the names, shapes
and config of everything the export holds; the tensors are then read one at a time from
the source (renumbered for `layer`, left out for dropped attention, sliced for width),
converted to the export dtype and appended to safetensors shards (`writer`). Config,
generation config, modeling file, tokenizer, manifest and model card are written with the
in-memory export's own helpers, into the same temporary folder that is renamed into place
only once complete (`pruning.export_target.staged_output_dir`).

Memory: one tensor at a time for block exports; one decoder layer at a time for width
exports (the layer is materialised so that its MLP is cut by the same code as in memory).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.architectures import get_architecture
from analysis.streaming import skeleton
from analysis.streaming.plan import checkpoint_tokenizer
from analysis.streaming.sources import TensorSource, open_source
from pruning.checkpoint import meta_model, provenance, stock_class
from pruning.export import (
    block_fields,
    checked_blocks_export,
    layout_plan,
    prune_config,
    write_block_code,
)
from pruning.export_record import block_model_card, json_ready, width_model_card, write_manifest
from pruning.export_target import ExportError, UnsupportedExportError, staged_output_dir
from pruning.streaming import walk
from pruning.streaming.variants import mlp_sizes, width_sliced
from pruning.streaming.writer import DEFAULT_MAX_SHARD_BYTES, Entry, write_shards
from pruning.vllm_layout import DEFAULT_LAYOUT, ExportLayout, zeroed_names
from pruning.width import checked_keep, checked_manifest, config_holding, width_fields

Progress = walk.Progress


def stream_export_blocks(source: str | Path | TensorSource, out_dir: str | os.PathLike,
                         granularity: str, blocks: Sequence[int], manifest: Mapping[str, Any], *,
                         overwrite: bool = False, progress: Progress | None = None,
                         dtype: torch.dtype | str | None = None, tokenizer: Any = None,
                         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                         layout: ExportLayout = DEFAULT_LAYOUT) -> Path:
    """`export_pruned` without loading the model: the same folder from the checkpoint.

    `source`: a model spec, path or `TensorSource`. `dtype`: of the written weights;
    None keeps the checkpoint's (float32 for GGUF, whose tensors are dequantised), which is
    what an in-memory load at that dtype would export. `tokenizer`: None loads the
    source's own (as the app does), False writes none, anything else is saved as given.
    `layout`: as in `export_pruned`. Returns the folder.
    """
    report = progress or (lambda frac, msg: None)
    src, model = _open(source)
    arch, drop = checked_blocks_export(model, granularity, blocks)
    base = stock_class(model, granularity)
    plan = layout_plan(model.config, granularity, drop, layout)
    record = json_ready(dict(manifest), "manifest")
    num_layers = len(arch.layers(model))
    kept = [i for i in range(num_layers) if i not in drop]
    dtype = _export_dtype(src, dtype)

    config = copy.deepcopy(src.config)
    prepare = prune_config(config, arch, base, granularity, drop, num_layers, plan)
    fresh = _fresh_model(base, config, dtype, prepare)
    prefix = arch.layers_path + "."
    new_to_old = dict(enumerate(kept)) if granularity == "layer" else {i: i for i in range(num_layers)}

    def source_name(name: str) -> str:
        """The skeleton's name of a tensor of the pruned model (layers renumbered back)."""
        if not name.startswith(prefix):
            return name
        index, _, rest = name[len(prefix):].partition(".")
        return f"{prefix}{new_to_old[int(index)]}.{rest}"

    entries, stored = _plan(src, model, fresh, dtype, source_name)
    tokenizer = _resolve_tokenizer(src, tokenizer)

    # The vLLM layout's kept-at-zero output projections (the removed norms are simply not
    # in the fresh model's state dict).
    zeroed = zeroed_names(arch, plan) if plan is not None else ()

    def produce(name: str) -> torch.Tensor:
        tensor = _read(src, stored[name], dtype)
        return torch.zeros_like(tensor) if zeroed and name.startswith(zeroed) else tensor

    out_dir = Path(out_dir)
    with _staged_export(out_dir, src, fresh, entries, produce, tokenizer, overwrite=overwrite,
                        max_shard_bytes=max_shard_bytes, report=report, weights_share=0.75,
                        how="tensor by tensor") as tmp:
        if granularity == "attn":
            write_block_code(tmp, base, arch, config, plan)
        record.update({**block_fields(granularity, drop, num_layers, layout, plan),
                       **provenance(model, fresh)})
        write_manifest(tmp, record, block_model_card(out_dir.name, record))
        report(0.95, "moving the export into place")
    report(1.0, f"exported to {out_dir}")
    return out_dir


def stream_export_width(source: str | Path | TensorSource, out_dir: str | os.PathLike,
                        keep: Sequence[torch.Tensor], manifest: Mapping[str, Any], *,
                        overwrite: bool = False, progress: Progress | None = None,
                        dtype: torch.dtype | str | None = None, tokenizer: Any = None,
                        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """`export_width_pruned` without loading the model: every layer's MLP keeps the
    neurons `keep[i]` (one sorted index tensor per layer, equal counts, as
    `pruning.width.keep_indices` gives). `dtype`, `tokenizer`: as in `stream_export_blocks`.
    Returns the folder."""
    report = progress or (lambda frac, msg: None)
    record = checked_manifest(manifest)
    src = open_source(source)
    dtype = _export_dtype(src, dtype)
    sm = walk.open_streamed(src, "cpu", dtype)
    model, arch = sm.model, sm.arch
    sizes = mlp_sizes(arch, sm.layers)
    keep = checked_keep(keep, sizes)
    config_key = arch.mlp.config_key

    config = copy.deepcopy(src.config)
    setattr(config_holding(config, config_key), config_key, len(keep[0]))
    fresh = _fresh_model(type(model), config, dtype, None)
    entries, stored = _plan(src, model, fresh, dtype, lambda name: name)
    tokenizer = _resolve_tokenizer(src, tokenizer)
    layers = _LayerTensors(sm, keep)

    def produce(name: str) -> torch.Tensor:
        layer = layers.index_of(name)
        return _read(src, stored[name], dtype) if layer is None else layers.get(layer, name)

    out_dir = Path(out_dir)
    with _staged_export(out_dir, src, fresh, entries, produce, tokenizer, overwrite=overwrite,
                        max_shard_bytes=max_shard_bytes, report=report, weights_share=0.8,
                        how="layer by layer") as tmp:
        layers.close()
        record.update({**width_fields(record, config_key, sizes, keep), **provenance(model, fresh)})
        write_manifest(tmp, record, width_model_card(out_dir.name, record))
    report(1.0, f"exported to {out_dir}")
    return out_dir


class _LayerTensors:
    """The tensors of one width-pruned decoder layer at a time, cut by `width_sliced` on
    the materialised layer (the same slicing as in memory)."""

    def __init__(self, sm: walk.StreamedModel, keep: list[torch.Tensor]):
        self.sm, self.keep = sm, keep
        self.prefix = sm.arch.layers_path + "."
        self.current: int | None = None
        self.tensors: dict[str, torch.Tensor] = {}

    def index_of(self, name: str) -> int | None:
        if not name.startswith(self.prefix):
            return None
        return int(name[len(self.prefix):].partition(".")[0])

    def get(self, index: int, name: str) -> torch.Tensor:
        if index != self.current:
            self.tensors = {}  # the previous layer goes before the next is read
            self.tensors = self._load(index)
            self.current = index
        return self.tensors.pop(name)

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        sm = self.sm
        tensors = walk.read_tensors(sm.source, sm.layer_names[index], sm.dtype)
        layer = sm.layers[index]
        with skeleton.loaded(sm.model, tensors, sm.device), \
                width_sliced(sm.arch, layer, self.keep[index]):
            return {f"{self.prefix}{index}.{n}": p.detach()
                    for n, p in layer.named_parameters()}

    def close(self) -> None:
        self.tensors, self.current = {}, None


# ------------------------------------------------------------------------------- helpers


def _open(source) -> tuple[TensorSource, nn.Module]:
    """The source and its skeleton (meta parameters, embeddings tied as when loaded)."""
    src = open_source(source)
    model = skeleton.build_skeleton(src.config, torch.float32)
    model.tie_weights()
    get_architecture(model)
    return src, model


def _export_dtype(src: TensorSource, dtype: torch.dtype | str | None) -> torch.dtype:
    """The floating dtype of the written weights: the one asked for, else the checkpoint's
    (which must then be a single one, as in a model loaded without a dtype)."""
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in names:
            raise ExportError(f"dtype must be one of {', '.join(names)}; got {dtype!r}")
        return names[dtype]
    if dtype is not None:
        return dtype
    stored = {src.dtype(n) for n in src.names() if src.dtype(n).is_floating_point}
    if len(stored) != 1:
        raise ExportError(
            f"{str(src.path)!r} stores weights in {sorted(map(str, stored))}; say which dtype "
            "to export in (dtype='float32', 'bfloat16' or 'float16')")
    return stored.pop()


def _fresh_model(base: type, config, dtype: torch.dtype,
                 prepare: Callable[[nn.Module], None] | None) -> nn.Module:
    """The model `save_clean_checkpoint` builds and saves, on the meta device, tied."""
    fresh = meta_model(base, config, dtype, prepare)
    fresh.tie_weights()
    return fresh


@contextmanager
def _staged_export(out_dir: Path, src: TensorSource, fresh: nn.Module, entries: list[Entry],
                   produce: Callable[[str], torch.Tensor], tokenizer: Any, *, overwrite: bool,
                   max_shard_bytes: int, report: Progress, weights_share: float,
                   how: str) -> Iterator[Path]:
    """The staged folder of an export with its checkpoint and tokenizer written; the caller
    adds the rest in the block, then the folder is moved into place (`staged_output_dir`)."""
    report(0.0, "checking the target folder")
    with staged_output_dir(out_dir, overwrite=overwrite,
                           needed_bytes=sum(e.nbytes for e in entries)) as tmp:
        report(0.05, f"writing the weights, {how}")
        _write_checkpoint(tmp, src, fresh, entries, produce, max_shard_bytes,
                          lambda done, total: report(0.05 + weights_share * done / total,
                                                     f"wrote {done} of {total} tensors"))
        report(0.85, "writing the tokenizer")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        yield tmp


def _plan(src: TensorSource, model: nn.Module, fresh: nn.Module, dtype: torch.dtype,
          source_name: Callable[[str], str]) -> tuple[list[Entry], dict[str, str]]:
    """(what to write: the saved names, shapes and dtypes, {saved name: checkpoint name}).

    The saved names are those `save_pretrained` keeps: the fresh model's state dict without
    tied duplicates (the head, when it is the embedding)."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = remove_tied_weights_from_state_dict(fresh.state_dict(), fresh)
    if set(revert_weight_conversion(fresh, dict(state))) != set(state):
        raise UnsupportedExportError(
            f"{type(fresh).__name__} renames its weights when saving, which the streaming "
            "export does not do; export this model in memory instead")
    params = dict(model.named_parameters())
    wanted = {name: source_name(name) for name in state}
    not_params = sorted(n for n in wanted.values() if n not in params)
    if not_params:
        raise UnsupportedExportError(
            f"the export holds tensors that are not parameters ({not_params[:3]}), which the "
            "streaming export cannot read; export this model in memory instead")
    stored_of = skeleton.checkpoint_names(model, src, sorted(set(wanted.values())))
    entries, stored = [], {}
    for name, meta in state.items():
        stored[name] = stored_of[wanted[name]]
        floating = src.dtype(stored[name]).is_floating_point
        entries.append(Entry(name, tuple(meta.shape), dtype if floating else src.dtype(stored[name])))
    return entries, stored


def _read(src: TensorSource, stored: str, dtype: torch.dtype) -> torch.Tensor:
    """One checkpoint tensor, floating ones as `dtype` (through the counted reader)."""
    return walk.read_tensors(src, {stored: stored}, dtype)[stored]


def _write_checkpoint(folder: Path, src: TensorSource, fresh: nn.Module, entries: list[Entry],
                      produce: Callable[[str], torch.Tensor], max_shard_bytes: int,
                      progress: Callable[[int, int], None]) -> None:
    """Weights, config.json and generation_config.json as `save_pretrained` writes them."""
    from analysis.architectures import count_parameters

    write_shards(folder, entries, produce, max_shard_bytes=max_shard_bytes,
                 total_parameters=count_parameters(fresh), progress=progress)
    # What save_pretrained does with the config: the weights' dtype as a string and the
    # class that saved it, then the generation config of the source model.
    fresh.config.dtype = str(fresh.config.dtype).removeprefix("torch.")
    fresh.config.architectures = [type(fresh).__name__]
    fresh.config.save_pretrained(folder)
    if fresh.can_generate():
        _source_generation_config(src).save_pretrained(folder)


def _source_generation_config(src: TensorSource):
    """The generation config a model loaded from `src` carries (`from_pretrained` reads
    generation_config.json, else builds one from config.json; a GGUF one from its config)."""
    from transformers import GenerationConfig

    folder = src.path
    if folder.is_dir():
        try:
            return GenerationConfig.from_pretrained(folder, _from_auto=True)
        except OSError:
            return GenerationConfig.from_pretrained(folder, config_file_name="config.json",
                                                    _from_auto=True, _from_model_config=True)
    return GenerationConfig.from_model_config(src.config)


def _resolve_tokenizer(src: TensorSource, tokenizer: Any):
    """The tokenizer to save (None: none): False -> none, None -> the source's own."""
    if tokenizer is False:
        return None
    return _source_tokenizer(src) if tokenizer is None else tokenizer


def _source_tokenizer(src: TensorSource):
    """The tokenizer the app loads with the model (`analysis.models.load_model`), with the
    same padding fix, so the export carries the same tokenizer files."""
    try:
        return checkpoint_tokenizer(src.path)
    except (OSError, ValueError, TypeError) as e:
        raise ExportError(
            f"cannot load the tokenizer of {str(src.path)!r} ({e}); pass tokenizer=False to "
            "export the weights without one, or pass the tokenizer to save") from e
