"""Analysis: settings -> model -> calibration -> capture -> Profile, with the results cache.

Repeated requests are served from `cache/profiles/` without loading the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from analysis.calibration import (
    Calibration,
    list_sources,
    load_calibration,
    load_held_out,
    preview,
    source_fingerprint,
)
from analysis.calibration.files import DEFAULT_MAX_BYTES, open_file
from analysis.capture import capture
from analysis.models import (
    LoadedModel,
    is_gpu,
    load_model,
    model_identity,
    resolve_device,
    resolve_dtype,
)
from analysis.profile import CacheEntryInvalid, Profile, ProfileCache, build_profile, profile_key
from analysis.settings import (
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    ModelSettings,
    SettingsError,
)
from analysis.streaming import (
    architecture_name,
    load_tokenizer,
    open_source,
    plan_load,
    stream_capture,
)
from entrodrop.service.models import MODEL_LOCK, Model, Progress, StreamedModel, torch_model
from entrodrop.service.validate import check_settings, reading_calibration


@dataclass
class AnalysisResult:
    runs: list[Profile]
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
        runs = [p.to_json() for p in self.runs]
        return {**runs[0], "runs": runs}


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


def analysis_request(model: ModelSettings, cals: Sequence[CalibrationSettings],
                     estimators: EstimatorSettings, *, use_cache: bool = True) -> AnalysisRequest:
    """A validated request; every setting is checked before any expensive work."""
    model.validate()
    if not cals:
        raise SettingsError("choose at least one calibration source")
    for cal in cals:
        cal.validate()
        estimators.validate(seqlen=cal.seqlen)
    return AnalysisRequest(model=model, calibrations=tuple(cals), estimators=estimators,
                           use_cache=use_cache)


def analyze(
    request: AnalysisRequest,
    *,
    loaded: Model | None = None,
    get_model: Callable[[ModelSettings], Model] | None = None,
    progress: Progress | None = None,
    cache: ProfileCache | None = None,
) -> AnalysisResult:
    """Profile the model on each calibration set; cached profiles are returned as they are."""
    started = time.perf_counter()
    request.model.validate()
    on_gpu = loaded.on_gpu if loaded is not None else is_gpu(resolve_device(request.model.device))
    cals = [c.validate().resolved(on_gpu) for c in request.calibrations]
    if not cals:
        raise SettingsError("at least one calibration set is needed")
    # Against the model's config, before any cache lookup, weight or data is read.
    check_settings(request.model, cals, estimators=request.estimators, loaded=loaded)
    cache = cache or ProfileCache()
    result = AnalysisResult(runs=[None] * len(cals))  # type: ignore[list-item]
    keys: list[str | None] = [None] * len(cals)
    if request.use_cache:
        for idx, cal in enumerate(cals):
            with reading_calibration(cal):
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
            plan = plan_load(request.model)
            result.messages.append(f"{request.model.spec}: {plan.describe()}")
            # A caller's get_model (the dashboard's registry) also keeps a streamed model's
            # handle, so later pages find it; without one, streaming needs no handle.
            if plan.mode == "memory" or get_model is not None:
                loaded = (get_model or (lambda s: load_model(s, progress=progress)))(request.model)
        if loaded is None or isinstance(loaded, StreamedModel):
            _analyze_streaming(request, cals, todo, keys, cache, result, on_gpu, progress)
        else:
            _analyze_in_memory(request, loaded, cals, todo, keys, cache, result, on_gpu, progress)
    result.seconds = time.perf_counter() - started
    return result


def _stage(progress: Progress | None, n_done: int, total: int, spec: str) -> Progress:
    def stage(frac: float, msg: str) -> None:
        if progress is not None:
            progress((n_done + frac) / total, f"{spec}: {msg}")
    return stage


def _store(result: AnalysisResult, cache: ProfileCache, key: str | None, idx: int,
           profile: Profile, spec: str) -> None:
    if key is not None:
        try:
            cache.put(key, profile)
        except OSError as e:  # read-only cache, an entry that is a folder, a full disk
            # The finished result is still returned: only the cache copy is lost.
            result.warn(f"{spec}: warning: the result could not be cached in "
                        f"{cache.path(key)} ({e.strerror or e}); it is returned all the same "
                        "and computed again next time")
    result.runs[idx] = profile
    for w in profile.warnings:
        result.warn(f"{spec}: warning: {w}")


def _analyze_in_memory(request, loaded, cals, todo, keys, cache, result, on_gpu, progress):
    for n_done, idx in enumerate(todo):
        cal = cals[idx]
        stage = _stage(progress, n_done, len(todo), cal.spec)
        stage(0.0, "preparing calibration windows")
        with MODEL_LOCK, reading_calibration(cal):
            calibration = load_calibration(cal, loaded.tokenizer, model=loaded.model, on_gpu=on_gpu)
            profile = profile_model(loaded, calibration, request.estimators, progress=stage)
        _store(result, cache, keys[idx], idx, profile, cal.spec)


def _analyze_streaming(request, cals, todo, keys, cache, result, on_gpu, progress):
    """The same profiles, with one decoder layer's weights in memory at a time."""
    spec = request.model.spec
    for idx in todo:
        if cals[idx].spec.strip() == "builtin:selfgen":
            raise SettingsError(
                "builtin:selfgen generates its text with the whole model, which layer "
                "streaming never loads; pick another calibration source or load the model "
                "in memory (--load memory)")
    tokenizer = load_tokenizer(request.model)
    config = open_source(spec).config
    device = resolve_device(request.model.device)
    dtype = resolve_dtype(request.model.dtype, device)
    model_info = {"spec": spec, "architecture": architecture_name(config),
                  "identity": model_identity(spec), "dtype": str(dtype).replace("torch.", ""),
                  "device": str(device)}
    for n_done, idx in enumerate(todo):
        cal = cals[idx]
        stage = _stage(progress, n_done, len(todo), cal.spec)
        stage(0.0, "preparing calibration windows")
        started = time.perf_counter()
        with MODEL_LOCK, reading_calibration(cal):
            calibration = load_calibration(cal, tokenizer, model=None, on_gpu=on_gpu)
            acc = stream_capture(spec, calibration.input_ids, request.estimators, device=device,
                                 dtype=dtype, progress=stage)
        profile = build_profile(acc, model_info=model_info,
                                calibration_info=_calibration_info(calibration),
                                opts=request.estimators)
        profile = replace(profile, seconds=time.perf_counter() - started)
        _store(result, cache, keys[idx], idx, profile, cal.spec)


