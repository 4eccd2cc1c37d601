"""app/charts/: what each figure shows, checked on the figure's own data and layout."""

from __future__ import annotations

import json
import math

import pytest

from app import charts
from tests.app.sample import profile as _profile
from tests.app.sample import view as _view

SMOLLM_LIKE_DH = [1512.0, 110.0, 95.0, 40.0, 30.0, 25.0, 60.0, 118.0]


# --------------------------------------------------------------------------- entropy curve

def _annotation(fig, name):
    found = [a for a in fig.layout.annotations if a.name == name]
    assert len(found) == 1, [a.name for a in fig.layout.annotations]
    return found[0]


@pytest.mark.parametrize("s_start", [2, 5, 29])
def test_entropy_curve_labels_sit_beside_the_line_above_the_data(s_start):
    curve = [10.0 - 0.1 * j for j in range(31)]  # 30 layers, points j = 0..30
    fig = charts.entropy_curve_figure({"knn": curve}, ["knn"], s_start)
    stage1 = _annotation(fig, "stage1")
    label = _annotation(fig, "s_start")
    # Above the plot area (y domain 1, anchored at its bottom): no data point lies there.
    for a in (stage1, label):
        assert a.yref == "y domain" and a.y == 1.0 and a.yanchor == "bottom"
    # Stage 1's text ends left of the line, so the line never crosses it.
    assert stage1.x == s_start and stage1.xanchor == "right" and stage1.xshift < 0
    assert "Stage 1" in stage1.text
    assert f"S_start = {s_start}" in label.text and label.yshift > 0


def test_entropy_curve_drops_the_stage_two_label_where_there_is_no_room():
    fig = charts.entropy_curve_figure({"knn": list(range(31))}, ["knn"], 29)
    names = [a.name for a in fig.layout.annotations]
    assert "stage2" not in names
    assert _annotation(fig, "s_start").xanchor == "right"  # kept inside the plot


def test_stage_labels_shorten_then_vanish_on_a_narrow_side():
    assert charts.stage_labels(15, 31) == ("◀ Stage 1 (never pruned)", "Stage 2 (may be pruned) ▶")
    assert charts.stage_labels(2, 31) == ("◀ Stage 1", "Stage 2 (may be pruned) ▶")
    assert charts.stage_labels(0, 31)[0] == ""
    assert charts.stage_labels(29, 31)[1] == ""


# --------------------------------------------------------------------------- draggable curve

def test_curve_spec_is_plain_json_with_one_row_per_estimator_and_the_drag_selection():
    curves = _profile().entropy_curve
    spec = charts.entropy_curve_spec(curves, ["bucket", "knn"], 2)
    json.dumps(spec)  # goes to the browser as it is
    assert len(spec["vconcat"]) == 2
    (param,) = spec["params"]
    assert param["name"] == charts.BOUNDARY_PARAM
    assert param["select"]["encodings"] == ["x"] and param["select"]["nearest"] is True
    assert "pointermove" in param["select"]["on"]  # follows the pointer while pressed
    assert param["views"] == ["curve_0", "curve_1"]
    values = spec["data"]["values"]
    assert {(v["estimator"], v["j"]) for v in values} == {
        (e, j) for e in ("bucket", "knn") for j in range(7)}


def test_curve_spec_draws_the_boundary_at_s_start_until_dragged():
    spec = charts.entropy_curve_spec(_profile().entropy_curve, ["knn"], 3)
    layers = spec["vconcat"][0]["layer"]
    rect = next(ly for ly in layers if ly["mark"]["type"] == "rect")
    edge = next(t["calculate"] for t in rect["transform"] if t.get("as") == "edge")
    # The dragged point when there is one, else S_start (3), within blocks 0..L-1 (0..5).
    assert f"{charts.BOUNDARY_PARAM}.j[0]" in edge and ": 3," in edge
    assert edge.endswith(", 0, 5)")
    rule = next(ly for ly in layers if ly["mark"]["type"] == "rule")
    assert rule["encoding"]["x"]["field"] == "edge"
    # The labels are placed above the plot (negative y), beside the line.
    texts = [ly["mark"] for ly in layers if ly["mark"]["type"] == "text"]
    assert len(texts) == 3 and all(t["y"] < 0 for t in texts)
    assert {t["align"] for t in texts} == {"center", "left", "right"}


