"""Glue between the dashboard pages and the library, with no Streamlit in it.

Everything here is plain Python on profiles (JSON dicts) and loaded models, so the pages
stay thin and this file can be tested without a browser. The maths lives in `analysis/`
and `pruning/`; this module only chooses what to call and shapes the results for display.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.paths import REPO_ROOT, atomic_write_bytes, cache_dir
from analysis.settings import (
    AnalysisRequest,
    CalibrationSettings,
    Criterion,
    EstimatorSettings,
    Granularity,
    ModelSettings,
    StagePolicy,
)
from entrodrop.service import DEFAULT_STAGE_ESTIMATOR
from pruning.compare import Comparison, agreement_matrix, compare_orders
from pruning.ranking import prune_order, prune_set, scores_for, validate_k
from pruning.rankstring import order_to_rank_string
from pruning.stages import StagePlan, max_k

Progress = Callable[[float, str], None]

ENV_MODEL = "ENTRODROP_MODEL"
ENV_EXPORT_ROOT = "ENTRODROP_EXPORT_ROOT"
ENV_UPLOAD_MAX_MB = "ENTRODROP_UPLOAD_MAX_MB"
DEFAULT_MODEL = "demo:smollm2-135m"
BASELINE: Criterion = "cosine"
UPLOAD_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
DEFAULT_UPLOAD_MAX_MB = 50
RANK_STRING_NOTE = (
    "Rank string in the research code's format: position i holds the RANK of layer i "
    "(0 = pruned first). It is not a list of layer ids."
)


class ExportPathError(ValueError):
    """The export folder name is empty, leaves the export root, or is the root itself."""


class UploadError(ValueError):
    """An uploaded calibration file is too large, empty, or of an unsupported type."""


# --------------------------------------------------------------------------- start-up


def startup_model_spec(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The model to preselect: `--model` after `streamlit run app.py --`, then
    $ENTRODROP_MODEL, then the bundled demo. Unknown arguments are ignored."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model", default=None)
    known, _ = parser.parse_known_args(list(argv))
    spec = known.model or environ.get(ENV_MODEL) or DEFAULT_MODEL
    return spec.strip() or DEFAULT_MODEL


def model_source_of(spec: str) -> str:
    """Which of the Model page's three inputs a spec belongs to: demo, local or hub."""
    if spec.startswith("demo:"):
        return "demo"
    path = Path(spec).expanduser()
    if path.exists() or path.suffix.lower() == ".gguf" or spec.startswith((".", "/", "~")):
        return "local"
    return "hub"


# --------------------------------------------------------------------------- export paths


def export_root(environ: Mapping[str, str] | None = None) -> Path:
    """$ENTRODROP_EXPORT_ROOT, or `exports/` in the repository root."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ENV_EXPORT_ROOT) or REPO_ROOT / "exports").expanduser().resolve()


def resolve_export_dir(name: str, root: Path) -> Path:
    """The folder an export named `name` goes to, strictly inside `root`.

    A relative name is taken below the root. `..` anywhere is refused, and so is an absolute
    path (or a symlink) that lands outside the root or on the root itself.
    """
    text = (name or "").strip()
    if not text:
        raise ExportPathError("the export folder name is empty; type a name such as my-model-k4")
    candidate = Path(text).expanduser()
    if ".." in candidate.parts:
        raise ExportPathError(
            f"export folder {text!r} contains '..'; give a plain folder name inside {root}"
        )
    root = Path(root).resolve()
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if target == root or root not in target.parents:
        raise ExportPathError(
            f"export folder {text!r} is outside the export root {root}; give a folder name "
            f"inside it (the root is set by ${ENV_EXPORT_ROOT})"
        )
    return target


def folder_summary(path: Path) -> dict:
    """Files and bytes on disk of an exported folder, and its config's layer count."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    layers = None
    config = path / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            text = data.get("text_config") or data
            layers = text.get("num_hidden_layers") or text.get("n_layer")
        except (OSError, ValueError, AttributeError):
            layers = None
    return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "num_layers": layers}


# --------------------------------------------------------------------------- uploads


