"""Profiles: the JSON record of one analysis, and the results cache in `cache/profiles/`.

A profile is plain JSON (never pickle) with a schema version. Cache entries also carry a
checksum of their payload, so a truncated or edited entry is detected and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from analysis.capture import Accumulator
from analysis.paths import atomic_write_text, cache_dir, remove_stale_temp_files
from analysis.settings import ESTIMATORS, EstimatorSettings

SCHEMA_VERSION = 1


class CacheEntryInvalid(ValueError):
    """A cache entry exists but cannot be trusted (corrupt, edited, or an older schema)."""


def _clean(values) -> list[float | None]:
    """JSON has no NaN: non-finite numbers become null."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def build_profile(
    acc: Accumulator,
    *,
    model_info: dict,
    calibration_info: dict,
    opts: EstimatorSettings,
) -> dict:
    """Turn accumulated sums into the profile record (means over samples, dH per block)."""
    n = float(acc.samples)
    if n <= 0:
        raise ValueError("no calibration samples were processed")
    num_layers = acc.layer_cosine.shape[0]
    z = acc.z_entropy / n
    a = acc.attn_entropy / n
    z_bad = acc.z_nonfinite > 0
    a_bad = acc.attn_nonfinite > 0
    z = z.masked_fill(z_bad.unsqueeze(0), float("nan"))
    a = a.masked_fill(a_bad.unsqueeze(0), float("nan"))

    curve, attn_h, layer_dh, attn_dh = {}, {}, {}, {}
    for e, name in enumerate(ESTIMATORS):
        curve[name] = _clean(z[e].tolist())
        attn_h[name] = _clean(a[e].tolist())
        layer_dh[name] = _clean((z[e, 1:] - z[e, :-1]).tolist())
        attn_dh[name] = _clean((a[e] - z[e, :-1]).tolist())
    layer_bad = (z_bad[:-1] | z_bad[1:]).tolist()
    attn_bad = (z_bad[:-1] | a_bad).tolist()
    nonfinite_blocks = {
        "layer": [i for i, bad in enumerate(layer_bad) if bad],
        "attn": [i for i, bad in enumerate(attn_bad) if bad],
    }
    warnings = []
    if nonfinite_blocks["layer"] or nonfinite_blocks["attn"]:
        warnings.append(
            "non-finite hidden states (NaN/inf, usually fp16 overflow) in layer blocks "
            f"{nonfinite_blocks['layer']} and attn blocks {nonfinite_blocks['attn']}; their "
            "scores are null. Re-run with dtype bfloat16 or float32."
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {**model_info, "num_layers": num_layers},
        "calibration": calibration_info,
        "settings": {"bins": opts.bins, "knn_k": opts.knn_k, "renyi_alpha": opts.renyi_alpha,
                     "skip_first": opts.skip_first},
        "entropy_curve": curve,
        "attn_entropy": attn_h,
        "blocks": {
            "layer": {"delta_h": layer_dh, "cosine": _clean((acc.layer_cosine / n).tolist())},
            "attn": {"delta_h": attn_dh, "cosine": _clean((acc.attn_cosine / n).tolist())},
        },
        "s_start": {name: _auto_s_start_or_none(curve[name]) for name in ESTIMATORS},
        "sink": {"max_norm": [_clean(row) for row in acc.sink_max_norm.tolist()]},
        "nonfinite_blocks": nonfinite_blocks,
        "warnings": warnings,
    }


def _auto_s_start_or_none(curve: list[float | None]) -> int | None:
    """auto_s_start of a curve whose non-finite points are null; None if none is usable."""
    from pruning.stages import StageError, auto_s_start

    try:
        return auto_s_start([float("nan") if v is None else v for v in curve])
    except StageError:
        return None


def profile_key(parts: dict) -> str:
    """sha256 of the canonical JSON of everything that defines an analysis."""
    canon = json.dumps({"schema": SCHEMA_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ProfileCache:
    """Profiles on disk, one JSON file per key, written atomically."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "profiles"
        remove_stale_temp_files(self.root)  # left by writers that were killed mid-write

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached profile, None if absent. Raises CacheEntryInvalid for a bad entry."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CacheEntryInvalid(f"cache entry {path.name} is unreadable ({e}); recomputing") from e
        if not isinstance(entry, dict) or entry.get("schema_version") != SCHEMA_VERSION:
            found = entry.get("schema_version") if isinstance(entry, dict) else None
            raise CacheEntryInvalid(
                f"cache entry {path.name} has schema {found}, expected {SCHEMA_VERSION}; recomputing"
            )
        payload = entry.get("payload")
        if entry.get("key") != key or not isinstance(payload, dict) or entry.get("checksum") != _checksum(payload):
            raise CacheEntryInvalid(f"cache entry {path.name} fails its checksum; recomputing")
        return payload

    def put(self, key: str, payload: dict) -> Path:
        entry = {"schema_version": SCHEMA_VERSION, "key": key, "checksum": _checksum(payload),
                 "payload": payload}
        path = self.path(key)
        atomic_write_text(path, json.dumps(entry, sort_keys=True))
        return path

    def discard(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
