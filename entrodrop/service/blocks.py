"""Block pruning: stage plans, decisions, what pruning costs and saves, and block exports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from analysis.architectures import count_parameters, weight_bytes
from analysis.models import model_identity
from analysis.paths import cache_dir
from analysis.profile import Profile
from analysis.settings import SPEED_PROMPT_LEN, Estimator, Granularity, ModelSettings
from analysis.streaming.sources import open_source
from entrodrop.service.engine_cache import cached_gguf, entry_key
from entrodrop.service.models import MODEL_LOCK, Model, Progress, StreamedModel, whole_model
from pruning.apply import pruned
from pruning.decision import Decision, decide
from pruning.evaluate import UNPRUNED, EvaluationError, Orders, evaluate_quality, quality_curves
from pruning.export import check_export_target as export_target_check
from pruning.export import export_pruned
from pruning.gguf_export import (
    ExportFormat,
    GGUFType,
    check_format,
    check_gguf_type,
    export_as_gguf,
    folder_to_gguf,
    source_gguf,
)
from pruning.greedy import GreedyResult, greedy_cost, greedy_order
from pruning.llamacpp import llama_cpp, measure_gguf_speed
from pruning.manifest import RANK_STRING_NOTE, TOOL, block_manifest
from pruning.ranking import BASELINE, Criterion
from pruning.speed import generate_side_by_side, measure_speed
from pruning.stages import StagePlan, StagePolicy, plan_stages
from pruning.streaming import stream_export_blocks, stream_quality, stream_quality_curves
from pruning.vllm_layout import (
    DEFAULT_LAYOUT,
    ExportLayout,
    LayoutError,
    check_layout,
    vllm_attn_plan,
)

DEFAULT_STAGE_ESTIMATOR: Estimator = "bucket"
"""Whose entropy curve sets the automatic S_start. The knn curve starts very low at Z_0
(repeated tokens have identical embeddings, so log r hits its floor), which puts j* at 0."""


def stage_plan(profile: Profile, *, policy: StagePolicy = "auto", s_start: int | None = None,
               allow_last: bool = False,
               stage_estimator: Estimator = DEFAULT_STAGE_ESTIMATOR) -> StagePlan:
    """The stage plan of one profile; `s_start` is used only under the 'manual' policy, and
    the automatic one comes from `stage_estimator`'s curve (null points are skipped)."""
    return plan_stages(profile.num_layers, policy=policy, curve=profile.curve(stage_estimator),
                       s_start=s_start if policy == "manual" else None, allow_last=allow_last)


def decision(profile: Profile, granularity: Granularity, criterion: Criterion, k: int,
             plan: StagePlan, *, greedy: GreedyResult | None = None) -> Decision:
    """The full prune order of one criterion under `plan`, and its first k blocks
    (`greedy`: the perplexity-greedy search, needed for ppl_greedy only)."""
    return decide(profile, granularity, criterion, k, plan, greedy=greedy)


def prune_list_record(chosen: Decision) -> dict:
    """One decision's prune list as `entrodrop prune-list` prints it and the dashboard's
    JSON download holds it: granularity, criterion, k, the full order, the pruned blocks,
    s_start and policy, the criterion's details where it has any (a random seed, the
    angular span, the perplexity-greedy search), the rank string (with what its format
    means, as in an export's manifest) and the prunable blocks."""
    return {**chosen.to_json(), "rank_string": chosen.rank_string(),
            "rank_string_format": RANK_STRING_NOTE, "prunable": list(chosen.plan.prunable)}


def greedy_search(loaded: Model, selection_ids, granularity: Granularity, plan: StagePlan, *,
                  steps: int | None = None, batch_size: int = 4,
                  progress: Progress | None = None) -> GreedyResult:
    """The perplexity-greedy order (ppl_greedy) of the plan's prunable blocks, `steps`
    long (default: all of them), chosen on `selection_ids` [N, T] (use calibration windows,
    not the held-out ones the curves are measured on). Each step evaluates every remaining
    block in one pass over the windows; `progress` gets the step and an estimate of the time
    left. Costs `greedy_cost(len(plan.prunable), steps)` variant passes."""
    if granularity not in ("layer", "attn"):
        raise EvaluationError(f"granularity must be 'layer' or 'attn'; got {granularity!r}")
    base: list[float] = []  # the unpruned figure comes with the first step's pass

    def evaluate(sets, step_progress):
        with MODEL_LOCK:
            if isinstance(loaded, StreamedModel):
                res = stream_quality(loaded.spec, selection_ids,
                                     {n: (granularity, sorted(b)) for n, b in sets.items()},
                                     **_stream_kw(loaded, batch_size,
                                                  lambda f, _m: step_progress(f)))
            else:
                model = loaded.model
                res = evaluate_quality(
                    model, selection_ids,
                    {n: _pruned_variant(model, granularity, b) for n, b in sets.items()},
                    batch_size=batch_size, progress=lambda d, t: step_progress(d / max(t, 1)))
        base.append(res[UNPRUNED].perplexity)
        return {n: q.perplexity for n, q in res.items()}

    n, t = (int(v) for v in selection_ids.shape)
    result = greedy_order(evaluate, granularity, plan.prunable, steps=steps,
                          windows=(n, t), progress=progress)
    return replace(result, base_perplexity=base[0])


