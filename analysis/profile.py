"""Profiles: the typed record of one analysis, and the results cache in `cache/profiles/`.

A `Profile` is what one forward pass over one calibration set measured: the entropy curve
H(Z_j), j = 0..L, per estimator, and per block (both granularities) the entropy increase
delta_h per estimator, the cosine importance and the angular distance, and the angular
distance of every span of up to S layers. It round-trips through plain JSON (never
pickle) with a schema version; `Profile.scores` is the one place that reads a block score.
Cache entries also carry a checksum of their payload, so a truncated or edited entry is
detected and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analysis.capture import Accumulator
from analysis.errors import EntroDropError
from analysis.paths import atomic_write_text, cache_dir, remove_stale_temp_files
from analysis.settings import (
    ESTIMATORS,
    GRANULARITIES,
    SCORES,
    Estimator,
    EstimatorSettings,
    Granularity,
    Score,
)

SCHEMA_VERSION = 2
"""2 added the angular distances (`BlockScores.angular`, `Profile.angular_spans`). Records
and cache entries of schema 1 are refused with a message to rerun the analysis, and the
cache key includes the version, so an old entry is never served for a new request."""


class CacheEntryInvalid(ValueError):
    """A cache entry exists but cannot be trusted (corrupt, edited, or an older schema)."""


class ProfileFormatError(EntroDropError):
    """A profile record (JSON) lacks a field or holds the wrong type; rerun the analysis."""


@dataclass(frozen=True)
class BlockScores:
    """Per-block scores of one granularity; every list has one value per block 0..L-1.

    A null (None) is a block whose hidden states were not finite (e.g. fp16 overflow)."""

    delta_h: dict[Estimator, list[float | None]]
    """dH_i = H(Y_i) - H(X_i) per estimator."""
    cosine: list[float | None]
    """1 - mean_t cos(X_t, Y_t): ShortGPT's Block Influence (layer), LLMDrop's (attn)."""
    angular: list[float | None]
    """mean_t arccos(cos(X_t, Y_t)) / pi: Gromov et al.'s angular distance of the block."""