def _calibration_info(calibration: Calibration) -> dict:
    n, t = calibration.input_ids.shape
    return {"spec": calibration.spec, "samples": n, "seqlen": t,
            "seed": calibration.recipe.get("seed"),
            "fingerprint": calibration.fingerprint(), "recipe": calibration.recipe}


def profile_model(
    loaded: LoadedModel,
    calibration: Calibration,
    opts: EstimatorSettings,
    *,
    progress: Progress | None = None,
) -> Profile:
    """One forward pass over the calibration windows -> Profile."""
    t0 = time.perf_counter()
    acc = capture(loaded.model, calibration.input_ids, opts, progress=progress)
    profile = build_profile(
        acc,
        model_info={"spec": loaded.spec, "architecture": loaded.architecture,
                    "identity": loaded.identity, "dtype": str(loaded.dtype).replace("torch.", ""),
                    "device": str(loaded.device)},
        calibration_info=_calibration_info(calibration),
        opts=opts,
    )
    return replace(profile, seconds=time.perf_counter() - t0)


def held_out_windows(cal: CalibrationSettings, loaded: Model, samples: int):
    """`samples` held-out windows [N, T] of the calibration source, disjoint from the
    windows the scores were computed on."""
    cal = cal.validate().resolved(loaded.on_gpu)
    check_settings(None, [cal], loaded=loaded)
    with MODEL_LOCK, reading_calibration(cal):
        return load_held_out(cal, loaded.tokenizer, samples, model=torch_model(loaded),
                             on_gpu=loaded.on_gpu).input_ids


def selection_windows(cal: CalibrationSettings, loaded: Model, samples: int):
    """The first `samples` windows [N, T] of the calibration set the scores were computed
    on: what a search that chooses blocks by their effect (ppl_greedy) selects on, so that
    the held-out windows stay unseen by every criterion."""
    cal = cal.validate().resolved(loaded.on_gpu)
    check_settings(None, [cal], loaded=loaded)
    with MODEL_LOCK, reading_calibration(cal):
        ids = load_calibration(cal, loaded.tokenizer, model=torch_model(loaded),
                               on_gpu=loaded.on_gpu).input_ids
    return ids[:samples]


def preview_windows(loaded: Model, cal: CalibrationSettings, n: int = 3) -> dict:
    """The first n windows of a calibration set, decoded, with how they were made."""
    with MODEL_LOCK, reading_calibration(cal):
        calibration = load_calibration(cal.validate(), loaded.tokenizer,
                                       model=torch_model(loaded), on_gpu=loaded.on_gpu)
    recipe = calibration.recipe
    return {"spec": cal.spec, "shape": list(calibration.input_ids.shape),
            "mode": recipe.get("mode"), "documents": recipe.get("documents"),
            "text_column": recipe.get("text_column"),
            "windows": preview(calibration, loaded.tokenizer, n=n)}


def read_calibration_file(spec: str, text_column: str | None = None) -> dict:
    """Open a calibration file without the model: its format, text column and document
    count (pre-tokenized files: their window count). Raises the reader's user error for a
    file that cannot be calibration data, so it can be refused before it becomes a source."""
    source = open_file(spec, text_column, DEFAULT_MAX_BYTES)
    documents = (len(source.documents) if source.documents is not None
                 else int(source.input_ids.shape[0]))
    return {"spec": spec, "format": source.info.get("format"),
            "text_column": source.info.get("text_column"), "documents": documents}


def calibration_sources() -> list[dict]:
    """The built-in and preset calibration sources: name, kind, description."""
    return list_sources()
