"""Every setting checked against the model before any weight is loaded or data is read.

`analysis.settings` checks each setting on its own (ranges, types); this module checks them
against the model they will run on, from its config alone (`config.json`, a GGUF header,
or a model already in memory):

- T (seqlen) within the model's positions (`max_position_embeddings` / `n_positions`):
  learned position tables fail with an IndexError beyond it, and rotary models are refused
  there too rather than run outside what they were trained for;
- the activations of one batch against the free memory of the device;
- width keep ratios that would keep every neuron (an unpruned copy labelled pruned).

A model whose config cannot be read cheaply (a hub id not downloaded, a damaged folder) is
not refused here: loading it reports what is wrong. Errors are `SettingsError`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.paths import check_input_file
from analysis.settings import CalibrationSettings, EstimatorSettings, ModelSettings, SettingsError
from pruning.width import requested_neurons

GIB = 2**30
ACTIVATION_FACTOR = 8
"""Float32 copies of one batch's hidden states [B, T, D] that a forward pass holds besides the
3 per layer the capture keeps (layer input, attention output, layer output): the MLP's
intermediate activations (I = 2.5-4 D) and the residual stream."""


@dataclass(frozen=True)
class ModelShape:
    """What the checks need from a model's config (None: the config does not say)."""

    spec: str
    positions: int | None = None
    hidden: int | None = None
    intermediate: int | None = None
    layers: int | None = None
    heads: int | None = None
    vocab: int | None = None


# --------------------------------------------------------------------------- reading configs