@pytest.mark.parametrize(("event", "expected"), [
    ({"selection": {charts.BOUNDARY_PARAM: [{"j": 4}]}}, 4),
    ({"selection": {charts.BOUNDARY_PARAM: [{"j": 6}]}}, 5),  # point L: clamped to L-1
    ({"selection": {charts.BOUNDARY_PARAM: [{"j": -1}]}}, 0),
    ({"selection": {charts.BOUNDARY_PARAM: []}}, None),
    ({"selection": {}}, None),
    ({"selection": {charts.BOUNDARY_PARAM: [{"j": "x"}]}}, None),
    (None, None),
])
def test_dragged_s_start_reads_the_released_point(event, expected):
    assert charts.dragged_s_start(event, num_layers=6) == expected


# --------------------------------------------------------------------------- score bars

def test_outliers_finds_the_bar_that_dwarfs_the_rest():
    top, clipped = charts.outliers(SMOLLM_LIKE_DH)
    assert clipped == [0]
    assert 118.0 < top < 200.0


def test_outliers_leaves_an_even_chart_alone():
    assert charts.outliers([1.0, 2.0, 3.0, 2.5, None, float("nan")]) == (None, [])


def test_delta_h_clips_block_zero_and_labels_its_value():
    n = len(SMOLLM_LIKE_DH)
    fig = charts.delta_h_figure({"layer": SMOLLM_LIKE_DH, "attn": [1.0] * n},
                                {"layer": [4], "attn": [4]}, "knn", 1, [n - 1])
    top = fig.layout.yaxis.range[1]
    assert 118.0 < top < 200.0
    assert fig.layout.yaxis2.range is None  # the even row keeps its own autorange
    (note,) = [a for a in fig.layout.annotations if a.name and a.name.startswith("clipped")]
    assert "1512" in note.text and note.x == 0 and note.y == top


# --------------------------------------------------------------------------- sink

def test_sink_figure_sets_the_sink_beside_the_other_positions():
    fig = charts.sink_figure(_profile().sink_max_norm, skip_first=1)
    sink, median, largest, heat = fig.data
    assert list(sink.x) == [pytest.approx(2.0)] * 7  # log10 100 at t = 0
    assert list(median.x) == [pytest.approx(math.log10(5.0))] * 7
    assert heat.type == "heatmap" and heat.z[0][0] == pytest.approx(2.0)
    assert sink.x[0] - median.x[0] > 1.0  # the gap reads as more than a decade


# --------------------------------------------------------------------------- heatmap

def test_calibration_heatmap_letters_the_blocks_never_pruned_and_lays_the_bar_flat():
    matrix = [[None, None, 0.2, 0.0, 1.0, None]]
    blocked = [{0: "stage 1", 1: "stage 1", 5: "frozen"}]
    fig = charts.calibration_heatmap_figure(["#0 a"], matrix, [[3]], "normalised", 0,
                                            blocked=blocked)
    scores, grey = fig.data
    assert list(grey.text[0]) == ["S1", "S1", "", "", "", "F"]
    assert [v is not None for v in grey.z[0]] == [True, True, False, False, False, True]
    assert grey.showscale is False
    bar = scores.colorbar
    assert bar.orientation == "h" and bar.thickness >= 12 and bar.len >= 0.4
    assert fig.layout.height >= 250  # one source still gets a readable chart


# --------------------------------------------------------------------------- budget

