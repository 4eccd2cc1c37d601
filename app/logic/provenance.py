"""Which settings produced a result, and whether they are still the current ones.

Every result a page shows (the analysis, quality curves, speed, side-by-side text, an
export) carries a `stamp`: a flat dict of the settings that made it. A page compares the
stamp with the current settings' stamp and shows the result only when nothing differs;
otherwise it says what changed (`changes`) instead of showing an old answer as new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from analysis.settings import AnalysisRequest, ModelSettings
from app.logic.prune_view import PruneView

# Words for the stamp keys, in the order differences are listed.
_LABELS = {
    "model": "model",
    "dtype": "data type",
    "device": "device",
    "load": "load mode",
    "sources": "calibration sources",
    "samples": "N",
    "seqlen": "T",
    "seed": "seed",
    "text_column": "text column",
    "estimators": "estimator options",
    "granularity": "granularity",
    "criterion": "criterion",
    "s_start": "S_start",
    "k": "K",
    "blocks": "pruned blocks",
    "prompt": "prompt",
    "tokens": "new tokens",
    "chat": "chat template",
    "ratio": "keep ratio",
    "neurons": "kept neurons",
}


def model_stamp(model: ModelSettings) -> dict:
    return {"model": model.spec, "device": model.device, "dtype": model.dtype,
            "load": model.load}


def request_stamp(request: AnalysisRequest) -> dict:
    """The settings of one analysis, flat and comparable."""
    cals = request.calibrations
    first = cals[0] if cals else None
    est = request.estimators
    return {
        **model_stamp(request.model),
        "sources": [c.spec for c in cals],
        "samples": first.samples if first else None,
        "seqlen": first.seqlen if first else None,
        "seed": first.seed if first else None,
        "text_column": first.text_column if first else None,
        "estimators": f"bins {est.bins}, knn k {est.knn_k}, Renyi alpha {est.renyi_alpha}, "
                      f"skip_first {est.skip_first}",
    }


def prune_stamp(view: PruneView, model_spec: str) -> dict:
    """The settings of a result about one prune set of one model."""
    return {"model": model_spec, "granularity": view.granularity,
            "criterion": view.criterion, "s_start": view.plan.s_start, "k": view.k,
            "blocks": sorted(view.blocks)}


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None or value == "" else str(value)


def changes(before: Mapping, now: Mapping) -> list[str]:
    """What differs between the stamp a result was made with and the current one, in words
    (`K 8 → 0`); keys missing from either side are not compared. Empty: still current."""
    out = []
    keys = [k for k in _LABELS if k in before and k in now]
    keys += [k for k in before if k in now and k not in _LABELS]
    for key in keys:
        if before[key] != now[key]:
            label = _LABELS.get(key, key)
            out.append(f"{label} {_show(before[key])} → {_show(now[key])}")
    return out


def analysis_changes(done: AnalysisRequest, model: ModelSettings,
                     current: AnalysisRequest | None) -> list[str]:
    """How the analysis on display differs from the current settings. `current` is None when
    the current calibration settings cannot be checked; the model is compared anyway."""
    if current is None:
        found = changes(model_stamp(done.model), model_stamp(model))
        return found + ["the calibration settings are not valid (see the Calibration page)"]
    return changes(request_stamp(done), request_stamp(current))


def describe_stamp(stamp: Mapping, keys: Sequence[str] | None = None) -> str:
    """`model demo:x · granularity attn · K 4`: a stamp as one caption line."""
    chosen = keys if keys is not None else [k for k in _LABELS if k in stamp]
    return " · ".join(f"{_LABELS.get(k, k)} {_show(stamp[k])}" for k in chosen if k in stamp)


def feasible_ks(ks: Sequence[int], limit: int) -> tuple[list[int], list[int]]:
    """(K values that can be pruned, those that cannot): a K above the plan's `limit`
    would leave no block or take a frozen one, so a curve skips it with a note."""
    ok = sorted({int(k) for k in ks if 0 <= int(k) <= limit})
    skipped = sorted({int(k) for k in ks if not 0 <= int(k) <= limit})
    return ok, skipped
