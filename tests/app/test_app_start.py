"""The start page: what the tool is, the steps in order, and the one-click demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.logic.teaching import DEMO_MODEL, DEMO_SAMPLES, DEMO_SEQLEN, DEMO_SOURCE, STEPS


def test_the_app_opens_on_the_start_page_with_the_steps_in_order(ui):
    at = ui.start()
    ui.assert_clean(at)
    assert [t.value for t in at.title] == ["EntroDrop Studio"]
    links = [link.proto.label for link in at.get("page_link")]
    assert links == [f"{i}. {s.title}" for i, s in enumerate(STEPS, start=1)]
    assert at.button(key="run_demo").proto.label == "Run the demo"
    assert DEMO_MODEL in "\n".join(c.value for c in at.caption)


@pytest.mark.slow
def test_the_demo_loads_the_demo_model_analyses_a_builtin_source_and_opens_dynamics(
        ui, tmp_path, monkeypatch, demo_cache_dir):
    # A fresh profile cache, with the converted demo model shared (the conversion is slow).
    cache = tmp_path / "cache"
    cache.mkdir()
    models = Path(demo_cache_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
    at = ui.start()
    at.button(key="run_demo").click().run(timeout=600)
    ui.assert_clean(at)
    assert [t.value for t in at.title] == ["Entropy dynamics"]
    record = at.session_state["analysis"]
    assert record.request.model.spec == DEMO_MODEL
    assert [c.spec for c in record.request.calibrations] == [DEMO_SOURCE]
    assert (record.runs[0].calibration["samples"], record.runs[0].calibration["seqlen"]) == (
        DEMO_SAMPLES, DEMO_SEQLEN)
    assert len(ui.vega_charts(at)) == 1  # the draggable entropy curve
    assert len(ui.charts(at)) == 2  # score per block, attention-sink diagnostic
    # On SmolLM2 the automatic S_start is 1 and the knn curve has no dip: both explained
    # in words next to the curve.
    assert at.session_state["_view"].plan.s_start == 1
    assert record.runs[0].s_start["knn"] == 0
    notes = [i.value for i in at.info]
    assert any("Why S_start is 1" in n for n in notes)
    assert any("Why the knn curve has no dip" in n for n in notes)
