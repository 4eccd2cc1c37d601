"""Per-session state, shared caches and error display for the dashboard pages.

Per-user choices live only in `st.session_state` (one browser session never sees another's).
What is shared between sessions is read-only or guarded: the loaded models (the service's
`ModelRegistry` in `st.cache_resource`; every operation on them goes through
`entrodrop.service`, which serialises them) and computed results (`st.cache_data`, keyed by
what defines them). The session's analysis is an `AnalysisRecord` of typed `Profile`s.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from analysis.profile import Profile
from analysis.settings import (
    ESTIMATORS,
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    ModelSettings,
    default_samples,
    default_seqlen,
)
from app.logic import inputs, provenance
from app.logic.errors import describe_error, record_internal_error
from app.logic.prune_view import PruneView
from app.logic.runs import AnalysisRecord, request_key
from entrodrop import service

# The settings' own defaults (defined once, in analysis/settings.py) fill the widgets.
_MODEL, _CAL, _EST = ModelSettings(), CalibrationSettings(), EstimatorSettings()
DEFAULT_SOURCES = [_CAL.spec]

# Session defaults. The widgets bound to these keys use persist_state="session", so a value
# survives while its page is not shown (other pages read it).
DEFAULTS: dict[str, Any] = {
    # model page
    "model_source": "demo",
    "demo_name": "smollm2-135m",
    "model_path": "",
    "hub_id": "",
    "model_spec": _MODEL.spec,
    "device": "auto",
    "dtype": "auto",
    "trust_remote_code": False,
    "device_map_auto": False,
    "load_mode": _MODEL.load,
    # calibration page
    "cal_sources": list(DEFAULT_SOURCES),
    "cal_uploaded": [],
    "cal_samples": None,
    "cal_seqlen": None,
    "cal_seed": _CAL.seed,
    "cal_text_column": "",
    "est_bins": _EST.bins,
    "est_knn_k": _EST.knn_k,
    "est_renyi_alpha": _EST.renyi_alpha,
    "est_skip_first": _EST.skip_first,
    "est_batch_size": _EST.batch_size,
    # shared pruning choices (sidebar)
    "granularity": "attn",
    "criterion": "knn",
    "run_index": 0,
    "stage_policy": "auto",
    "stage_estimator": service.DEFAULT_STAGE_ESTIMATOR,
    "s_start": 0,
    "allow_last": False,
    "k": 0,
    # page options
    "curve_estimators": list(ESTIMATORS),
    "heatmap_mode": "normalised",
    "budget_held_out": 8,
    "gen_prompt": "The capital of France is",
    "gen_tokens": 30,
    "gen_chat": False,
    "export_name": "",
    "export_overwrite": False,
    "export_format": "hf",
    "export_gguf_type": "f16",
    "export_layout": "transformers",
    "width_criteria": ["taylor-entropy", "taylor-ce"],
    "width_scale": "fraction",
    "width_fraction": 0.5,
    "width_ratio": 2.0,
    "width_samples": 8,
    "width_export_name": "",
    "width_show": "taylor-entropy",
}


def init_session() -> None:
    """Fill the defaults once per session, with the model from the command line or env."""
    ss = st.session_state
    if "_initialised" not in ss:
        spec = inputs.startup_model_spec(sys.argv[1:], os.environ)
        for key, value in DEFAULTS.items():
            if key not in ss:
                ss[key] = list(value) if isinstance(value, list) else value
        ss["model_spec"] = spec
        ss["load_mode"] = inputs.startup_load_mode(sys.argv[1:], os.environ)
        source = inputs.model_source_of(spec)
        ss["model_source"] = source
        if source == "demo":
            ss["demo_name"] = spec[len("demo:"):]
        elif source == "local":
            ss["model_path"] = spec
        else:
            ss["hub_id"] = spec
        devices = device_info()
        on_gpu = devices["auto_device"] != "cpu"
        ss["cal_samples"] = ss["cal_samples"] or default_samples(on_gpu)
        ss["cal_seqlen"] = ss["cal_seqlen"] or default_seqlen(on_gpu)
        ss["_initialised"] = True


# --------------------------------------------------------------------------- shared caches


@st.cache_resource(show_spinner=False)
def model_registry() -> service.ModelRegistry:
    """One registry for the whole server: every session shares the loaded models."""
    return service.ModelRegistry(max_models=2)


@st.cache_resource(show_spinner=False, ttl=30)
def device_info() -> dict:
    """GPU names and free memory; refreshed every 30 s."""
    return service.devices()


class _Miss(Exception):
    """Raised inside the cached reader when the key was never stored (never cached)."""


_PENDING: dict[tuple[str, str], Any] = {}
_PENDING_LOCK = threading.Lock()


@st.cache_data(show_spinner=False, max_entries=128)
def _stored(namespace: str, key: str) -> Any:
    with _PENDING_LOCK:
        if (namespace, key) in _PENDING:
            return _PENDING.pop((namespace, key))
    raise _Miss(key)


def cache_lookup(namespace: str, key: str) -> Any | None:
    """A value stored by `cache_compute`, or None. Never computes anything."""
    try:
        return _stored(namespace, key)
    except _Miss:
        return None


def cache_compute(namespace: str, key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per key, its result kept in st.cache_data.

    The computation runs outside the cached function so it can drive a live progress bar
    (elements drawn inside a cached function are replayed on every hit, and a bar created
    outside it cannot be replayed). Exceptions are not cached, so a miss costs nothing.
    """
    hit = cache_lookup(namespace, key)
    if hit is not None:
        return hit
    value = compute()
    with _PENDING_LOCK:
        _PENDING[(namespace, key)] = value
    try:
        return _stored(namespace, key)
    finally:
        with _PENDING_LOCK:
            _PENDING.pop((namespace, key), None)