def upload_limit_bytes(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        mb = float(environ.get(ENV_UPLOAD_MAX_MB, DEFAULT_UPLOAD_MAX_MB))
    except ValueError:
        mb = DEFAULT_UPLOAD_MAX_MB
    return int(mb * 2**20)


def save_upload(name: str, data: bytes, *, max_bytes: int, folder: Path | None = None) -> Path:
    """Store an uploaded calibration file under `cache/uploads/<content hash>/<name>`.

    The content hash in the path makes a changed file a new calibration spec (and so a new
    cache key). Raises UploadError for an empty, too large or unsupported file.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadError(
            f"{name!r} is not a supported calibration file; upload one of "
            f"{', '.join(UPLOAD_SUFFIXES)}"
        )
    if not data:
        raise UploadError(f"{name!r} is empty; upload a file with text in it")
    if len(data) > max_bytes:
        raise UploadError(
            f"{name!r} is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB "
            f"upload limit; upload a smaller sample, or give the file's path instead "
            f"(the limit is set by ${ENV_UPLOAD_MAX_MB})"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip(".") or f"upload{suffix}"
    target = (folder or cache_dir() / "uploads") / digest / safe
    if not target.is_file():
        atomic_write_bytes(target, data)
    return target


# --------------------------------------------------------------------------- requests


def request_key(request: AnalysisRequest) -> str:
    """A stable key of everything the user chose for one analysis (not the file contents:
    uploads carry their content hash in their path, and the disk cache checks weights)."""
    canon = json.dumps(asdict(request), sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def profile_fingerprint(profile: Mapping) -> str:
    """Identity of one profile, for keying work derived from it (quality curves)."""
    parts = {"model": profile.get("model", {}).get("identity"),
             "dtype": profile.get("model", {}).get("dtype"),
             "calibration": profile.get("calibration", {}).get("fingerprint"),
             "settings": profile.get("settings")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_label(profile: Mapping, index: int) -> str:
    """A short unique label of one calibration run: `#index spec`."""
    return f"#{index} {profile.get('calibration', {}).get('spec', '?')}"


def num_layers_of(profile: Mapping) -> int:
    return int(profile["model"]["num_layers"])


# --------------------------------------------------------------------------- prune view


@dataclass(frozen=True)
class PruneView:
    """Everything the pages show about one choice of (granularity, criterion, S_start, K)."""

    granularity: Granularity
    criterion: Criterion
    baseline: Criterion
    plan: StagePlan
    k: int
    scores: list[float]
    baseline_scores: list[float]
    order: list[int]
    """Prunable blocks of the criterion, first-pruned first."""
    baseline_order: list[int]
    pruned: list[int]
    """The first k blocks of `order`, in pruning order."""
    baseline_pruned: list[int]
    comparison: Comparison

    @property
    def max_k(self) -> int:
        return max_k(self.plan)

    def rank_string(self, baseline: bool = False) -> str:
        return order_to_rank_string(self.baseline_order if baseline else self.order,
                                    self.plan.num_layers)


def stage_plan(profile: Mapping, *, policy: StagePolicy, s_start: int | None, allow_last: bool,
               stage_estimator: str = DEFAULT_STAGE_ESTIMATOR) -> StagePlan:
    """The stage plan of one profile, exactly as the CLI builds it; `s_start` is used only
    under the 'manual' policy, and the automatic one comes from `stage_estimator`'s curve."""
    from entrodrop.service import stage_plan as plan

    return plan(dict(profile), policy=policy, s_start=s_start, allow_last=allow_last,
                stage_estimator=stage_estimator)


def build_view(profile: Mapping, *, granularity: Granularity, criterion: Criterion,
               policy: StagePolicy, s_start: int | None, allow_last: bool, k: int,
               baseline: Criterion = BASELINE,
               stage_estimator: str = DEFAULT_STAGE_ESTIMATOR) -> PruneView:
    """Rankings of a cached profile: no model is run. K must fit the plan."""
    plan = stage_plan(profile, policy=policy, s_start=s_start, allow_last=allow_last,
                      stage_estimator=stage_estimator)
    k = validate_k(k, max_k(plan), "the number of prunable blocks")
    scores = scores_for(profile, granularity, criterion)
    base_scores = scores_for(profile, granularity, baseline)
    order = prune_order(scores, plan)
    base_order = prune_order(base_scores, plan)
    return PruneView(
        granularity=granularity, criterion=criterion, baseline=baseline, plan=plan, k=k,
        scores=scores, baseline_scores=base_scores, order=order, baseline_order=base_order,
        pruned=prune_set(order, k), baseline_pruned=prune_set(base_order, k),
        comparison=compare_orders(order, base_order, k),
    )


def block_stage(view: PruneView, block: int) -> str:
    if block < view.plan.s_start:
        return "stage 1"
    return "prunable" if block in view.plan.prunable else "frozen"


def ranking_rows(view: PruneView) -> list[dict]:
    """Side-by-side ranked lists: row r holds the r-th block of each order (rank 0 first)."""
    both = set(view.pruned) & set(view.baseline_pruned)
    rows = []
    for rank, (a, b) in enumerate(zip(view.order, view.baseline_order, strict=True)):
        rows.append({
            "rank": rank,
            "block": a,
            "score": _finite(view.scores[a]),
            "pruned": rank < view.k,
            "baseline_block": b,
            "baseline_score": _finite(view.baseline_scores[b]),
            "baseline_pruned": rank < view.k,
            "same_block": a == b,
            "in_both_sets": rank < view.k and a in both,
            "baseline_in_both_sets": rank < view.k and b in both,
        })
    return rows


def block_rows(view: PruneView) -> list[dict]:
    """One row per block 0..L-1, for CSV export."""
    rank_a = {b: r for r, b in enumerate(view.order)}
    rank_b = {b: r for r, b in enumerate(view.baseline_order)}
    rows = []
    for block in range(view.plan.num_layers):
        rows.append({
            "block": block,
            "stage": block_stage(view, block),
            f"{view.criterion}_score": _finite(view.scores[block]),
            f"{view.criterion}_rank": rank_a.get(block),
            f"{view.criterion}_pruned": block in view.pruned,
            f"{view.baseline}_score": _finite(view.baseline_scores[block]),
            f"{view.baseline}_rank": rank_b.get(block),
            f"{view.baseline}_pruned": block in view.baseline_pruned,
        })
    return rows


def rows_to_csv(rows: Sequence[Mapping]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def view_to_json(view: PruneView, profile: Mapping) -> dict:
    """The prune list as a JSON record, with where it came from."""
    c = view.comparison
    return {
        "model": profile.get("model", {}).get("spec"),
        "calibration": profile.get("calibration", {}).get("spec"),
        "settings": profile.get("settings"),
        "granularity": view.granularity,
        "criterion": view.criterion,
        "baseline": view.baseline,
        "stage_policy": view.plan.policy,
        "s_start": view.plan.s_start,
        "allow_last": view.plan.allow_last,
        "frozen": list(view.plan.frozen),
        "k": view.k,
        "order": view.order,
        "baseline_order": view.baseline_order,
        "pruned": view.pruned,
        "baseline_pruned": view.baseline_pruned,
        "comparison": {"overlap": c.overlap, "jaccard": c.jaccard, "kendall_tau": c.kendall_tau,
                       "only_criterion": list(c.only_a), "only_baseline": list(c.only_b)},
        "rank_string": view.rank_string(),
        "baseline_rank_string": view.rank_string(baseline=True),
        "rank_string_format": RANK_STRING_NOTE,
    }


# --------------------------------------------------------------------------- across runs


def calibration_matrix(runs: Sequence[Mapping], *, granularity: Granularity,
                       criterion: Criterion, mode: str, views: Sequence[PruneView]) -> list[list]:
    """Calibration sets x blocks.

    mode 'normalised': each run's candidate scores min-max scaled to [0, 1] (0 = lowest
    score = pruned first; frozen and Stage-1 blocks: None). mode 'rank': the block's position in that run's
    pruning order (frozen blocks: None).
    """
    matrix = []
    for run, view in zip(runs, views, strict=True):
        if mode == "rank":
            rank = {b: r for r, b in enumerate(view.order)}
            matrix.append([rank.get(b) for b in range(view.plan.num_layers)])
            continue
        # Only the candidates are scaled: frozen and Stage-1 blocks are never pruned, and
        # their (often extreme) scores would squash the colours of the blocks that are.
        values = scores_for(run, granularity, criterion)
        candidates = set(view.plan.prunable)
        finite = [v for b, v in enumerate(values) if b in candidates and math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = hi - lo if hi > lo else 1.0
        matrix.append([(v - lo) / span if b in candidates and math.isfinite(v) else None
                       for b, v in enumerate(values)])
    return matrix


def robustness(runs: Sequence[Mapping], views: Sequence[PruneView]) -> dict:
    """Agreement of each calibration set's own prune set at the same settings and K."""
    pairs = enumerate(zip(runs, views, strict=True))
    sets = {run_label(run, i): view.pruned for i, (run, view) in pairs}
    return dict(agreement_matrix(sets))


def views_for_runs(runs: Sequence[Mapping], **settings) -> list[PruneView]:
    """The same choices applied to every calibration run, K clamped to each run's plan."""
    views = []
    k = settings.pop("k")
    for run in runs:
        plan = stage_plan(run, policy=settings["policy"], s_start=settings["s_start"],
                          allow_last=settings["allow_last"],
                          stage_estimator=settings.get("stage_estimator", DEFAULT_STAGE_ESTIMATOR))
        views.append(build_view(run, k=min(k, max_k(plan)), **settings))
    return views


# --------------------------------------------------------------------------- shared caches


class ModelRegistry:
    """Loaded models shared by every dashboard session, loaded at most once each.

    Loading holds a per-settings lock, so two sessions asking for the same model wait for
    one load; other models load in parallel. Only `max_models` stay in memory.
    """

    def __init__(self, max_models: int = 2):
        self.max_models = max_models
        self._models: OrderedDict[ModelSettings, object] = OrderedDict()
        self._locks: dict[ModelSettings, threading.Lock] = {}
        self._guard = threading.Lock()

    def peek(self, settings: ModelSettings):
        with self._guard:
            return self._models.get(settings)

    def get(self, settings: ModelSettings, progress: Progress | None = None):
        from analysis.models import load_model

        with self._guard:
            lock = self._locks.setdefault(settings, threading.Lock())
        with lock:
            hit = self.peek(settings)
            if hit is not None:
                return hit
            if progress is not None:
                progress(0.01, f"loading {settings.spec} (the first load imports the libraries)")
            loaded = load_model(settings, progress=progress)
            with self._guard:
                self._models[settings] = loaded
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            return loaded

    def clear(self) -> None:
        with self._guard:
            self._models.clear()


def run_analysis(request: AnalysisRequest, *, get_model: Callable[[ModelSettings], object],
                 progress: Progress | None = None) -> dict:
    """entrodrop.service.analyze, returned as a JSON-able dict for the session state."""
    from entrodrop.service import analyze

    result = analyze(request, get_model=get_model, progress=progress)
    return {"runs": result.runs, "messages": list(result.messages),
            "from_cache": list(result.from_cache), "seconds": result.seconds}


def calibration_settings(specs: Sequence[str], *, samples: int, seqlen: int, seed: int,
                         text_column: str | None) -> tuple[CalibrationSettings, ...]:
    column = (text_column or "").strip() or None
    return tuple(CalibrationSettings(s, samples, seqlen, seed, column).validate() for s in specs)


def analysis_request(model: ModelSettings, cals: Sequence[CalibrationSettings],
                     estimators: EstimatorSettings) -> AnalysisRequest:
    model.validate()
    if not cals:
        raise ValueError("choose at least one calibration source")
    for cal in cals:
        estimators.validate(seqlen=cal.seqlen)
    return AnalysisRequest(model=model, calibrations=tuple(cals), estimators=estimators)


# --------------------------------------------------------------------------- budget


def budget_ks(limit: int, max_points: int = 9) -> list[int]:
    """K values for quality curves: 0..limit, thinned to at most `max_points`, ends kept."""
    if limit <= 0:
        return [0]
    if limit + 1 <= max_points:
        return list(range(limit + 1))
    step = limit / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def held_out_ids(loaded, cal: CalibrationSettings, samples: int):
    """`samples` evaluation windows from the same source, disjoint from the windows the
    scores were computed on."""
    from entrodrop.service import heldout_windows

    return heldout_windows(cal.validate(), loaded, samples)


def quality_budget(loaded, ids, view: PruneView, ks: Sequence[int], *, batch_size: int = 4,
                   progress: Progress | None = None) -> list[dict]:
    """Perplexity, KL and top-1 agreement against K for the criterion and the baseline."""
    from entrodrop.service import MODEL_LOCK
    from pruning.evaluate import quality_curves

    orders = {view.criterion: view.order, view.baseline: view.baseline_order}
    if view.criterion == view.baseline:
        orders = {view.criterion: view.order}

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"evaluated batch {done} of {total}")

    with MODEL_LOCK:
        return quality_curves(loaded.model, ids, view.granularity, orders, list(ks),
                              batch_size=batch_size, progress=step)


def parameter_savings(loaded, granularity: Granularity, blocks: Sequence[int]) -> dict:
    """Parameters and weight bytes before and after pruning `blocks` (no forward pass)."""
    from entrodrop.service import MODEL_LOCK
    from pruning.apply import pruned
    from pruning.evaluate import count_parameters, weight_bytes

    with MODEL_LOCK:
        base_p, base_b = count_parameters(loaded.model), weight_bytes(loaded.model)
        with pruned(loaded.model, granularity, list(blocks)):
            new_p, new_b = count_parameters(loaded.model), weight_bytes(loaded.model)
    return {"params_base": base_p, "params_pruned": new_p, "bytes_base": base_b,
            "bytes_pruned": new_b, "saved_fraction": 1 - new_p / base_p if base_p else 0.0}


def export_manifest(view: PruneView, profile: Mapping, measured: Mapping | None = None) -> dict:
    """The manifest the CLI writes (service.manifest_for: source, calibration recipe, scores,
    order, s_start, K, blocks), plus the comparison with the baseline and the quality and
    speed figures measured in the app for this prune set."""
    from entrodrop.service import manifest_for

    decision = {"granularity": view.granularity, "criterion": view.criterion, "k": view.k,
                "order": view.order, "blocks": view.pruned, "s_start": view.plan.s_start,
                "policy": view.plan.policy}
    extra = {k: v for k, v in view_to_json(view, profile).items()
             if k not in ("model", "calibration", "settings", "granularity", "criterion", "k",
                          "order", "pruned", "s_start", "stage_policy")}
    extra["tool"] = "EntroDrop Studio"
    extra["measured_in_app"] = dict(measured or {})
    return manifest_for(dict(profile), decision, extra)


def measured_figures(view: PruneView, budget: Mapping | None, speed: Mapping | None,
                     speed_key: str | None) -> dict:
    """The app's measured figures that belong to this prune set: the quality rows at its K
    (from the Budget page's curves) and the speed ratios if they were timed for it."""
    out: dict = {}
    if budget:
        rows = [r for r in budget.get("rows", []) if r.get("k") == view.k]
        if rows:
            out["quality_at_k"] = rows
    if speed and speed_key is not None and speed.get("key") == speed_key:
        out["speed"] = {k: v for k, v in speed.items() if k != "key"}
    return out


def load_snippet(path: Path, granularity: str) -> str:
    """Python that loads an export; attention-pruned exports need their own modeling file."""
    trust = ", trust_remote_code=True" if granularity == "attn" else ""
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"path = {str(path)!r}\n"
        f"model = AutoModelForCausalLM.from_pretrained(path{trust})\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "ids = tokenizer('The capital of France is', return_tensors='pt').input_ids\n"
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))\n"
    )