ROWS = [{"criterion": c, "k": k, "perplexity": p, "kl": k / 10, "top1": 1 - k / 30}
        for c, curve in (("knn", [20.6, 29.1, 62.0, 990.0, 1.2e26]),
                         ("cosine", [20.6, 25.0, 55.0, 400.0, 7.4e4]))
        for k, p in zip((0, 3, 10, 20, 28), curve, strict=True)]


def test_quality_clips_extreme_perplexity_and_marks_it():
    fig = charts.quality_figure(ROWS, marker_x=5, marker_label="current K = 5")
    cap = 20.6 * charts.EXTREME_FACTOR
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.range[1] == pytest.approx(math.log10(cap) + 0.15)
    knn = next(t for t in fig.data if t.name == "knn" and t.xaxis == "x")
    assert knn.y[-1] is None and knn.y[-2] == pytest.approx(990.0)
    off = [t for t in fig.data if t.name and t.name.endswith("off the chart")]
    assert {t.name for t in off} == {"knn: off the chart", "cosine: off the chart"}
    knn_off = next(t for t in off if t.name.startswith("knn"))
    assert list(knn_off.x) == [28] and list(knn_off.y) == [pytest.approx(cap)]
    assert knn_off.text[0] == "1.2e+26"
    labels = [a for a in fig.layout.annotations if a.name == "marker"]
    assert len(labels) == 3 and all(a.text == "current K = 5" and a.x == 5 for a in labels)


def test_quality_without_clipping_on_a_linear_axis_shows_every_value():
    fig = charts.quality_figure(ROWS, scale="linear", clip=False)
    assert fig.layout.yaxis.type != "log" and fig.layout.yaxis.range is None
    knn = next(t for t in fig.data if t.name == "knn" and t.xaxis == "x")
    assert knn.y[-1] == pytest.approx(1.2e26)
    assert not [t for t in fig.data if t.name and t.name.endswith("off the chart")]


# --------------------------------------------------------------------------- orders

def _paths(fig) -> dict[int, tuple[str, list[tuple[int, int]]]]:
    """block -> (line colour, [(column, rank)...]) from the order figure's gap-separated
    traces."""
    out = {}
    for trace in fig.data:
        run = []
        for x, y, t in zip(trace.x, trace.y, trace.text, strict=True):
            if x is None:
                block = int(run[0][2])
                out[block] = (trace.line.color, [(c, r) for c, r, _ in run])
                run = []
            else:
                run.append((x, y, t))
    return out


def test_order_figure_joins_each_block_across_any_number_of_orders():
    orders = {"knn": [3, 4, 2, 5], "cosine": [4, 3, 5, 2], "random": [2, 3, 4, 5]}
    fig = charts.order_figure(orders, k=2, stage1=[0, 1])
    paths = _paths(fig)
    assert set(paths) == {2, 3, 4, 5}
    assert paths[3][1] == [(0, 0), (1, 1), (2, 1)]
    assert paths[5][1] == [(0, 3), (1, 2), (2, 3)]
    # Block 3 is in every prune set at K=2, block 4 in two of three, block 5 in none.
    assert paths[3][0] == charts.PRUNED
    assert paths[4][0] == charts.BASELINE_ONLY
    assert paths[5][0] not in (charts.PRUNED, charts.BASELINE_ONLY)
    assert len(fig.data) == 3  # one trace per kind of line, whatever the number of blocks
    assert list(fig.layout.xaxis.ticktext) == ["knn", "cosine", "random"]
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # rank 0 on top
    cut = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(cut) == 1 and cut[0].y0 == 1.5
    assert any("0, 1" in a.text for a in fig.layout.annotations)


def test_order_figure_of_the_page_view_has_its_prune_set_on_top():
    view = _view(k=2)
    fig = charts.order_figure({view.criterion: view.order, view.baseline: view.baseline_order},
                              view.k)
    paths = _paths(fig)
    assert paths[view.order[0]][1][0] == (0, 0)
    assert {b for b, (colour, _) in paths.items() if colour == charts.PRUNED} == (
        set(view.blocks) & set(view.baseline_blocks))
