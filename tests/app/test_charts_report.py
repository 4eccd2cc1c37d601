"""app/charts/ and app/report.py: the figures and the self-contained HTML report."""

from __future__ import annotations

import math
import re

import pytest

from analysis.settings import AnalysisRequest, ModelSettings
from app import charts, report
from app.logic.runs import AnalysisRecord
from tests.app.sample import profile as _profile
from tests.app.sample import view as _view


def test_entropy_curve_marks_stage_one_and_s_start():
    fig = charts.entropy_curve_figure(_profile().entropy_curve, ["knn"], 2)
    shapes = fig.to_dict()["layout"]["shapes"]
    assert any(s["type"] == "rect" and s["x1"] == 2 for s in shapes)  # Stage 1 shaded
    assert any(s["type"] == "line" and s["x0"] == 2 for s in shapes)  # S_start marked
    assert list(fig.data[0].customdata) == list(range(7))


def test_delta_h_bars_highlight_the_pruned_blocks():
    view = _view(k=2)
    fig = charts.delta_h_figure({"attn": view.scores}, {"attn": view.blocks}, "knn",
                                view.plan.s_start, view.plan.frozen)
    colours = list(fig.data[0].marker.color)
    assert [i for i, c in enumerate(colours) if c == charts.PRUNED] == [3, 4]
    assert colours[0] == charts.STAGE1 and colours[5] == charts.FROZEN


def test_sink_figure_uses_log_norms():
    fig = charts.sink_figure(_profile().sink_max_norm, skip_first=1)
    heat = fig.data[-1]
    assert heat.z[0][0] == pytest.approx(2.0)
    assert math.isclose(heat.z[0][1], math.log10(5.0))


def test_report_is_one_self_contained_html_file():
    runs = [_profile(), _profile()]
    record = AnalysisRecord(key="k", request=AnalysisRequest(model=ModelSettings("tiny")),
                            runs=runs, messages=["hello"])
    snap = {"analysis": record,
            "run_index": 0,
            "view_settings": {"granularity": "attn", "criterion": "knn", "policy": "auto",
                              "s_start": 0, "allow_last": False, "k": 2},
            "curve_estimators": ["knn"],
            "budget": {"rows": [{"criterion": "knn", "k": 0, "perplexity": 5.0, "kl": 0.0,
                                 "top1": 1.0}]},
            "width": None}
    text = report.build_html(snap)
    assert text.startswith("<!DOCTYPE html>")
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing fetched: no CDN
    assert text.count("Plotly.newPlot") == 6  # curve, dH, sink, heatmap, agreement, quality
    assert len(text) > 1_000_000  # plotly.js itself is inline
    assert "3,4,2,0,1,5" in text and "RANK of layer i" in text
    assert "<h2>Robustness</h2>" in text


def test_report_without_analysis():
    text = report.build_html({"analysis": None, "view_settings": {}})
    assert "No analysis has been run yet" in text