# --------------------------------------------------------------------------- width


def score_percentiles(scores: Sequence, qs: Sequence[float]) -> list[list[float]]:
    """Per layer, the given percentiles (0..100) of its neuron scores: layers x len(qs)."""
    import torch

    out = []
    q = torch.tensor([float(x) / 100.0 for x in qs], dtype=torch.float64)
    for s in scores:
        out.append(torch.quantile(s.double(), q).tolist())
    return out


def kept_overlap(keep_a: Sequence, keep_b: Sequence) -> list[float]:
    """Per layer, the Jaccard index of two kept-neuron sets."""
    out = []
    for a, b in zip(keep_a, keep_b, strict=True):
        sa, sb = set(int(i) for i in a), set(int(i) for i in b)
        union = sa | sb
        out.append(1.0 if not union else len(sa & sb) / len(union))
    return out


def model_summary(loaded) -> dict:
    """What the Model page shows about a loaded model. Read under MODEL_LOCK: another
    session may have blocks pruned in place for a moment."""
    from entrodrop.service import MODEL_LOCK
    from pruning.evaluate import count_parameters

    with MODEL_LOCK:
        return {"architecture": loaded.architecture, "num_layers": loaded.num_layers,
                "parameters": count_parameters(loaded.model),
                "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", "")}


