"""A profile with known scores (on top of tests/profiles.py), and prune views of it."""

from __future__ import annotations

from analysis.profile import Profile
from analysis.settings import ESTIMATORS, GRANULARITIES
from app.logic.prune_view import PruneView, build_view
from tests.profiles import profile_json


def profile_record(num_layers: int = 6) -> dict:
    """Curve minimum at j = 2 (S_start 2); knn dH and cosine with known orders; a sink of
    norm 100 at position 0 against 5 elsewhere."""
    curve = [10.0, 8.0, 7.0, 7.5, 8.0, 9.0, 9.5][: num_layers + 1]
    knn = [0.5, 0.1, 0.4, 0.2, 0.3, 0.05][:num_layers]
    cosine = [0.9, 0.3, 0.2, 0.1, 0.4, 0.05][:num_layers]
    record = profile_json(num_layers, curve={e: curve for e in ESTIMATORS},
                          delta_h={g: {e: knn for e in ESTIMATORS} for g in GRANULARITIES},
                          cosine={g: cosine for g in GRANULARITIES},
                          calibration_spec="builtin:random")
    record["s_start"] = {e: 2 for e in ESTIMATORS}
    record["sink"] = {"max_norm": [[100.0] + [5.0] * 7 for _ in range(num_layers + 1)]}
    return record


def profile(num_layers: int = 6) -> Profile:
    return Profile.from_json(profile_record(num_layers))


def view(k: int = 2, **kw) -> PruneView:
    settings = dict(granularity="attn", criterion="knn", policy="auto", s_start=None,
                    allow_last=False, k=k)
    settings.update(kw)
    return build_view(profile(), **settings)