def greedy_estimate(plan: StagePlan, steps: int | None = None) -> dict:
    """How many variant passes over the selection windows a greedy search costs, before it
    runs (each costs about one forward pass of the windows)."""
    steps = len(plan.prunable) if steps is None else steps
    return {"candidates": len(plan.prunable), "steps": steps,
            "variant_passes": greedy_cost(len(plan.prunable), steps)}


def _pruned_variant(model, granularity: Granularity, blocks: Sequence[int]):
    blocks = list(blocks)
    return lambda: pruned(model, granularity, blocks)


def quality_over_k(loaded: Model, held_out_ids, orders: Mapping[str, Orders],
                   granularity: Granularity, ks: Sequence[int], *, batch_size: int = 4,
                   progress: Progress | None = None) -> list[dict]:
    """Perplexity, KL and top-1 agreement after pruning the first K blocks of each order,
    side by side for every K (the unpruned model runs once per batch as the reference).
    An order may also be {K: prune set} (`Decision.prune_sets()`), for criteria whose sets
    are not nested. A K that some criterion does not decide (larger than the shortest
    order) is left out rather than failing the whole curve."""
    limit = min(max(o) if isinstance(o, Mapping) else len(o) for o in orders.values())
    ks = [k for k in ks if k <= limit]

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"evaluated batch {done} of {total}")

    orders = {c: (dict(o) if isinstance(o, Mapping) else list(o)) for c, o in orders.items()}
    with MODEL_LOCK:
        if isinstance(loaded, StreamedModel):
            return stream_quality_curves(loaded.spec, held_out_ids, granularity, orders, list(ks),
                                         **_stream_kw(loaded, batch_size, progress))
        return quality_curves(loaded.model, held_out_ids, granularity, orders, list(ks),
                              batch_size=batch_size, progress=step)


def model_figures(loaded: Model, held_out_ids, *, batch_size: int = 4) -> dict:
    """The unpruned model's perplexity on the held-out windows, its parameter count and
    weight bytes (tied weights counted once)."""
    with MODEL_LOCK:
        if isinstance(loaded, StreamedModel):
            base = stream_quality(loaded.spec, held_out_ids, {},
                                  **_stream_kw(loaded, batch_size, None))[UNPRUNED]
        else:
            base = evaluate_quality(loaded.model, held_out_ids, {}, batch_size=batch_size)[UNPRUNED]
        body = _body(loaded)
        return {"parameters": count_parameters(body), "weight_bytes": weight_bytes(body),
                "perplexity": base.perplexity, "tokens": base.tokens}


def quality_of(loaded: Model, held_out_ids, granularity: Granularity,
               blocks: Sequence[int], *, batch_size: int = 4) -> dict:
    """Perplexity, KL and top-1 agreement of the model with `blocks` pruned, against the
    unpruned model on the same windows (with the number of predicted tokens)."""
    blocks = list(blocks)
    if isinstance(loaded, StreamedModel):
        with MODEL_LOCK:
            return stream_quality(loaded.spec, held_out_ids, {"pruned": (granularity, blocks)},
                                  **_stream_kw(loaded, batch_size, None))["pruned"].to_dict()
    model = loaded.model
    with MODEL_LOCK:
        q = evaluate_quality(model, held_out_ids,
                             {"pruned": lambda: pruned(model, granularity, blocks)},
                             batch_size=batch_size)["pruned"]
    return q.to_dict()


def check_export_target(out_dir, *, overwrite: bool = False) -> Path:
    """Refuse an export target before any expensive work (exists, not ours, not writable)."""
    return export_target_check(out_dir, overwrite=overwrite)


