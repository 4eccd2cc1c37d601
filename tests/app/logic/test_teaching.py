"""app/logic/teaching.py: the start page's steps and the curve notes in plain words."""

from __future__ import annotations

from pathlib import Path

from analysis.profile import Profile
from app.logic.teaching import STEPS, curve_notes
from pruning.stages import plan_stages
from tests.app.sample import profile_record

APP = Path(__file__).resolve().parents[3] / "app"


def test_steps_follow_the_workflow_and_name_real_pages():
    assert [s.title for s in STEPS] == ["Model", "Calibration", "Entropy dynamics",
                                        "Prune list", "Budget", "Export"]
    assert all((APP / s.page).is_file() for s in STEPS)


def _profile(s_start_knn: int) -> Profile:
    record = profile_record()
    record["s_start"]["knn"] = s_start_knn
    return Profile.from_json(record)


def test_a_one_layer_stage_one_and_a_flat_knn_curve_are_explained():
    profile = _profile(0)
    plan = plan_stages(6, policy="auto", curve=[9.0, 8.0, 8.5, 9.0, 9.5, 9.7, 9.9])
    assert plan.s_start == 1
    notes = curve_notes(profile, plan, ["knn", "bucket"])
    assert len(notes) == 2
    assert "Why S_start is 1" in notes[0] and "only layer 0" in notes[0]
    assert "no dip" in notes[1] and "same vector" in notes[1]
    # Not plotted: no note about the knn curve.
    assert len(curve_notes(profile, plan, ["bucket"])) == 1


def test_no_note_when_the_curve_has_a_real_stage_one():
    profile = _profile(2)
    plan = plan_stages(6, policy="auto", curve=[10.0, 8.0, 7.0, 7.5, 8.0, 9.0, 9.5])
    assert plan.s_start == 2
    assert curve_notes(profile, plan, ["knn"]) == []
    manual = plan_stages(6, policy="manual", s_start=1)
    assert curve_notes(profile, manual, ["knn"]) == []
