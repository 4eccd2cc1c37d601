"""The thin service layer that the CLI and the dashboard both call.

It wires settings -> model -> calibration -> capture -> profile, and serves repeated
requests from the results cache without loading the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from analysis.calibration import Calibration, load_calibration, source_fingerprint
from analysis.capture import capture
from analysis.models import (
    LoadedModel,
    load_model,
    model_identity,
    resolve_device,
    resolve_dtype,
)
from analysis.profile import CacheEntryInvalid, ProfileCache, build_profile, profile_key
from analysis.settings import (
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    ModelSettings,
)

Progress = Callable[[float, str], None]

def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean the user asked for something impossible; each carries a message
    that says what and what to do next. Anything else is a bug."""
    from analysis.architectures import UnsupportedArchitecture
    from analysis.calibration import CalibrationError
    from analysis.models import ModelLoadError
    from analysis.settings import SettingsError
    from analysis.taylor import TaylorError
    from pruning.apply import PruningError
    from pruning.evaluate import EvaluationError
    from pruning.export import ExportError
    from pruning.ranking import RankingError
    from pruning.rankstring import RankStringError
    from pruning.stages import StageError
    from pruning.width import WidthPruningError

    return (ModelLoadError, CalibrationError, SettingsError, UnsupportedArchitecture,
            StageError, RankingError, RankStringError, PruningError, EvaluationError,
            ExportError, TaylorError, WidthPruningError,
            FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


# GPU work from several dashboard sessions is serialised through this lock.
MODEL_LOCK = threading.RLock()


@dataclass
class AnalysisResult:
    runs: list[dict]
    """One profile per calibration set, in request order."""
    messages: list[str] = field(default_factory=list)
    """What happened: cache hits, recomputed entries, warnings."""
    from_cache: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    """The part of `messages` a user must see even in quiet mode."""

    def warn(self, text: str) -> None:
        self.messages.append(text)
        self.warnings.append(text)

    def to_json(self) -> dict:
        """The CLI's output layout: the first run at the top level, all runs under `runs`."""
        first = self.runs[0]
        return {**first, "runs": self.runs}


def _on_gpu(model: ModelSettings) -> bool:
    return resolve_device(model.device).type in ("cuda", "mps")


def cache_parts(model: ModelSettings, cal: CalibrationSettings, opts: EstimatorSettings) -> dict:
    """Everything that defines a profile, computed without loading the model."""
    device = resolve_device(model.device)
    return {
        "model": model.spec,
        "identity": model_identity(model.spec),
        "dtype": str(resolve_dtype(model.dtype, device)),
        "calibration": asdict(cal),
        "source": source_fingerprint(cal),
        "estimators": {k: v for k, v in asdict(opts).items() if k != "batch_size"},
    }


def analyze(
    request: AnalysisRequest,
    *,
    loaded: LoadedModel | None = None,
    get_model: Callable[[ModelSettings], LoadedModel] | None = None,
    progress: Progress | None = None,
    cache: ProfileCache | None = None,
) -> AnalysisResult:
    """Profile the model on each calibration set; cached profiles are returned as they are."""
    started = time.perf_counter()
    request.model.validate()
    on_gpu = loaded.on_gpu if loaded is not None else _on_gpu(request.model)
    cals = [c.validate().resolved(on_gpu) for c in request.calibrations]
    if not cals:
        raise ValueError("at least one calibration set is needed")
    for cal in cals:
        request.estimators.validate(seqlen=cal.seqlen)
    cache = cache or ProfileCache()
    result = AnalysisResult(runs=[None] * len(cals))  # type: ignore[list-item]
    keys: list[str | None] = [None] * len(cals)
    if request.use_cache:
        for idx, cal in enumerate(cals):
            keys[idx] = profile_key(cache_parts(request.model, cal, request.estimators))
            try:
                hit = cache.get(keys[idx])
            except CacheEntryInvalid as e:
                result.warn(str(e))
                cache.discard(keys[idx])
                hit = None
            if hit is not None:
                result.runs[idx] = hit
                result.messages.append(f"{cal.spec}: loaded from cache")
    result.from_cache = [r is not None for r in result.runs]
    todo = [i for i, r in enumerate(result.runs) if r is None]
    if todo:
        if loaded is None:
            loaded = (get_model or (lambda s: load_model(s, progress=progress)))(request.model)
        for n_done, idx in enumerate(todo):
            cal = cals[idx]

            def stage(frac: float, msg: str, n_done=n_done, spec=cal.spec) -> None:
                if progress is not None:
                    progress((n_done + frac) / len(todo), f"{spec}: {msg}")

            stage(0.0, "preparing calibration windows")
            with MODEL_LOCK:
                calibration = load_calibration(cal, loaded.tokenizer, model=loaded.model, on_gpu=on_gpu)
                profile = profile_model(loaded, calibration, request.estimators, progress=stage)
            if keys[idx] is not None:
                cache.put(keys[idx], profile)
            result.runs[idx] = profile
            for w in profile["warnings"]:
                result.warn(f"{cal.spec}: warning: {w}")
    result.seconds = time.perf_counter() - started
    return result


def profile_model(
    loaded: LoadedModel,
    calibration: Calibration,
    opts: EstimatorSettings,
    *,
    progress: Progress | None = None,
) -> dict:
    """One forward pass over the calibration windows -> profile record."""
    t0 = time.perf_counter()
    acc = capture(loaded.model, calibration.input_ids, opts, progress=progress)
    n, t = calibration.input_ids.shape
    profile = build_profile(
        acc,
        model_info={"spec": loaded.spec, "architecture": loaded.architecture,
                    "identity": loaded.identity, "dtype": str(loaded.dtype).replace("torch.", ""),
                    "device": str(loaded.device)},
        calibration_info={"spec": calibration.spec, "samples": n, "seqlen": t,
                          "seed": calibration.recipe.get("seed"),
                          "fingerprint": calibration.fingerprint(), "recipe": calibration.recipe},
        opts=opts,
    )
    profile["seconds"] = time.perf_counter() - t0
    return profile


# --------------------------------------------------------------------------- decisions

DEFAULT_STAGE_ESTIMATOR = "bucket"
"""Whose entropy curve sets the automatic S_start. The knn curve starts very low at Z_0
(repeated tokens have identical embeddings, so log r hits its floor), which puts j* at 0."""


def stage_plan(profile: dict, *, policy: str = "auto", s_start: int | None = None,
               allow_last: bool = False, stage_estimator: str = DEFAULT_STAGE_ESTIMATOR):
    from pruning.stages import plan_stages

    # Null points (non-finite hidden states) become NaN, which the planner skips.
    curve = [float("nan") if v is None else v for v in profile["entropy_curve"][stage_estimator]]
    return plan_stages(
        profile["model"]["num_layers"], policy=policy, curve=curve,
        s_start=s_start if policy == "manual" else None, allow_last=allow_last,
    )


def decide(profile: dict, granularity: str, criterion: str, k: int, plan) -> dict:
    """The full prune order of one criterion, and the first k blocks of it."""
    from pruning.ranking import prune_order, prune_set, scores_for

    order = prune_order(scores_for(profile, granularity, criterion), plan)
    return {"granularity": granularity, "criterion": criterion, "k": k, "order": order,
            "blocks": prune_set(order, k), "s_start": plan.s_start, "policy": plan.policy}


def heldout_windows(cal: CalibrationSettings, loaded: LoadedModel, n: int):
    """n held-out windows of the calibration source, disjoint from the ranking windows."""
    from analysis.calibration import load_heldout

    cal = cal.resolved(loaded.on_gpu)
    with MODEL_LOCK:
        return load_heldout(cal, loaded.tokenizer, n, model=loaded.model, on_gpu=loaded.on_gpu).input_ids


def budget_curves(loaded: LoadedModel, heldout_ids, profile: dict, granularity: str,
                  criteria: tuple[str, ...], ks, plan, *, batch_size: int = 4) -> list[dict]:
    """Quality (perplexity, KL, top-1) over K for each criterion's order, side by side."""
    from pruning.evaluate import quality_curves

    orders = {c: decide(profile, granularity, c, 0, plan)["order"] for c in criteria}
    limit = min(len(o) for o in orders.values())
    ks = [k for k in ks if k <= limit]
    with MODEL_LOCK:
        return quality_curves(loaded.model, heldout_ids, granularity, orders, ks,
                              batch_size=batch_size)


def manifest_for(profile: dict, decision: dict, extra: dict | None = None) -> dict:
    block = profile["blocks"][decision["granularity"]]
    scores = block["cosine"] if decision["criterion"] == "cosine" else block["delta_h"][decision["criterion"]]
    return {
        "source_model": profile["model"]["spec"],
        "source_identity": profile["model"].get("identity"),
        "calibration": profile["calibration"],
        "estimator_settings": profile["settings"],
        "granularity": decision["granularity"],
        "criterion": decision["criterion"],
        "s_start": decision["s_start"],
        "stage_policy": decision["policy"],
        "k": decision["k"],
        "pruned_blocks": decision["blocks"],
        "prune_order": decision["order"],
        "scores": scores,
        **(extra or {}),
    }


def export_decision(loaded: LoadedModel, profile: dict, decision: dict, out_dir, *,
                    overwrite: bool = False, extra_manifest: dict | None = None,
                    progress: Progress | None = None):
    from pruning.export import export_pruned

    with MODEL_LOCK:
        return export_pruned(
            loaded.model, loaded.tokenizer, out_dir, granularity=decision["granularity"],
            blocks=decision["blocks"], manifest=manifest_for(profile, decision, extra_manifest),
            overwrite=overwrite, progress=progress,
        )


# --------------------------------------------------------------------------- width pruning


def width_scores(loaded: LoadedModel, cal: CalibrationSettings, criteria, *,
                 batch_size: int = 4, progress: Progress | None = None) -> dict:
    """Neuron importance of every MLP neuron for each criterion -> {criterion: NeuronScores}.

    The calibration windows are drawn once for all criteria; each data criterion costs one
    forward + backward per batch, `magnitude` needs no data."""
    from analysis.taylor import neuron_scores

    criteria = list(criteria)
    cal = cal.resolved(loaded.on_gpu)
    out = {}
    with MODEL_LOCK:
        ids = None
        if any(c != "magnitude" for c in criteria):
            ids = load_calibration(cal, loaded.tokenizer, model=loaded.model, on_gpu=loaded.on_gpu).input_ids
        for i, criterion in enumerate(criteria):

            def step(done: int, total: int, i=i, criterion=criterion) -> None:
                if progress is not None:
                    progress((i + done / max(total, 1)) / len(criteria),
                             f"{criterion}: {done} of {total} windows")

            out[criterion] = neuron_scores(loaded.model, ids, criterion, batch_size=batch_size,
                                           progress=step)
            if progress is not None:
                progress((i + 1) / len(criteria), f"{criterion}: done")
    return out


def width_keep(scores, ratio: float, hidden_size: int, mode: str = "per_layer"):
    """Kept neuron indices per layer; `scores` is NeuronScores or its to_dict() form.

    per_layer (SPEC): round(ratio * hidden_size) per layer; uniform: a fraction of each layer."""
    from analysis.taylor import NeuronScores
    from pruning.width import keep_indices

    if not isinstance(scores, NeuronScores):
        scores = NeuronScores.from_dict(dict(scores))
    return keep_indices(scores, ratio, hidden_size=hidden_size, mode=mode)


def hidden_size(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(config, "hidden_size", None) or config.n_embd)


def width_curves(loaded: LoadedModel, heldout_ids, scores: dict, ratios, *, mode: str = "per_layer",
                 batch_size: int = 4, progress=None) -> list[dict]:
    """Perplexity, KL and top-1 agreement per criterion and keep ratio, side by side.

    `scores` maps criterion -> NeuronScores (or its dict form). The unpruned model runs once
    per batch as the reference for every variant."""
    from pruning.evaluate import evaluate_quality
    from pruning.width import width_pruned

    model, hidden = loaded.model, hidden_size(loaded.model)
    variants, plan = {}, []
    for criterion, data in scores.items():
        for ratio in ratios:
            name = f"{criterion}@{ratio:g}"
            keep = width_keep(data, ratio, hidden, mode)
            variants[name] = (lambda keep=keep: width_pruned(model, keep))
            plan.append((criterion, ratio, name))
    with MODEL_LOCK:
        results = evaluate_quality(model, heldout_ids, variants, batch_size=batch_size, progress=progress)
    rows = [{"criterion": "unpruned", "ratio": None, **results["unpruned"].to_dict()}]
    return rows + [{"criterion": c, "ratio": r, **results[n].to_dict()} for c, r, n in plan]


def width_export(loaded: LoadedModel, cal: CalibrationSettings, criterion: str, ratio: float,
                 out_dir, *, mode: str = "per_layer", batch_size: int = 4, overwrite: bool = False,
                 progress: Progress | None = None, extra_manifest: dict | None = None):
    from pruning.width import export_width_pruned

    scores = width_scores(loaded, cal, [criterion], batch_size=batch_size, progress=progress)[criterion]
    keep = width_keep(scores, ratio, hidden_size(loaded.model), mode)
    manifest = {
        "method": "width",
        "source_model": loaded.spec,
        "source_identity": loaded.identity,
        "calibration": asdict(cal),
        "criterion": criterion,
        "ratio": ratio,
        "mode": mode,
        "layer_importance": scores.layer_totals(),
        **(extra_manifest or {}),
    }
    with MODEL_LOCK:
        return export_width_pruned(loaded.model, loaded.tokenizer, keep, out_dir,
                                   manifest=manifest, overwrite=overwrite)