def check_export_layout(settings: ModelSettings, granularity: Granularity, layout: str,
                        fmt: str = "hf") -> None:
    """Refuse, from the model's config alone and before the analysis runs, a layout the
    export could not be written in (the vLLM layout of a family vLLM cannot run that way, or
    in a GGUF file). A config that cannot be read from local files is left to the export,
    which checks again."""
    check_layout_format(layout, check_format(fmt))
    if check_layout(layout) != "vllm" or granularity != "attn":
        return
    try:
        config = open_source(settings.spec).config
    except Exception:  # noqa: BLE001 - unreadable here: the load and the export say why
        return
    vllm_attn_plan(config, ())


def parameter_savings(loaded: Model, granularity: Granularity,
                      blocks: Sequence[int]) -> dict:
    """Parameters and weight bytes before and after pruning `blocks` (no forward pass; a
    streamed model is pruned on its weightless skeleton)."""
    body = _body(loaded)
    with MODEL_LOCK:
        base_p, base_b = count_parameters(body), weight_bytes(body)
        with pruned(body, granularity, list(blocks)):
            new_p, new_b = count_parameters(body), weight_bytes(body)
    return {"params_base": base_p, "params_pruned": new_p, "bytes_base": base_b,
            "bytes_pruned": new_b, "saved_fraction": 1 - new_p / base_p if base_p else 0.0}


