"""Width pruning: neuron scores, kept neurons, quality over keep ratios, width exports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from analysis.architectures import get_architecture
from analysis.calibration import load_calibration
from analysis.settings import CalibrationSettings
from analysis.taylor import NeuronScores, intermediate_size, mlp_modules, neuron_scores
from entrodrop.service.models import MODEL_LOCK, Model, Progress, StreamedModel, torch_model
from entrodrop.service.validate import (
    ModelShape,
    check_settings,
    check_width_ratios,
    reading_calibration,
    shape_of_config,
)
from pruning.evaluate import evaluate_quality
from pruning.gguf_export import (
    ExportFormat,
    GGUFType,
    check_format,
    check_gguf_type,
    export_as_gguf,
    source_gguf,
)
from pruning.manifest import width_manifest
from pruning.streaming import stream_export_width, stream_neuron_scores, stream_quality
from pruning.width import (
    KeepMode,
    WidthPruningError,
    export_width_pruned,
    keep_indices,
    width_pruned,
)


def hidden_size(model: Model) -> int:
    """D, the model's hidden size (the unit of the per-layer keep ratio)."""
    config = model.config if isinstance(model, StreamedModel) else model.model.config
    hidden = shape_of_config(model.spec, config).hidden
    if hidden is None:
        raise WidthPruningError(f"{model.spec}: its config names no hidden size "
                                "(hidden_size, n_embd or d_model)")
    return hidden


def width_scores(loaded: Model, cal: CalibrationSettings, criteria: Sequence[str], *,
                 batch_size: int = 4, progress: Progress | None = None) -> dict[str, NeuronScores]:
    """Importance of every MLP neuron for each criterion.

    The calibration windows are drawn once for all criteria; each data criterion costs one
    forward + backward per batch, `magnitude` needs no data."""
    criteria = list(criteria)
    cal = cal.validate().resolved(loaded.on_gpu)
    check_settings(None, [cal], batch_size=batch_size, loaded=loaded)
    out = {}
    with MODEL_LOCK:
        ids = None
        if any(c != "magnitude" for c in criteria):
            with reading_calibration(cal):
                ids = load_calibration(cal, loaded.tokenizer, model=torch_model(loaded),
                                       on_gpu=loaded.on_gpu).input_ids
        for i, criterion in enumerate(criteria):

            def step(done: int, total: int, i=i, criterion=criterion) -> None:
                if progress is not None:
                    progress((i + done / max(total, 1)) / len(criteria),
                             f"{criterion}: {done} of {total} windows")

            def stage(frac: float, msg: str, i=i, criterion=criterion) -> None:
                if progress is not None:
                    progress((i + frac) / len(criteria), f"{criterion}: {msg}")

            if isinstance(loaded, StreamedModel):
                out[criterion] = stream_neuron_scores(
                    loaded.spec, ids, criterion, device=loaded.device, dtype=loaded.dtype,
                    batch_size=batch_size, progress=stage)
            else:
                out[criterion] = neuron_scores(loaded.model, ids, criterion,
                                               batch_size=batch_size, progress=step)
            if progress is not None:
                progress((i + 1) / len(criteria), f"{criterion}: done")
    return out


def width_keep(scores: NeuronScores | Mapping, ratio: float, hidden: int,
               mode: KeepMode = "per_layer"):
    """Kept neuron indices per layer; `scores` is NeuronScores or its to_dict() form."""
    if not isinstance(scores, NeuronScores):
        scores = NeuronScores.from_dict(dict(scores))
    return keep_indices(scores, ratio, hidden_size=hidden, mode=mode)


def width_ratio_range(loaded: Model) -> tuple[float, float, int, int]:
    """(smallest, largest ratio, hidden size D, intermediate size I) for the ratio slider:
    the per-layer mode keeps ratio * D neurons, so ratio runs up to I / D."""
    body = loaded.skeleton if isinstance(loaded, StreamedModel) else loaded.model
    layout = get_architecture(body).mlp
    with MODEL_LOCK:  # another session may have the MLPs sliced for a moment
        sizes = [intermediate_size(down, layout) for _, down in mlp_modules(body)]
    hidden = hidden_size(loaded)
    return round(1.0 / hidden, 4), min(sizes) / hidden, hidden, min(sizes)