@dataclass(frozen=True)
class Profile:
    """The record of one analysis (one model, one calibration set). JSON keys = field names."""

    model: dict
    """spec, architecture, identity, dtype, device, num_layers."""
    calibration: dict
    """spec, samples (N), seqlen (T), seed, fingerprint, recipe."""
    settings: dict
    """The estimator settings that shaped the numbers: bins, knn_k, renyi_alpha, skip_first."""
    entropy_curve: dict[Estimator, list[float | None]]
    """H(Z_j) for j = 0..L per estimator (L+1 points; Z_0 is the embedding output)."""
    attn_entropy: dict[Estimator, list[float | None]]
    """H(A_i) for i = 0..L-1: the residual stream right after layer i's attention sub-block."""
    blocks: dict[Granularity, BlockScores]
    s_start: dict[Estimator, int | None]
    """The automatic S_start of each estimator's curve (None when the curve is unusable)."""
    sink_max_norm: list[list[float | None]]
    """Largest activation norm per point (Z_0, then A_i and Z_{i+1} per layer) and position."""
    angular_spans: list[list[float | None]] = field(default_factory=list)
    """[n-1][l], n = 1..S, l = 0..L-n: mean angular distance between Z_l and Z_{l+n}, i.e.
    across the n layers l..l+n-1 (row n-1 has L-n+1 values; row 0 equals the layer blocks'
    `angular`). S = min(L, ANGULAR_MAX_SPAN)."""
    nonfinite_blocks: dict[Granularity, list[int]] = field(default_factory=dict)
    """Blocks whose points held NaN/inf (usually fp16 overflow): every score of these blocks
    (delta_h, cosine, angular) is null, and a warning says so."""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the analysis that produced it (0 for records that do not say)."""

    @property
    def num_layers(self) -> int:
        return int(self.model["num_layers"])

    @property
    def spec(self) -> str:
        """The model spec the profile was measured on."""
        return str(self.model.get("spec"))

    def scores(self, granularity: Granularity, criterion: Score) -> list[float]:
        """Per-block scores (length L); lower is pruned first, null is read as NaN.

        An estimator name gives its entropy increase delta_h; `cosine` the importance;
        `angular` the angular distance between the block's input and output."""
        if granularity not in GRANULARITIES:
            raise ProfileFormatError(
                f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
        if criterion not in SCORES:
            raise ProfileFormatError(
                f"criterion must be one of {', '.join(SCORES)}; got {criterion!r}")
        block = self.blocks[granularity]
        if criterion == "cosine":
            values = block.cosine
        elif criterion == "angular":
            values = block.angular
        else:
            values = block.delta_h[criterion]
        return _nan_for_null(values)

    def span_distances(self, n: int) -> list[float]:
        """d(Z_l, Z_{l+n}) for l = 0..L-n: the angular distance across the n layers starting
        at l (null read as NaN); ProfileFormatError when n is outside 1..S."""
        if not 1 <= n <= len(self.angular_spans):
            raise ProfileFormatError(
                f"the profile holds angular spans of 1..{len(self.angular_spans)} layers; "
                f"got n = {n}")
        return _nan_for_null(self.angular_spans[n - 1])

    def curve(self, estimator: Estimator) -> list[float]:
        """H(Z_j), j = 0..L, of one estimator; null is read as NaN."""
        return _nan_for_null(self.entropy_curve[estimator])

    def to_json(self) -> dict:
        """The JSON record (the CLI's output layout; plain types only)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "calibration": self.calibration,
            "settings": self.settings,
            "entropy_curve": self.entropy_curve,
            "attn_entropy": self.attn_entropy,
            "blocks": {g: {"delta_h": b.delta_h, "cosine": b.cosine, "angular": b.angular}
                       for g, b in self.blocks.items()},
            "angular_spans": self.angular_spans,
            "s_start": self.s_start,
            "sink": {"max_norm": self.sink_max_norm},
            "nonfinite_blocks": self.nonfinite_blocks,
            "warnings": self.warnings,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Profile:
        """Read a record written by `to_json`; ProfileFormatError names what is missing."""
        if not isinstance(data, Mapping):
            raise ProfileFormatError(f"a profile must be a JSON object; got {type(data).__name__}")
        found = data.get("schema_version")
        if found != SCHEMA_VERSION:
            raise ProfileFormatError(
                f"profile schema {found!r} is not {SCHEMA_VERSION} (schema 2 added the angular "
                "distances); rerun the analysis")
        try:
            num_layers = int(data["model"]["num_layers"])
            blocks = {g: BlockScores(
                delta_h={e: _values(data["blocks"][g]["delta_h"][e], num_layers)
                         for e in ESTIMATORS},
                cosine=_values(data["blocks"][g]["cosine"], num_layers),
                angular=_values(data["blocks"][g]["angular"], num_layers))
                for g in GRANULARITIES}
            spans = [_values(row, num_layers - n) for n, row in enumerate(data["angular_spans"])]
            return cls(
                model=dict(data["model"]),
                calibration=dict(data["calibration"]),
                settings=dict(data["settings"]),
                entropy_curve={e: _values(data["entropy_curve"][e], num_layers + 1)
                               for e in ESTIMATORS},
                attn_entropy={e: _values(data["attn_entropy"][e], num_layers)
                              for e in ESTIMATORS},
                blocks=blocks,
                angular_spans=spans,
                s_start={e: data["s_start"][e] for e in ESTIMATORS},
                sink_max_norm=[list(row) for row in data["sink"]["max_norm"]],
                nonfinite_blocks={g: list(v) for g, v in data.get("nonfinite_blocks", {}).items()},
                warnings=list(data.get("warnings", [])),
                seconds=float(data.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileFormatError(
                f"profile record is incomplete or malformed ({type(e).__name__}: {e}); "
                "rerun the analysis") from None


def _values(values, length: int) -> list[float | None]:
    out = [None if v is None else float(v) for v in values]
    if len(out) != length:
        raise ValueError(f"expected {length} values, got {len(out)}")
    return out


def _nan_for_null(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def auto_s_start_of(curve: Sequence[float | None]) -> int | None:
    """j* = argmin_j H(Z_j) over j = 0..floor(L/2) (ties to the smallest j), skipping
    non-finite and null points; None when no searched point is finite. `curve` holds L+1
    points. Layers 0..j*-1 are Stage 1; layer j* is the first that may be pruned."""
    values = _nan_for_null(curve)
    if len(values) < 2:
        return None
    best: int | None = None
    for j in range((len(values) - 1) // 2 + 1):
        if math.isfinite(values[j]) and (best is None or values[j] < values[best]):
            best = j
    return best


def _clean(values) -> list[float | None]:
    """JSON has no NaN: non-finite numbers become null."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def build_profile(
    acc: Accumulator,
    *,
    model_info: dict,
    calibration_info: dict,
    opts: EstimatorSettings,
) -> Profile:
    """Turn accumulated sums into a Profile (means over samples, dH per block)."""
    n = float(acc.samples)
    if n <= 0:
        raise ProfileFormatError("no calibration samples were processed; give at least one window")
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
    spans = []
    for width in range(1, acc.span_angular.shape[0] + 1):
        last = num_layers + 1 - width  # spans start at l = 0..L-width
        row = (acc.span_angular[width - 1, :last] / n).masked_fill(
            z_bad[:last] | z_bad[width:], float("nan"))
        spans.append(_clean(row.tolist()))
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
    return Profile(
        model={**model_info, "num_layers": num_layers},
        calibration=calibration_info,
        settings={"bins": opts.bins, "knn_k": opts.knn_k, "renyi_alpha": opts.renyi_alpha,
                  "skip_first": opts.skip_first},
        entropy_curve=curve,
        attn_entropy=attn_h,
        blocks={
            "layer": BlockScores(layer_dh, _masked(acc.layer_cosine / n, layer_bad),
                                 spans[0]),
            "attn": BlockScores(attn_dh, _masked(acc.attn_cosine / n, attn_bad),
                                _masked(acc.attn_angular / n, attn_bad)),
        },
        angular_spans=spans,
        s_start={name: auto_s_start_of(curve[name]) for name in ESTIMATORS},
        sink_max_norm=[_clean(row) for row in acc.sink_max_norm.tolist()],
        nonfinite_blocks=nonfinite_blocks,
        warnings=warnings,
    )


def _masked(values, bad: list[bool]) -> list[float | None]:
    """Scores of blocks with non-finite hidden states are unknown (the sums skip NaN)."""
    return [None if b else v for v, b in zip(_clean(values.tolist()), bad, strict=True)]


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

    def get(self, key: str) -> Profile | None:
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
        try:
            return Profile.from_json(payload)
        except ProfileFormatError as e:
            raise CacheEntryInvalid(f"cache entry {path.name}: {e}; recomputing") from e

    def put(self, key: str, profile: Profile) -> Path:
        payload = profile.to_json()
        entry = {"schema_version": SCHEMA_VERSION, "key": key, "checksum": _checksum(payload),
                 "payload": payload}
        path = self.path(key)
        atomic_write_text(path, json.dumps(entry, sort_keys=True))
        return path

    def discard(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