def speed(loaded: Model, granularity: Granularity, blocks: Sequence[int], *,
          prompt_len: int = SPEED_PROMPT_LEN, new_tokens: int = 32, repeats: int = 3) -> dict:
    """Prefill and decode speed of the unpruned and the pruned model, side by side."""
    model = whole_model(loaded, "measuring speed").model
    with MODEL_LOCK:
        result = measure_speed(model, lambda: pruned(model, granularity, list(blocks)),
                               prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
    return result.to_dict()


def generate(loaded: Model, granularity: Granularity, blocks: Sequence[int], prompt: str,
             *, max_new_tokens: int, chat: bool = False) -> dict:
    """Greedy continuations of `prompt` by the unpruned and the pruned model."""
    model = whole_model(loaded, "generating text").model
    with MODEL_LOCK:
        return generate_side_by_side(model, loaded.tokenizer, prompt,
                                     lambda: pruned(model, granularity, list(blocks)),
                                     max_new_tokens=max_new_tokens, chat=chat)


def export_blocks(loaded: Model, profile: Profile, chosen: Decision, out_dir, *,
                  measured: Mapping | None = None, benchmarks: Mapping | None = None,
                  overwrite: bool = False, progress: Progress | None = None,
                  layout: ExportLayout = DEFAULT_LAYOUT, fmt: ExportFormat = "hf",
                  gguf_type: GGUFType = "f16") -> Path:
    """Write the model with `chosen.blocks` pruned, and its manifest (with the baseline
    criterion's choice at the same k, any figures measured for this prune set, and any
    lm-eval scores of it, `pruning.benchmarks.manifest_record`). `layout`: `transformers`,
    or `vllm` for a folder vLLM runs too (`pruning.vllm_layout.ExportLayout`). `fmt` "gguf"
    writes one GGUF file of `gguf_type` for llama.cpp instead of a Hugging Face folder (the
    same tensors and manifest, with the format recorded)."""
    fmt, gguf_type = check_format(fmt), check_gguf_type(gguf_type)
    check_layout_format(layout, fmt)
    baseline = decide(profile, chosen.granularity, BASELINE, chosen.k, chosen.plan)
    manifest = {**block_manifest(profile, chosen, baseline, measured, benchmarks), "format": fmt}
    if fmt == "gguf":
        def write_hf(folder: Path) -> None:
            _export_blocks_hf(loaded, chosen.granularity, chosen.blocks, folder, manifest,
                              False, None)

        return export_as_gguf(write_hf, out_dir, gguf_type=gguf_type,
                              tokenizer_gguf=source_gguf(loaded.spec), overwrite=overwrite,
                              progress=progress)
    return _export_blocks_hf(loaded, chosen.granularity, chosen.blocks, out_dir, manifest,
                             overwrite, progress, layout)


def check_layout_format(layout: str, fmt: str) -> None:
    """A vLLM layout is a Hugging Face folder; a GGUF file has llama.cpp's own layout."""
    if check_layout(layout) == "vllm" and fmt == "gguf":
        raise LayoutError("the vllm layout is a Hugging Face folder and cannot be written as "
                          "GGUF; use --format hf with --layout vllm, or --format gguf alone")


def _export_blocks_hf(loaded: Model, granularity: Granularity, blocks: Sequence[int], out_dir,
                      manifest: dict, overwrite: bool, progress: Progress | None,
                      layout: ExportLayout = DEFAULT_LAYOUT) -> Path:
    if isinstance(loaded, StreamedModel):
        # Tensors are copied from the checkpoint one by one, in the dtype an in-memory load
        # would have exported.
        return stream_export_blocks(loaded.spec, out_dir, granularity, list(blocks), manifest,
                                    overwrite=overwrite, progress=progress, dtype=loaded.dtype,
                                    tokenizer=loaded.tokenizer, layout=layout)
    with MODEL_LOCK:
        return export_pruned(loaded.model, loaded.tokenizer, out_dir, granularity=granularity,
                             blocks=list(blocks), manifest=manifest, overwrite=overwrite,
                             progress=progress, layout=layout)


def base_gguf(loaded: Model, granularity: Granularity, gguf_type: GGUFType = "f16", *,
              progress: Progress | None = None) -> Path:
    """The unpruned model as a GGUF file of `gguf_type` (what `engine_speed` times the
    pruned one against), written once per model content and settings and then reused
    (`engine_cache`)."""
    gguf_type = check_gguf_type(gguf_type)
    # A streamed model's export reads the files now, so their identity is taken now; a model
    # in memory exports the weights it was loaded with, which its identity describes.
    identity = (model_identity(loaded.spec) if isinstance(loaded, StreamedModel)
                else loaded.identity)
    tokenizer = source_gguf(loaded.spec)
    key = entry_key(identity=identity, dtype=str(loaded.dtype), granularity=granularity,
                    gguf_type=gguf_type, tokenizer_gguf=None if tokenizer is None else str(tokenizer))

    def write(path: Path) -> None:
        if progress is not None:
            progress(0.0, "writing the unpruned model as GGUF")
        _write_gguf(loaded, granularity, [], path, gguf_type)

    return cached_gguf(key, write)


def _write_gguf(loaded: Model, granularity: Granularity, blocks: Sequence[int], path: Path,
                gguf_type: GGUFType) -> None:
    """`loaded` with `blocks` pruned, as the GGUF file `path`: a Hugging Face export beside
    it (removed after), converted tensor by tensor."""
    hf = path.with_name(f"{path.stem}-hf")
    _export_blocks_hf(loaded, granularity, list(blocks), hf, {"tool": TOOL}, False, None)
    folder_to_gguf(hf, path, gguf_type=gguf_type, tokenizer_gguf=source_gguf(loaded.spec))
    shutil.rmtree(hf)


def engine_speed(loaded: Model, granularity: Granularity, blocks: Sequence[int], *,
                 gguf_type: GGUFType = "f16", prompt_len: int = SPEED_PROMPT_LEN, new_tokens: int = 32,
                 repeats: int = 3, progress: Progress | None = None) -> dict:
    """Prefill and decode speed of the pruned model against the unpruned one in llama.cpp
    (GGUF files of `gguf_type`: the pruned one written to a temporary folder and deleted
    afterwards, the unpruned one cached by `base_gguf`), interleaved, as `speed` measures
    them in transformers. Works on a streamed model too: the exports stream, and llama.cpp
    holds the weights itself."""
    llama_cpp()  # a missing engine fails before minutes of export work
    gguf_type = check_gguf_type(gguf_type)
    report = progress or (lambda frac, msg: None)
    root = cache_dir() / "engines"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        base = Path(tmp) / "base.gguf"
        # A link of its own: another process evicting the cached file cannot pull it away
        # before llama.cpp opens it.
        os.link(base_gguf(loaded, granularity, gguf_type, progress=report), base)
        report(0.4, "writing the pruned model as GGUF")
        pruned_file = Path(tmp) / "pruned.gguf"
        _write_gguf(loaded, granularity, blocks, pruned_file, gguf_type)
        report(0.8, "timing both in llama.cpp")
        result = measure_gguf_speed(pruned_file, base, prompt_len=prompt_len,
                                    new_tokens=new_tokens, repeats=repeats)
    report(1.0, "done")
    return {**result.to_dict(), "engine": "llama.cpp", "gguf_type": gguf_type}


def _stream_kw(model: StreamedModel, batch_size: int, progress: Progress | None) -> dict:
    return {"device": model.device, "dtype": model.dtype, "batch_size": batch_size,
            "progress": progress}


def _body(model: Model):
    """The module whose parameters are counted: the model, or a streamed model's skeleton
    (its meta parameters carry the shapes and the dtype the weights would have)."""
    return model.skeleton if isinstance(model, StreamedModel) else model.model