def width_curves(loaded: Model, held_out_ids, scores: Mapping[str, NeuronScores | Mapping],
                 ratios: Sequence[float], *, mode: KeepMode = "per_layer", batch_size: int = 4,
                 progress: Progress | None = None) -> list[dict]:
    """Perplexity, KL and top-1 agreement per criterion and keep ratio, side by side.

    The unpruned model runs once per batch as the reference for every variant."""
    hidden = hidden_size(loaded)
    keeps, plan = {}, []
    for criterion, data in scores.items():
        for ratio in ratios:
            name = f"{criterion}@{ratio:g}"
            keeps[name] = width_keep(data, ratio, hidden, mode)
            plan.append((criterion, ratio, name))

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"evaluated batch {done} of {total}")

    with MODEL_LOCK:
        if isinstance(loaded, StreamedModel):
            results = stream_quality(
                loaded.spec, held_out_ids, {n: ("width", k) for n, k in keeps.items()},
                device=loaded.device, dtype=loaded.dtype, batch_size=batch_size,
                progress=progress)
        else:
            model = loaded.model
            variants = {n: (lambda keep=k: width_pruned(model, keep)) for n, k in keeps.items()}
            results = evaluate_quality(model, held_out_ids, variants, batch_size=batch_size,
                                       progress=step)
    rows = [{"criterion": "unpruned", "ratio": None, **results["unpruned"].to_dict()}]
    return rows + [{"criterion": c, "ratio": r, **results[n].to_dict()} for c, r, n in plan]


def export_width(loaded: Model, scores: NeuronScores | Mapping, cal: CalibrationSettings,
                 criterion: str, ratio: float, out_dir, *, mode: KeepMode = "per_layer",
                 measured: Mapping | None = None, overwrite: bool = False,
                 fmt: ExportFormat = "hf", gguf_type: GGUFType = "f16") -> Path:
    """Write the width-pruned model and its manifest; `fmt` "gguf" writes one GGUF file
    of `gguf_type` for llama.cpp instead of a Hugging Face folder."""
    fmt, gguf_type = check_format(fmt), check_gguf_type(gguf_type)
    if not isinstance(scores, NeuronScores):
        scores = NeuronScores.from_dict(dict(scores))
    _low, _high, hidden, inter = width_ratio_range(loaded)
    # A ratio that keeps every neuron would export the unpruned model labelled as pruned.
    check_width_ratios(ModelShape(loaded.spec, hidden=hidden, intermediate=inter), [ratio], mode)
    keep = width_keep(scores, ratio, hidden, mode)
    manifest = width_manifest(
        source_model=loaded.spec, source_identity=loaded.identity,
        calibration=asdict(cal.validate().resolved(loaded.on_gpu)), criterion=criterion,
        ratio=ratio, mode=mode, layer_importance=scores.layer_totals(),
        kept_per_layer=[len(k) for k in keep], measured=measured)
    manifest["format"] = fmt
    if fmt == "gguf":
        return export_as_gguf(lambda folder: _export_width_hf(loaded, keep, folder, manifest, False),
                              out_dir, gguf_type=gguf_type,
                              tokenizer_gguf=source_gguf(loaded.spec), overwrite=overwrite)
    return _export_width_hf(loaded, keep, out_dir, manifest, overwrite)


def _export_width_hf(loaded: Model, keep, out_dir, manifest: dict, overwrite: bool) -> Path:
    if isinstance(loaded, StreamedModel):
        return stream_export_width(loaded.spec, out_dir, keep, manifest, overwrite=overwrite,
                                   dtype=loaded.dtype, tokenizer=loaded.tokenizer)
    with MODEL_LOCK:
        return export_width_pruned(loaded.model, loaded.tokenizer, keep, out_dir,
                                   manifest=manifest, overwrite=overwrite)