@st.cache_resource(show_spinner=False, max_entries=64)
def _figure(kind: str, key: str, _build: Callable[[], Any]) -> Any:
    return _build()


def figure(kind: str, key: str, build: Callable[[], Any]) -> Any:
    """A plotly figure built once per (kind, key) and shared read-only.

    Building a figure with plotly's validation costs 40-110 ms; charts that do not depend
    on K are cached here so that moving K re-renders quickly. `key` must capture every
    input of `build`.
    """
    return _figure(kind, key, build)


# --------------------------------------------------------------------------- settings


@st.cache_data(show_spinner=False, ttl=30, max_entries=16)
def _load_plan(settings: ModelSettings):
    return service.load_plan(settings)


def load_plan():
    """Memory or streaming for the current model settings, with the estimate (refreshed
    every 30 s, since free memory changes)."""
    return _load_plan(model_settings())


def model_settings() -> ModelSettings:
    ss = st.session_state
    return ModelSettings(spec=str(ss["model_spec"]).strip(), device=ss["device"],
                         dtype=ss["dtype"], trust_remote_code=bool(ss["trust_remote_code"]),
                         device_map_auto=bool(ss["device_map_auto"]), load=ss["load_mode"])


def estimator_settings() -> EstimatorSettings:
    ss = st.session_state
    return EstimatorSettings(bins=int(ss["est_bins"]), knn_k=int(ss["est_knn_k"]),
                             renyi_alpha=float(ss["est_renyi_alpha"]),
                             skip_first=int(ss["est_skip_first"]),
                             batch_size=int(ss["est_batch_size"]))


def calibration_settings() -> tuple[CalibrationSettings, ...]:
    ss = st.session_state
    return inputs.calibration_settings(ss["cal_sources"], samples=int(ss["cal_samples"]),
                                       seqlen=int(ss["cal_seqlen"]), seed=int(ss["cal_seed"]),
                                       text_column=ss["cal_text_column"])


def analysis_request() -> AnalysisRequest:
    return service.analysis_request(model_settings(), calibration_settings(),
                                    estimator_settings())


def loaded_model(progress: service.Progress | None = None) -> service.Model:
    """The current model, loaded (once per server) if needed. A failure is remembered for
    the sidebar (which then says the load failed, not "not loaded yet") and raised."""
    spec = model_settings().spec
    try:
        model = model_registry().get(model_settings().validate(), progress)
    except Exception as exc:
        st.session_state["_load_failure"] = {
            "spec": spec, "message": describe_error(exc) or f"{type(exc).__name__}: {exc}"}
        raise
    st.session_state.pop("_load_failure", None)
    return model


def load_failure() -> str | None:
    """Why the current model spec last failed to load (None: it did not fail)."""
    failure = st.session_state.get("_load_failure")
    if failure and failure["spec"] == model_settings().spec:
        return str(failure["message"])
    return None


def peek_model() -> service.Model | None:
    try:
        return model_registry().peek(model_settings().validate())
    except ValueError:
        return None


# --------------------------------------------------------------------------- the analysis


