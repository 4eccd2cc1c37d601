"""app/logic/runs.py: what is computed across a session's calibration runs."""

from __future__ import annotations

import pytest

from analysis.profile import Profile
from app.logic.runs import budget_ks, calibration_matrix, robustness, views_for_runs
from tests.app.sample import profile as _profile
from tests.app.sample import profile_record


def test_calibration_matrix_and_robustness():
    second = profile_record()
    second["blocks"]["attn"]["delta_h"]["knn"] = [0.5, 0.1, 0.1, 0.9, 0.3, 0.0]
    runs = [_profile(), Profile.from_json(second)]
    views = views_for_runs(runs, granularity="attn", criterion="knn", policy="auto",
                           s_start=None, allow_last=False, k=2)
    norm = calibration_matrix(runs, granularity="attn", criterion="knn",
                              mode="normalised", views=views)
    # Only the candidates 2..4 are scaled; Stage-1 and frozen blocks stay blank.
    assert [norm[0][b] is None for b in range(6)] == [True, True, False, False, False, True]
    assert min(norm[0][2:5]) == 0.0 and max(norm[0][2:5]) == 1.0
    assert norm[0].index(0.0) == views[0].order[0]
    ranks = calibration_matrix(runs, granularity="attn", criterion="knn", mode="rank",
                               views=views)
    assert ranks[0] == [None, None, 2, 0, 1, None]
    agree = robustness(runs, views)
    assert agree["picked_by_all"] == [4]
    assert agree["jaccard"][0][1] == pytest.approx(1 / 3)


def test_budget_ks_thin_but_keep_the_ends():
    assert budget_ks(0) == [0]
    assert budget_ks(4) == [0, 1, 2, 3, 4]
    ks = budget_ks(28)
    assert ks[0] == 0 and ks[-1] == 28 and len(ks) <= 9 and ks == sorted(set(ks))