def width_ratio_range(model) -> tuple[float, float, int, int]:
    """(smallest, largest ratio, hidden size D, intermediate size I) for the ratio slider:
    the per-layer mode keeps round(ratio * D) neurons, so ratio runs up to I / D."""
    from analysis.architectures import get_architecture
    from analysis.taylor import intermediate_size, mlp_modules
    from entrodrop.service import MODEL_LOCK

    layout = get_architecture(model).mlp
    with MODEL_LOCK:  # another session may have the MLPs sliced for a moment
        sizes = [intermediate_size(down, layout) for _, down in mlp_modules(model)]
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
    largest = min(sizes) / hidden
    return round(1.0 / hidden, 4), largest, hidden, min(sizes)


# --------------------------------------------------------------------------- errors


def user_error_types() -> tuple[type[BaseException], ...]:
    """The library's user-facing error types, plus the dashboard's own."""
    from entrodrop.service import user_error_types as library_errors

    return (*library_errors(), ExportPathError, UploadError)


def describe_error(exc: BaseException) -> str | None:
    """A one-paragraph message for an error the user can act on; None for a bug."""
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    ):
        return ("Out of memory. Lower the batch size, N or T, choose a smaller model, or use "
                "float16/bfloat16; then try again.")
    if isinstance(exc, user_error_types()) or (
        isinstance(exc, ValueError) and type(exc) is ValueError
    ):
        text = " ".join(str(exc).split())
        return text or type(exc).__name__
    return None


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


