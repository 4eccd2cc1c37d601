"""Saving a pruned model as a plain Hugging Face checkpoint.

The source model is never saved directly (a GGUF-loaded model refuses `save_pretrained`)
and never modified: a fresh model of its stock transformers class is built on the meta
device from a copy of its config and given the pruned state dict without copying a tensor
(`stock_class` refuses a class that could not be rebuilt so). `provenance` is what every
export's manifest records about the source and the saved model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from analysis.architectures import count_parameters
from pruning.export_target import ExportError, UnsupportedExportError


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


def _weights_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
