"""app/logic/provenance.py: result stamps, what changed, and which K a curve can take."""

from __future__ import annotations

from analysis.settings import (
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    ModelSettings,
)
from app.logic.provenance import (
    analysis_changes,
    changes,
    describe_stamp,
    feasible_ks,
    prune_stamp,
    request_stamp,
)
from tests.app.sample import view as _view


def _request(spec="demo:smollm2-135m", samples=8, source="builtin:licenses"):
    return AnalysisRequest(model=ModelSettings(spec),
                           calibrations=(CalibrationSettings(source, samples, 64, 1),),
                           estimators=EstimatorSettings())


def test_a_prune_stamp_changes_with_k_and_names_the_change():
    before, after = prune_stamp(_view(k=2), "m"), prune_stamp(_view(k=1), "m")
    assert before["blocks"] == [3, 4] and after["blocks"] == [3]
    assert changes(before, after) == ["K 2 → 1", "pruned blocks [3, 4] → [3]"]
    assert changes(before, dict(before)) == []


def test_changes_compares_only_keys_both_stamps_have():
    made = {**prune_stamp(_view(k=1), "m"), "prompt": "Hi"}
    assert changes(made, prune_stamp(_view(k=1), "m")) == []
    assert changes(made, {**made, "prompt": "Bye"}) == ["prompt Hi → Bye"]


def test_analysis_changes_name_the_model_and_the_data():
    done = _request()
    assert analysis_changes(done, done.model, done) == []
    moved = _request(spec="/no/such/model", samples=16)
    found = analysis_changes(done, moved.model, moved)
    assert found == ["model demo:smollm2-135m → /no/such/model", "N 8 → 16"]
    # Invalid calibration settings: the model is still compared, and the data is flagged.
    partial = analysis_changes(done, ModelSettings("/other"), None)
    assert partial[0] == "model demo:smollm2-135m → /other" and "not valid" in partial[1]


def test_describe_stamp_is_one_readable_line():
    line = describe_stamp(request_stamp(_request()), ["model", "sources", "samples", "seqlen"])
    assert line == "model demo:smollm2-135m · calibration sources [builtin:licenses] · N 8 · T 64"


def test_feasible_ks_leaves_out_what_the_plan_cannot_prune():
    assert feasible_ks([0, 4, 8, 30, 28], 29) == ([0, 4, 8, 28], [30])
    assert feasible_ks([0, 1, 2], 2) == ([0, 1, 2], [])
    assert feasible_ks([-1, 0], 0) == ([0], [-1])