# --------------------------------------------------------------------------- export


def export_view(loaded, view: PruneView, profile: Mapping, out_dir: Path, *,
                overwrite: bool = False, progress: Progress | None = None,
                measured: Mapping | None = None) -> dict:
    """Write the pruned model of `view` to `out_dir`; returns a summary for display."""
    from entrodrop.service import MODEL_LOCK
    from pruning.export import MANIFEST_NAME, export_pruned

    with MODEL_LOCK:
        path = export_pruned(loaded.model, loaded.tokenizer, out_dir,
                             granularity=view.granularity, blocks=view.pruned,
                             manifest=export_manifest(view, profile, measured),
                             overwrite=overwrite,
                             progress=progress)
    summary = folder_summary(path)
    record = json.loads((Path(path) / MANIFEST_NAME).read_text(encoding="utf-8"))
    summary.update({k: record.get(k) for k in ("granularity", "blocks", "num_layers_before",
                                               "num_layers_after", "parameters_before",
                                               "parameters_after")})
    return summary


# --------------------------------------------------------------------------- width runs


def width_scores(loaded, cal: CalibrationSettings, criteria: Sequence[str], *,
                 batch_size: int = 4, progress: Progress | None = None) -> dict[str, dict]:
    """Neuron importances per criterion, as NeuronScores.to_dict() (JSON-able)."""
    from entrodrop.service import width_scores as scores

    found = scores(loaded, cal.validate(), criteria, batch_size=batch_size, progress=progress)
    return {criterion: data.to_dict() for criterion, data in found.items()}


