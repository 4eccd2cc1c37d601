"""The dashboard with the model forced to stream: it analyses, evaluates and exports one
decoder layer at a time, and every figure equals the in-memory one."""

import glob
import json

import pytest
import torch
from safetensors.torch import load_file

from analysis.settings import CalibrationSettings, EstimatorSettings, ModelSettings
from entrodrop import service


def _tensors(folder):
    out = {}
    for f in glob.glob(str(folder / "*.safetensors")):
        out.update(load_file(f))
    return out


def test_streamed_model_analyses_evaluates_and_exports_like_memory(ui, tmp_path, monkeypatch,
                                                                    tiny_model_dir):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.start("model")
    at.selectbox(key="load_mode").set_value("stream").run()
    assert any("layer streaming" in c.value for c in at.caption)
    at.button(key="load_model").click().run()
    ui.assert_clean(at)
    assert any(m.label == "Layers (L)" for m in at.metric)

    at.switch_page("views/calibration.py").run()
    ui.set_calibration(at, seed=51)
    at.button(key="run_analysis").click().run()
    ui.assert_clean(at)
    profile = at.session_state["analysis"].runs[0]

    at.slider(key="k").set_value(2).run()
    at.switch_page("views/budget.py").run()
    ui.assert_clean(at)
    assert any("need the whole model" in c.value for c in at.caption)
    assert at.button(key="run_speed").disabled and at.button(key="run_generate").disabled
    at.number_input(key="budget_held_out").set_value(2).run()
    at.button(key="run_budget").click().run()
    ui.assert_clean(at)
    rows = at.session_state["budget_result"]["rows"]
    view = at.session_state["_view"]

    at.switch_page("views/export.py").run()
    at.text_input(key="export_name").set_value("streamed-k2").run()
    at.button(key="run_export").click().run()
    ui.assert_clean(at)

    # The same work with the whole model in memory, through the same service calls.
    settings = ModelSettings(str(tiny_model_dir), load="memory")
    memory = service.load(settings)
    assert not isinstance(memory, service.StreamedModel)
    cal = CalibrationSettings("builtin:random", 4, 32, 51)
    request = service.analysis_request(settings, [cal], EstimatorSettings(knn_k=5),
                                       use_cache=False)
    expected = service.analyze(request, loaded=memory).runs[0]
    for e in ("bucket", "knn", "renyi"):
        assert profile.curve(e) == pytest.approx(expected.curve(e), rel=1e-5)
    ids = service.held_out_windows(cal, memory, 2)
    orders = {"knn": view.decision.order, "cosine": view.baseline_decision.order}
    want = service.quality_over_k(memory, ids, orders, view.granularity, [r["k"] for r in rows
                                                                        if r["criterion"] == "knn"])
    got = {(r["criterion"], r["k"]): r for r in rows}
    for r in want:
        for key in ("perplexity", "kl", "top1"):
            assert got[(r["criterion"], r["k"])][key] == pytest.approx(r[key], rel=1e-5, abs=1e-7)
    out = service.export_blocks(memory, profile, view.decision, tmp_path / "memory-k2")
    a, b = _tensors(root / "streamed-k2"), _tensors(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in b)
    streamed = json.loads((root / "streamed-k2" / "entrodrop.json").read_text())
    assert streamed["blocks"] == sorted(view.blocks)
