"""A session's analysis record and what is computed across its calibration runs.

The record holds the service's typed result (`Profile` per calibration set) with the request
that produced it; the keys here name cached work (st.cache_data) by what defines it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from analysis.profile import Profile
from analysis.settings import AnalysisRequest, Granularity
from app.logic.prune_view import PruneView, build_view
from entrodrop import service
from entrodrop.service import AnalysisResult
from pruning.compare import Agreement, agreement_matrix
from pruning.ranking import Criterion
from pruning.stages import max_k


@dataclass(frozen=True)
class AnalysisRecord:
    """One session's analysis: what was asked, and the service's answer."""

    key: str
    """`request_key(request)`: names the result in st.cache_data."""
    request: AnalysisRequest
    runs: list[Profile]
    """One profile per calibration set, in request order."""
    messages: list[str] = field(default_factory=list)
    from_cache: list[bool] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def of(cls, request: AnalysisRequest, key: str, result: AnalysisResult) -> AnalysisRecord:
        return cls(key=key, request=request, runs=list(result.runs),
                   messages=list(result.messages), from_cache=list(result.from_cache),
                   seconds=result.seconds)


def json_key(*parts) -> str:
    """sha256 of the canonical JSON of `parts` (dataclasses and paths by their str)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def request_key(request: AnalysisRequest) -> str:
    """A stable key of everything the user chose for one analysis (not the file contents:
    uploads carry their content hash in their path, and the disk cache checks weights)."""
    return json_key(asdict(request))


def profile_fingerprint(profile: Profile) -> str:
    """Identity of one profile (model, calibration windows, estimator settings), for keying
    work and figures derived from it."""
    return json_key(profile.model, profile.calibration, profile.settings)


def run_label(profile: Profile, index: int) -> str:
    """A short unique label of one calibration run: `#index spec`."""
    return f"#{index} {profile.calibration.get('spec', '?')}"


def views_for_runs(runs: Sequence[Profile], **settings) -> list[PruneView]:
    """The same choices applied to every calibration run, K clamped to each run's plan."""
    views = []
    k = settings.pop("k")
    for run in runs:
        plan = service.stage_plan(
            run, policy=settings["policy"], s_start=settings["s_start"],
            allow_last=settings["allow_last"],
            stage_estimator=settings.get("stage_estimator", service.DEFAULT_STAGE_ESTIMATOR))
        views.append(build_view(run, k=min(k, max_k(plan)), **settings))
    return views


def calibration_matrix(runs: Sequence[Profile], *, granularity: Granularity,
                       criterion: Criterion, mode: str, views: Sequence[PruneView]) -> list[list]:
    """Calibration sets x blocks.

    mode 'normalised': each run's candidate scores min-max scaled to [0, 1] (0 = lowest
    score = pruned first; frozen and Stage-1 blocks: None). mode 'rank': the block's position
    in that run's pruning order (frozen blocks: None).
    """
    matrix = []
    for _run, view in zip(runs, views, strict=True):
        if mode == "rank":
            rank = {b: r for r, b in enumerate(view.order)}
            matrix.append([rank.get(b) for b in range(view.plan.num_layers)])
            continue
        # Only the candidates are scaled: frozen and Stage-1 blocks are never pruned, and
        # their (often extreme) scores would squash the colours of the blocks that are.
        values = list(view.scores)  # the criterion's scores, whichever criterion it is
        candidates = set(view.plan.prunable)
        finite = [v for b, v in enumerate(values) if b in candidates and math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = hi - lo if hi > lo else 1.0
        matrix.append([(v - lo) / span if b in candidates and math.isfinite(v) else None
                       for b, v in enumerate(values)])
    return matrix


def robustness(runs: Sequence[Profile], views: Sequence[PruneView]) -> Agreement:
    """Agreement of each calibration set's own prune set at the same settings and K."""
    pairs = enumerate(zip(runs, views, strict=True))
    return agreement_matrix({run_label(run, i): view.blocks for i, (run, view) in pairs})


def budget_ks(limit: int, max_points: int = 9) -> list[int]:
    """K values for quality curves: 0..limit, thinned to at most `max_points`, ends kept."""
    if limit <= 0:
        return [0]
    if limit + 1 <= max_points:
        return list(range(limit + 1))
    step = limit / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})