def width_keep(scores: Mapping, ratio: float, hidden_size: int) -> list:
    from entrodrop.service import width_keep as keep

    return keep(scores, ratio, hidden_size, mode="per_layer")


def width_quality(loaded, ids, scores: Mapping[str, Mapping], ratios: Sequence[float],
                  hidden_size: int, *, batch_size: int = 4,
                  progress: Progress | None = None) -> list[dict]:
    """Perplexity, KL and top-1 agreement of each criterion's width-pruned model per ratio."""
    from entrodrop.service import width_curves

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1), f"evaluated batch {done} of {total}")

    return width_curves(loaded, ids, dict(scores), ratios, mode="per_layer",
                        batch_size=batch_size, progress=step)


def export_width(loaded, scores: Mapping, ratio: float, hidden_size: int, out_dir: Path, *,
                 manifest: dict, overwrite: bool = False) -> dict:
    from entrodrop.service import MODEL_LOCK
    from pruning.width import export_width_pruned

    keep = width_keep(scores, ratio, hidden_size)
    with MODEL_LOCK:
        path = export_width_pruned(loaded.model, loaded.tokenizer, keep, out_dir,
                                   manifest=manifest, overwrite=overwrite)
    summary = folder_summary(path)
    summary["intermediate_size"] = len(keep[0]) if keep else None
    return summary


