"""The draggable entropy curve: a Vega-Lite spec whose Stage-1/Stage-2 boundary follows
the pointer in the browser, and the S_start a release asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from app.charts.style import KEPT, PRUNED, SERIES, STAGE1, number

BOUNDARY_PARAM = "s_start_drag"


def _boundary_expr(s_start: int, last: int) -> str:
    """The boundary as a Vega expression: the point under the pointer while it is dragged,
    else the current S_start. Clamped to 0..last (the last point j = L is no block)."""
    p = BOUNDARY_PARAM
    return (f"clamp(isValid({p}) && isValid({p}.j) ? {p}.j[0] : {int(s_start)}, 0, {int(last)})")


def entropy_curve_spec(curves: Mapping[str, Sequence], estimators: Sequence[str],
                       s_start: int, *, row_height: int = 170) -> dict:
    """The entropy curve as a Vega-Lite spec whose Stage-1/Stage-2 boundary is dragged.

    One row per estimator (their scales differ). Pressing on the chart and moving the
    pointer moves the boundary to the nearest point j: the shading, the dashed line and the
    labels follow the pointer in the browser, with no server round trip; the selection
    `BOUNDARY_PARAM` ({"j": [j]}) reaches the app when the pointer is released. The labels
    sit above the plot area, beside the line, so neither the line nor a data point ever
    crosses them.
    """
    names = [e for e in estimators if e in curves] or list(curves)[:1]
    num_points = max(len(curves[n]) for n in names)
    last = max(num_points - 2, 0)  # S_start ranges over blocks 0..L-1
    b = _boundary_expr(s_start, last)
    # The y axes are drawn inside the plot, in a margin left of j = 0: Streamlit sets each
    # row of a stretched chart to the full container width, so an axis outside it would
    # push the chart past the page's edge.
    left = -0.5 - max(1.2, 0.06 * num_points)
    x_scale = {"domain": [left, num_points - 0.5], "nice": False, "zero": False}
    x_axis = {"title": "j (Z_0 = embeddings, Z_j = output of layer j-1)", "tickMinStep": 1,
              "values": list(range(num_points)), "grid": False}
    # Pixel position of the boundary; the x scale is shared by every row, so it is "x".
    px = "scale('x', datum.edge)"
    wide = "range('x')[1]"
    rows = []
    for i, name in enumerate(names):
        colour = SERIES.get(name, KEPT)
        one = [{"filter": {"field": "estimator", "equal": name}}]
        edge = [*one, {"filter": "datum.j == 0"}, {"calculate": b, "as": "edge"},
                {"calculate": str(left), "as": "left"}]
        x_enc = {"field": "j", "type": "quantitative", "scale": x_scale,
                 "axis": x_axis if i == len(names) - 1 else {**x_axis, "title": None,
                                                             "labels": False}}
        layers = [
            {"transform": edge, "mark": {"type": "rect", "color": STAGE1, "opacity": 0.25},
             "encoding": {"x": {"field": "left", "type": "quantitative", "scale": x_scale},
                          "x2": {"field": "edge"}}},
            {"transform": one, "mark": {"type": "line", "color": colour},
             "encoding": {"x": x_enc, "y": {"field": "H", "type": "quantitative",
                                            "scale": {"zero": False},
                                            "axis": {"title": f"{name} H, nats",
                                                     "labelAlign": "left", "labelPadding": -22,
                                                     "ticks": False, "domain": False,
                                                     "titleX": 10, "titleFontSize": 11,
                                                     "tickCount": 5, "labelFontSize": 10,
                                                     "labelBaseline": "middle"}}}},
            {"name": f"curve_{i}", "transform": one,
             "mark": {"type": "point", "filled": True, "size": 60, "color": colour,
                      "cursor": "ew-resize"},
             "encoding": {"x": x_enc, "y": {"field": "H", "type": "quantitative"},
                          "tooltip": [{"field": "j", "type": "quantitative"},
                                      {"field": "H", "type": "quantitative", "format": ".4g"}]}},
            {"transform": edge,
             "mark": {"type": "rule", "color": PRUNED, "strokeDash": [6, 4], "strokeWidth": 2},
             "encoding": {"x": {"field": "edge", "type": "quantitative"}}},
        ]
        if i == 0:
            # Above the plot area: "S_start = b" over the line, the stage names either side
            # of it, shortened or dropped where the row has no room for them.
            text = {"type": "text", "baseline": "bottom", "fontSize": 12}
            layers += [
                {"transform": edge, "mark": {
                    **text, "y": -24, "fontWeight": "bold", "color": PRUNED,
                    "align": "center",
                    "x": {"expr": f"clamp({px}, 45, {wide} - 45)"},
                    "text": {"expr": "'S_start = ' + datum.edge"}}},
                {"transform": edge, "mark": {
                    **text, "y": -8, "align": "right", "color": "#555",
                    "x": {"expr": f"{px} - 6"},
                    "text": {"expr": f"{px} >= 170 ? '◀ Stage 1 (never pruned)' : "
                                     f"{px} >= 70 ? '◀ Stage 1' : ''"}}},
                {"transform": edge, "mark": {
                    **text, "y": -8, "align": "left", "color": "#555",
                    "x": {"expr": f"{px} + 6"},
                    "text": {"expr": f"{wide} - {px} >= 170 ? 'Stage 2 (may be pruned) ▶' : "
                                     f"{wide} - {px} >= 80 ? 'Stage 2 ▶' : ''"}}},
            ]
        rows.append({"height": row_height, "layer": layers})
    values = [{"estimator": name, "j": j, "H": number(v)}
              for name in names for j, v in enumerate(curves[name])]
    return {
        "data": {"values": values},
        "params": [{
            "name": BOUNDARY_PARAM,
            "views": [f"curve_{i}" for i in range(len(names))],
            # Press, then move: the nearest point along x follows the pointer; the value
            # is sent to the app on release (Streamlit holds selections during a gesture).
            "select": {"type": "point", "encodings": ["x"], "nearest": True, "clear": False,
                       "on": "pointerdown, [pointerdown, window:pointerup] > pointermove"},
        }],
        "vconcat": rows,
        "spacing": 14,
        "resolve": {"scale": {"x": "shared"}},
        "title": {"text": "Entropy of the residual stream",
                  "subtitle": "Drag on the chart to move S_start; the shaded points are "
                              "Stage 1.", "anchor": "start", "offset": 30},
        "usermeta": {"embedOptions": {"renderer": "svg"}},
    }


def dragged_s_start(event: Mapping | None, num_layers: int) -> int | None:
    """The S_start a release on `entropy_curve_spec` asks for (the selection Streamlit
    returns), clamped to the blocks 0..num_layers-1; None when it holds no point."""
    points = ((event or {}).get("selection") or {}).get(BOUNDARY_PARAM) or []
    if not isinstance(points, list) or not points or not isinstance(points[0], Mapping):
        return None
    j = points[0].get("j")
    if isinstance(j, list):
        j = j[0] if j else None
    if not isinstance(j, int | float) or isinstance(j, bool) or not math.isfinite(j):
        return None
    return min(max(int(round(j)), 0), max(num_layers - 1, 0))