def model_shape(spec: str) -> ModelShape | None:
    """The shape of `spec` from its config file or GGUF header, without loading anything and
    without any download; None when neither can be read cheaply."""
    from analysis import models

    try:
        r = models.resolve_spec(spec)
        if r.kind == "demo":
            path = models.demo_gguf_path(r.spec[len("demo:"):], assemble=False)
        elif r.kind == "gguf":
            path = r.path / r.gguf_file
        elif r.kind == "folder":
            path = r.path / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(r.spec, "config.json")
            path = Path(found) if isinstance(found, str) else None
        if path is None or not path.is_file():
            return None
        if path.suffix.lower() == ".gguf":
            return _gguf_shape(spec, path)
        return shape_of_config(spec, json.loads(path.read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - unreadable here: the load says why, with its own message
        return None


def shape_of_config(spec: str, config) -> ModelShape:
    """The shape of a transformers config object or a `config.json` dict."""
    if not isinstance(config, dict):
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        config = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    elif isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}

    def first(*keys: str) -> int | None:
        for key in keys:
            value = config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    hidden = first("hidden_size", "n_embd", "d_model")
    intermediate = first("intermediate_size", "n_inner", "ffn_dim")
    if intermediate is None and config.get("model_type") == "gpt2" and hidden is not None:
        intermediate = 4 * hidden  # GPT-2's n_inner=None means 4 x n_embd
    return ModelShape(spec, positions=first("max_position_embeddings", "n_positions", "n_ctx"),
                      hidden=hidden, intermediate=intermediate,
                      layers=first("num_hidden_layers", "n_layer"),
                      heads=first("num_attention_heads", "n_head"), vocab=first("vocab_size"))


def shape_of_loaded(model) -> ModelShape:
    """The shape of a model the service holds (loaded whole or streamed)."""
    config = getattr(model, "config", None)
    if config is None:
        config = model.model.config
    return shape_of_config(model.spec, config)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_KEYS = {"context_length": "positions", "embedding_length": "hidden",
              "feed_forward_length": "intermediate", "block_count": "layers",
              "attention.head_count": "heads", "vocab_size": "vocab"}


def _gguf_shape(spec: str, path: Path) -> ModelShape | None:
    """The shape from a GGUF file's key-value header, read up to the keys it needs (the
    tokenizer's arrays come after them in llama.cpp's files); the tensors are never read."""
    found: dict[str, int] = {}
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            return None
        _version, _tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        arch = None
        for _ in range(n_kv):
            key = _gguf_string(f)
            value = _gguf_value(f, struct.unpack("<I", f.read(4))[0])
            if key == "general.architecture":
                arch = value
            elif arch is not None and key.startswith(arch + "."):
                name = _GGUF_KEYS.get(key[len(arch) + 1:])
                if name is not None and isinstance(value, int):
                    found[name] = value
            if len(found) == len(_GGUF_KEYS):
                break
    return ModelShape(spec, **found)


def _gguf_string(f) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", errors="replace")


def _gguf_value(f, kind: int):
    if kind in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        return _gguf_string(f)
    if kind == 9:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in _GGUF_SCALARS:  # skipped, not parsed: arrays hold the vocabulary
            f.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
        else:
            for _ in range(count):
                _gguf_value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


# --------------------------------------------------------------------------- the checks


def check_seqlen(shape: ModelShape | None, seqlen: int | None) -> None:
    """T must fit the model's positions."""
    if shape is None or shape.positions is None or seqlen is None:
        return
    if seqlen > shape.positions:
        raise SettingsError(
            f"seqlen (T) = {seqlen} is longer than the {shape.positions} positions of "
            f"{shape.spec} (its config's max_position_embeddings / n_positions); use a T of at most "
            f"{shape.positions}")


def activation_bytes(shape: ModelShape, batch: int, seqlen: int, *,
                     logits: bool = False) -> int | None:
    """Estimated peak bytes of one forward pass over `batch` windows of `seqlen` tokens:
    the capture's hidden states (3 per layer) and the pass's own activations, [B, T, D] each
    in float32; the knn estimator's and attention's [T, T] matrices; and with `logits` the
    [B, T, vocab] logits of the pruned and the reference model (evaluation)."""
    if shape.hidden is None or shape.layers is None:
        return None
    b, t = int(batch), int(seqlen)
    total = 4 * b * t * shape.hidden * (3 * shape.layers + ACTIVATION_FACTOR)
    total += 4 * b * t * t * (2 + (shape.heads or 1))
    if logits and shape.vocab is not None:
        total += 4 * b * t * shape.vocab * 2
    return total


def check_memory(shape: ModelShape | None, batch: int, seqlen: int, device: str, *,
                 logits: bool = False, free: int | None = None) -> None:
    """Refuse a batch whose activations alone would not fit in the free memory of `device`
    (it would fail in the allocator after the model has loaded)."""
    if shape is None:
        return
    need = activation_bytes(shape, batch, seqlen, logits=logits)
    if need is None:
        return
    if free is None:
        from analysis.models import resolve_device
        from analysis.streaming.memory import free_bytes

        try:
            resolved = resolve_device(device)
            free = free_bytes(resolved)
        except Exception:  # noqa: BLE001 - no measurement, no refusal
            return
        device = str(resolved)
    if need > free:
        raise SettingsError(
            f"one batch of {batch} window(s) of {seqlen} tokens needs about "
            f"{need / GIB:.1f} GiB for its activations on {shape.spec}, and {free / GIB:.1f} "
            f"GiB are free on {device}; lower the batch size, N (samples) or T (seqlen)")


def check_width_ratios(shape: ModelShape | None, ratios: Iterable[float], mode: str, *,
                       export: bool = True) -> None:
    """Each ratio must be a positive number that asks for at most the neurons a layer has.
    For an export (`export`) it must also prune at least one: a ratio keeping every neuron
    would write the unpruned model labelled as pruned. Curves may take the full width as
    their reference point (uniform 1)."""
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not 0.0 < float(ratio) < float("inf"):
            raise SettingsError(f"width ratio must be a positive number; got {ratio!r}")
        if mode == "uniform" and (ratio > 1 or (export and ratio >= 1)):
            raise SettingsError(
                f"width ratio {ratio:g} keeps every neuron in mode 'uniform' (a keep-fraction "
                f"{'below 1' if export else 'up to 1'} is needed)"
                + ("; the export would be the unpruned model" if export else ""))
        if shape is None or shape.hidden is None or shape.intermediate is None:
            continue
        keep = requested_neurons(ratio, mode, shape.hidden, shape.intermediate)
        if keep > shape.intermediate or (export and keep >= shape.intermediate):
            most = shape.intermediate / shape.hidden if mode == "per_layer" else 1.0
            raise SettingsError(
                f"width ratio {ratio:g} keeps all {shape.intermediate} MLP neurons of every "
                f"layer of {shape.spec} (mode {mode!r}: {keep} asked for), so nothing would "
                f"be pruned; use a ratio below {most:.4g}")


def check_settings(model: ModelSettings | None, cals: Sequence[CalibrationSettings] = (), *,
                   estimators: EstimatorSettings | None = None, batch_size: int | None = None,
                   width_ratios: Iterable[float] = (), width_mode: str = "per_layer",
                   width_export: bool = True, held_out: int | None = None, loaded=None) -> ModelShape | None:
    """Check every setting against the model (its config, or `loaded`) before any weight is
    loaded or data read; raises SettingsError. Returns the shape it checked against.
    `model` may be None when `loaded` is given."""
    if loaded is not None:
        shape, on_gpu, device = shape_of_loaded(loaded), loaded.on_gpu, str(loaded.device)
    else:
        model.validate()
        shape, on_gpu, device = model_shape(model.spec), _on_gpu(model.device), model.device
    batch = batch_size if batch_size is not None else (
        estimators.batch_size if estimators is not None else None)
    for cal in cals:
        cal = cal.validate().resolved(on_gpu)
        if is_file_spec(cal.spec):
            check_input_file(cal.spec, "calibration file")
        if estimators is not None:
            estimators.validate(seqlen=cal.seqlen)
        check_seqlen(shape, cal.seqlen)
        if batch is not None:
            windows = [cal.samples] + ([held_out] if held_out else [])
            check_memory(shape, min(batch, max(windows)), cal.seqlen, device,
                         logits=bool(held_out))
    check_width_ratios(shape, list(width_ratios), width_mode, export=width_export)
    return shape


def is_file_spec(spec: str) -> bool:
    """A calibration spec that names a file (not builtin: or preset:)."""
    return not spec.strip().startswith(("builtin:", "preset:"))


def reading_calibration(cal: CalibrationSettings):
    """A context that turns a failure to read a calibration file into one error naming it."""
    from contextlib import nullcontext

    from analysis.paths import guarded_read

    return guarded_read(cal.spec, "calibration file") if is_file_spec(cal.spec) else nullcontext()


def _on_gpu(device: str) -> bool:
    from analysis.models import is_gpu, resolve_device

    try:
        return is_gpu(resolve_device(device))
    except Exception:  # noqa: BLE001 - a device that is not there is the load's to report
        return False