# --------------------------------------------------------------------------- calibration


def preview_windows(loaded, cal: CalibrationSettings, n: int = 3) -> dict:
    """The first n windows of a calibration set, decoded, with how they were made."""
    from analysis.calibration import load_calibration, preview
    from entrodrop.service import MODEL_LOCK

    with MODEL_LOCK:
        calibration = load_calibration(cal.validate(), loaded.tokenizer, model=loaded.model,
                                       on_gpu=loaded.on_gpu)
    recipe = calibration.recipe
    return {"spec": cal.spec, "shape": list(calibration.input_ids.shape),
            "mode": recipe.get("mode"), "documents": recipe.get("documents"),
            "text_column": recipe.get("text_column"),
            "windows": preview(calibration, loaded.tokenizer, n=n)}


def source_options(uploaded: Sequence[str]) -> list[str]:
    """Built-in and preset specs, then the user's uploaded or typed file paths."""
    from analysis.calibration import list_sources

    names = [s["name"] for s in list_sources() if s["kind"] != "file"]
    return names + [u for u in uploaded if u not in names]


def source_descriptions() -> dict[str, str]:
    from analysis.calibration import list_sources

    return {s["name"]: s["description"] for s in list_sources()}


# --------------------------------------------------------------------------- speed, text


def speed_for(loaded, granularity: Granularity, blocks: Sequence[int], *, prompt_len: int,
              new_tokens: int, repeats: int = 3) -> dict:
    """Prefill and decode speed of the unpruned and the pruned model, side by side."""
    from entrodrop.service import MODEL_LOCK
    from pruning.apply import pruned
    from pruning.evaluate import measure_speed

    model = loaded.model
    with MODEL_LOCK:
        speed = measure_speed(model, lambda: pruned(model, granularity, list(blocks)),
                              prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
    return speed.to_dict()


def generate_for(loaded, granularity: Granularity, blocks: Sequence[int], prompt: str, *,
                 max_new_tokens: int, chat: bool = False) -> dict:
    """Greedy continuations of `prompt` by the unpruned and the pruned model."""
    from entrodrop.service import MODEL_LOCK
    from pruning.apply import pruned
    from pruning.evaluate import generate_side_by_side

    model = loaded.model
    with MODEL_LOCK:
        return generate_side_by_side(model, loaded.tokenizer, prompt,
                                     lambda: pruned(model, granularity, list(blocks)),
                                     max_new_tokens=max_new_tokens, chat=chat)


def request_calibration(record: Mapping, index: int) -> CalibrationSettings:
    """The calibration settings of run `index` of a stored analysis record."""
    data = dict(record["request"]["calibrations"][index])
    return CalibrationSettings(**data)


def json_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def taylor_block_rows(layer_totals: Mapping[str, Sequence[float]], view: PruneView) -> list[dict]:
    """The per-layer sum of neuron importance as a block criterion (least important layer
    pruned first), under the view's stage plan, compared at K with the view's two orders."""
    rows = []
    for criterion, totals in layer_totals.items():
        order = prune_order([float(v) for v in totals], view.plan)
        pruned = prune_set(order, view.k)
        row = {"criterion": f"{criterion} (layer sum)", "pruned": sorted(pruned)}
        for name, other in ((view.criterion, view.order), (view.baseline, view.baseline_order)):
            c = compare_orders(order, other, view.k)
            row[f"overlap with {name}"] = c.overlap
            row[f"Jaccard with {name}"] = c.jaccard
            row[f"Kendall tau with {name}"] = c.kendall_tau
        rows.append(row)
    return rows