def analyse(request: AnalysisRequest, progress: service.Progress | None = None) -> AnalysisRecord:
    """`service.analyze(request)` as this session's analysis: from st.cache_data when this
    server has run it before, else through the service (which reads its own disk cache
    before loading the model from the shared registry)."""
    key = request_key(request)
    registry = model_registry()
    result = cache_compute("analysis", key, lambda: service.analyze(
        request, get_model=lambda s: registry.get(s, progress), progress=progress))
    return adopt_analysis(request, key, result)


def adopt_analysis(request: AnalysisRequest, key: str,
                   result: service.AnalysisResult) -> AnalysisRecord:
    record = AnalysisRecord.of(request, key, result)
    st.session_state["analysis"] = record
    st.session_state["run_index"] = 0
    return record


def analysis() -> AnalysisRecord | None:
    return st.session_state.get("analysis")


def analysis_changes() -> list[str]:
    """How the analysis on display differs from the current settings (empty: current)."""
    record = analysis()
    if record is None:
        return []
    try:
        current = analysis_request()
    except service.USER_ERRORS:
        current = None
    return provenance.analysis_changes(record.request, model_settings(), current)


def analysis_is_current() -> bool:
    return not analysis_changes()


def stale_banner() -> None:
    """The warning every analysis page shows while its results are for other settings."""
    found = analysis_changes()
    if not found:
        return
    record = analysis()
    made = provenance.describe_stamp(provenance.request_stamp(record.request),
                                     ["model", "sources", "samples", "seqlen"])
    failure = load_failure()
    failed = f" The current model did not load: {failure.rstrip('.')}." if failure else ""
    st.warning(f"**Stale: these results are for earlier settings** ({made}). Changed since: "
               f"{'; '.join(found)}.{failed} Run the analysis again on the Calibration page; "
               "until then nothing that needs the model (curves, speed, text, export) runs.",
               icon=":material/history:")


def runs() -> list[Profile]:
    record = analysis()
    return record.runs if record else []


def current_run() -> Profile | None:
    all_runs = runs()
    if not all_runs:
        return None
    index = int(st.session_state.get("run_index", 0) or 0)
    return all_runs[min(max(index, 0), len(all_runs) - 1)]


def view() -> PruneView | None:
    """The prune view the sidebar built in this run (None before any analysis)."""
    return st.session_state.get("_view")


def require_view() -> tuple[Profile, PruneView]:
    """(current profile, prune view), or a message saying what is missing and st.stop()."""
    profile, current = current_run(), view()
    stale_banner()
    if profile is None:
        st.info("Run the analysis on the Calibration page first.", icon=":material/info:")
        st.page_link("views/calibration.py", label="Go to Calibration",
                     icon=":material/dataset:")
        st.stop()
    if current is None:
        st.warning("The pruning settings in the sidebar cannot be applied to this analysis; "
                   "see the message there (try another S_start policy or criterion).",
                   icon=":material/warning:")
        st.stop()
    return profile, current


def view_settings() -> dict:
    ss = st.session_state
    return {"granularity": ss["granularity"], "criterion": ss["criterion"],
            "policy": ss["stage_policy"], "s_start": int(ss["s_start"]),
            "allow_last": bool(ss["allow_last"]), "k": int(ss["k"]),
            "stage_estimator": ss["stage_estimator"]}


# --------------------------------------------------------------------------- errors


def show_error(what: str, exc: Exception) -> None:
    """One st.error: a user error's message (what to do next), or for a bug one line
    saying where its traceback was logged. Never a traceback on the page."""
    message = describe_error(exc)
    if message is None:
        st.error(record_internal_error(what, exc), icon=":material/error:")
    else:
        st.error(f"**{what} failed.** {message}", icon=":material/error:")


# Progress bars drawn inside the current `guard`, per script thread (one per session run).
_BARS = threading.local()


def _open_bars() -> list:
    if not hasattr(_BARS, "bars"):
        _BARS.bars = []
    return _BARS.bars


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show any failure inside as one st.error; the rest of the page still renders. Progress
    bars drawn inside are removed on failure, so none is left frozen part-way."""
    bars = _open_bars()
    mark = len(bars)
    try:
        yield
    except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions, not caught
        for bar in bars[mark:]:
            bar.empty()
        show_error(what, exc)
    finally:
        del bars[mark:]


def progress_bar(label: str):
    """A progress bar and the callback `(fraction, message)` that drives it."""
    bar = st.progress(0.0, text=label)
    _open_bars().append(bar)

    def update(frac: float, msg: str) -> None:
        bar.progress(min(max(float(frac), 0.0), 1.0), text=f"{label}: {msg}"[:200])

    return bar, update
