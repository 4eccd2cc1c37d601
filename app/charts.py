"""Plotly figure builders. Plain data in, `go.Figure` out: no Streamlit, no model.

The same builders serve the pages and the HTML report, so both always show the same thing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PRUNED = "#d62728"
BASELINE_ONLY = "#ff7f0e"
KEPT = "#1f77b4"
STAGE1 = "#9e9e9e"
FROZEN = "#d0d0d0"
SERIES = {"bucket": "#2ca02c", "knn": "#1f77b4", "renyi": "#9467bd", "cosine": "#ff7f0e",
          "taylor-entropy": "#1f77b4", "taylor-ce": "#ff7f0e", "magnitude": "#7f7f7f",
          "unpruned": "#000000"}
_MARGIN = dict(l=60, r=20, t=50, b=50)


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def stage_labels(s_start: int, num_points: int) -> tuple[str, str]:
    """The texts either side of the S_start line: (Stage-1 side, Stage-2 side), shortened
    or left empty where the side is too narrow for them (the charts are ~900 px wide;
    a long label needs about a sixth of it)."""
    left = (s_start + 0.5) / num_points
    right = 1.0 - left
    stage1 = ("◀ Stage 1 (never pruned)" if left >= 0.18 else
              "◀ Stage 1" if left >= 0.08 else "")
    stage2 = ("Stage 2 (may be pruned) ▶" if right >= 0.18 else
              "Stage 2 ▶" if right >= 0.08 else "")
    return stage1, stage2


def entropy_curve_figure(curves: Mapping[str, Sequence], estimators: Sequence[str],
                         s_start: int, *,
                         stage1_label: str | None = None) -> go.Figure:
    """H(Z_j) for j = 0..L, one row per estimator (their scales differ), Stage 1 shaded
    (j = 0..S_start) and S_start marked. The labels sit above the top row's plot area,
    beside the line (Stage 1 to its left, Stage 2 to its right), so neither the line nor
    a data point crosses them. Points carry j so a click can move S_start."""
    names = [e for e in estimators if e in curves] or list(curves)[:1]
    num_points = max(len(curves[n]) for n in names)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.05)
    for row, name in enumerate(names, start=1):
        ys = [_num(v) for v in curves[name]]
        xs = list(range(len(ys)))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, customdata=xs,
            line=dict(color=SERIES.get(name)), marker=dict(size=8),
            hovertemplate="j=%{x}<br>H=%{y:.4g}<extra>" + name + "</extra>",
        ), row=row, col=1)
        fig.update_yaxes(title_text=f"{name} H, nats", row=row, col=1)
    if s_start > 0:
        fig.add_vrect(x0=-0.5, x1=s_start, fillcolor=STAGE1, opacity=0.18, line_width=0)
    fig.add_vline(x=s_start, line_dash="dash", line_color=PRUNED)
    stage1, stage2 = stage_labels(s_start, num_points)
    if stage1_label is not None and stage1:
        stage1 = "◀ " + stage1_label
    top = dict(xref="x", yref="y domain", y=1.0, yanchor="bottom", showarrow=False,
               font=dict(size=12, color="#555"))
    centre = "right" if s_start + 0.5 > 0.9 * num_points else (
        "left" if s_start + 0.5 < 0.1 * num_points else "center")
    fig.add_annotation(x=s_start, text=f"<b>S_start = {s_start}</b>", xanchor=centre,
                       yshift=18, **{**top, "font": dict(size=12, color=PRUNED)},
                       name="s_start")
    if stage1:
        fig.add_annotation(x=s_start, text=stage1, xanchor="right", xshift=-6, name="stage1",
                           **top)
    if stage2:
        fig.add_annotation(x=s_start, text=stage2, xanchor="left", xshift=6, name="stage2",
                           **top)
    fig.update_xaxes(range=[-0.5, num_points - 0.5], dtick=1)
    fig.update_xaxes(title_text="j (Z_0 = embeddings, Z_j = output of layer j-1)",
                     row=len(names), col=1)
    fig.update_layout(height=230 * len(names) + 110, margin=dict(_MARGIN, t=100),
                      showlegend=False, clickmode="event+select",
                      title="Entropy of the residual stream")
    return fig


def _bar_colours(num_layers: int, pruned: set[int], s_start: int, frozen: set[int]) -> list[str]:
    colours = []
    for b in range(num_layers):
        if b in pruned:
            colours.append(PRUNED)
        elif b < s_start:
            colours.append(STAGE1)
        elif b in frozen:
            colours.append(FROZEN)
        else:
            colours.append(KEPT)
    return colours


def outliers(values: Sequence[float | None], ratio: float = 3.0) -> tuple[float | None, list[int]]:
    """(axis top, indices above it): the largest values that each stand more than `ratio`
    times above the next largest magnitude are outliers, and the axis stops a little above
    the rest. (None, []) when nothing stands out, or too little is left to scale by."""
    finite = sorted(((abs(v), i) for i, v in enumerate(values)
                     if v is not None and math.isfinite(v)), reverse=True)
    cut = 0
    while cut + 1 < len(finite) and finite[cut][0] > ratio * max(finite[cut + 1][0], 1e-12):
        cut = cut + 1
    # Only a few points may be clipped: a chart of mostly clipped bars shows nothing.
    if cut == 0 or cut > max(1, len(finite) // 5) or finite[cut][0] <= 0:
        return None, []
    return 1.25 * finite[cut][0], sorted(i for _, i in finite[:cut])


def delta_h_figure(scores: Mapping[str, Sequence], pruned: Mapping[str, Sequence[int]],
                   criterion: str, s_start: int, frozen: Sequence[int]) -> go.Figure:
    """One bar chart per granularity ('layer', 'attn') of the criterion's block scores;
    red = pruned at the current K, grey = Stage 1, light grey = frozen. A bar many times
    taller than every other (block 0's dH on most models) is clipped at the axis top and
    labelled with its value, so the other bars stay readable."""
    grans = list(scores)
    what = "importance 1 - cos(X, Y)" if criterion == "cosine" else "dH = H(Y) - H(X)"
    fig = make_subplots(rows=len(grans), cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[f"{g} blocks: {criterion} {what}" for g in grans])
    for row, gran in enumerate(grans, start=1):
        ys = [_num(v) for v in scores[gran]]
        colours = _bar_colours(len(ys), set(pruned.get(gran, ())), s_start, set(frozen))
        fig.add_trace(go.Bar(
            x=list(range(len(ys))), y=ys, marker_color=colours, name=gran,
            hovertemplate="block %{x}<br>%{y:.4g}<extra>" + gran + "</extra>",
        ), row=row, col=1)
        fig.update_yaxes(title_text=criterion, row=row, col=1)
        top, clipped = outliers(ys)
        if clipped:
            rest = [v for i, v in enumerate(ys) if v is not None and i not in clipped]
            low = min([0.0, *rest])
            fig.update_yaxes(range=[low * 1.25 if low < 0 else 0.0, top], row=row, col=1)
            for i in clipped:
                v = ys[i]
                fig.add_annotation(x=i, y=top if v > 0 else low * 1.25, text=f"{v:.4g} (clipped)",
                                   showarrow=False, xanchor="left", xshift=4,
                                   yanchor="top" if v > 0 else "bottom",
                                   font=dict(size=11), bgcolor="rgba(255,255,255,0.8)",
                                   row=row, col=1, name=f"clipped {gran} {i}")
    fig.update_xaxes(title_text="block (layer index)", dtick=1, row=len(grans), col=1)
    fig.update_layout(height=260 * len(grans) + 60, margin=_MARGIN, showlegend=False,
                      title="Score per block (red: pruned at the current K)")
    return fig


def sink_figure(max_norm: Sequence[Sequence], skip_first: int) -> go.Figure:
    """Where the attention sink is, at two widths: left, per point j, the norm at the first
    position(s) against the median and largest of the others (a sink is a gap of one or
    more decades); right, log10 of max_samples ||Z_j[t]|| per point j and position t."""
    z = [[math.log10(v) if v is not None and v > 0 else None for v in row] for row in max_norm]
    first = max(int(skip_first), 1)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.3, 0.7],
                        horizontal_spacing=0.03,
                        subplot_titles=[("position 0" if first == 1 else
                                         f"positions 0..{first - 1}") + " against the rest",
                                        "every position"])
    js = list(range(len(z)))

    def column(row, pick):
        vals = [v for v in pick(row) if v is not None]
        return None if not vals else vals

    sink = [max(c) if (c := column(r, lambda r: r[:first])) else None for r in z]
    rest = [statistics.median(c) if (c := column(r, lambda r: r[first:])) else None for r in z]
    top = [max(c) if (c := column(r, lambda r: r[first:])) else None for r in z]
    for name, xs, style in ((f"t < {first} (sink)", sink, dict(color=PRUNED, width=3)),
                            (f"t ≥ {first}: median", rest, dict(color=KEPT, width=2)),
                            (f"t ≥ {first}: largest", top, dict(color=KEPT, width=1,
                                                                 dash="dot"))):
        fig.add_trace(go.Scatter(x=xs, y=js, mode="lines+markers", name=name, line=style,
                                 marker=dict(size=5),
                                 hovertemplate="j=%{y}<br>log10 norm %{x:.2f}<extra>"
                                               + name + "</extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=z, colorscale="Viridis", colorbar=dict(title="log10 ||Z||"),
        hovertemplate="position %{x}<br>j=%{y}<br>log10 norm %{z:.2f}<extra></extra>",
    ), row=1, col=2)
    if skip_first > 0:
        fig.add_vline(x=skip_first - 0.5, line_color="white", line_dash="dash",
                      annotation_text=f"skip_first = {skip_first}",
                      annotation_font_color="white", row=1, col=2)
    fig.update_xaxes(title_text="log10 ||Z_j[t]||", row=1, col=1)
    fig.update_xaxes(title_text="token position t", row=1, col=2)
    fig.update_yaxes(title_text="j (residual stream point)", row=1, col=1)
    fig.update_layout(title="Attention-sink diagnostic: largest activation norm",
                      height=420, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig


def calibration_heatmap_figure(names: Sequence[str], matrix: Sequence[Sequence],
                               outlines: Sequence[Sequence[int]], mode: str,
                               current: int = 0,
                               blocked: Sequence[Mapping[int, str]] | None = None) -> go.Figure:
    """Calibration sets x blocks; each row's own prune set outlined (the current set bold).

    `blocked[row]` maps the blocks that row never prunes to why ("stage 1" or "frozen"):
    they are drawn grey and lettered (S1, F) instead of left blank. The colour bar lies
    under the chart with a fixed height, so it stays readable with a single row."""
    title = "rank in pruning order" if mode == "rank" else "normalised score (0 = pruned first)"
    width = len(matrix[0]) if matrix else 0
    fig = go.Figure(go.Heatmap(
        z=[[None if v is None else float(v) for v in row] for row in matrix],
        x=list(range(width)), y=list(range(len(names))),
        colorscale="RdBu", reversescale=False,
        colorbar=dict(title=dict(text=title, side="right"), orientation="h", yref="container",
                      y=0.0, yanchor="bottom", ypad=8, len=0.5, lenmode="fraction",
                      thickness=14, x=0.5, xanchor="center"),
        hovertemplate="block %{x}<br>%{z:.3g}<extra></extra>", name="scores",
    ))
    if blocked:
        short = {"stage 1": "S1", "frozen": "F"}
        grey = [[1.0 if b in blocked[r] else None for b in range(width)]
                for r in range(len(names))]
        text = [[short.get(blocked[r].get(b, ""), "") for b in range(width)]
                for r in range(len(names))]
        fig.add_trace(go.Heatmap(
            z=grey, x=list(range(width)), y=list(range(len(names))), text=text,
            texttemplate="%{text}", textfont=dict(size=11, color="#333"),
            colorscale=[[0, FROZEN], [1, FROZEN]], showscale=False, name="not prunable",
            hovertemplate="block %{x}: %{text} (never pruned)<extra></extra>",
        ))
    for row, blocks in enumerate(outlines):
        for b in blocks:
            fig.add_shape(type="rect", x0=b - 0.5, x1=b + 0.5, y0=row - 0.5, y1=row + 0.5,
                          line=dict(color="black", width=3 if row == current else 1.5))
    fig.update_yaxes(tickvals=list(range(len(names))),
                     ticktext=[n + (" (current)" if i == current else "")
                               for i, n in enumerate(names)], autorange="reversed")
    fig.update_layout(title="Calibration sets x blocks (outlined: prune set; S1: Stage 1, "
                            "F: frozen)",
                      xaxis_title="block", xaxis_dtick=1, height=230 + 45 * len(names),
                      margin=dict(_MARGIN, l=180, b=130))
    return fig


def agreement_figure(names: Sequence[str], jaccard: Sequence[Sequence[float]]) -> go.Figure:
    fig = go.Figure(go.Heatmap(
        z=jaccard, x=list(names), y=list(names), zmin=0, zmax=1, colorscale="Greens",
        text=[[f"{v:.2f}" for v in row] for row in jaccard], texttemplate="%{text}",
        colorbar=dict(title="Jaccard"),
    ))
    fig.update_layout(title="Agreement of the prune sets (Jaccard)", height=160 + 45 * len(names),
                      margin=dict(_MARGIN, l=180), yaxis_autorange="reversed")
    return fig


_METRICS = (("perplexity", "perplexity (lower is better)"),
            ("kl", "KL(unpruned || pruned), nats"),
            ("top1", "top-1 agreement with unpruned"))


EXTREME_FACTOR = 100.0
"""With clipping on, the perplexity axis stops at this many times the lowest perplexity
plotted (the unpruned model's): above it the pruned model is broken anyway, and one such
point (1e26 at K=28 on SmolLM2) would otherwise flatten every other."""


def quality_figure(rows: Sequence[Mapping], *, x: str = "k", group: str = "criterion",
                   marker_x: float | None = None, x_title: str = "K (blocks pruned)",
                   scale: str = "log", clip: bool = True,
                   marker_label: str | None = None) -> go.Figure:
    """Perplexity, KL and top-1 agreement against `x`, one line per `group` value.

    `scale` ('log' or 'linear') is the perplexity axis. With `clip`, perplexities above
    EXTREME_FACTOR x the lowest one are drawn as triangles on the axis top, labelled with
    their value. The dotted line at `marker_x` carries `marker_label`."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09)
    groups = list(dict.fromkeys(r[group] for r in rows if r.get(x) is not None))
    ppl = [v for r in rows if r.get(x) is not None
           if (v := _num(r.get("perplexity"))) is not None and v > 0]
    cap = min(ppl) * EXTREME_FACTOR if clip and ppl else None
    if cap is not None and max(ppl) <= cap:
        cap = None
    for col, (metric, title) in enumerate(_METRICS, start=1):
        fig.update_yaxes(title_text=title, row=1, col=col)
        for name in groups:
            pts = sorted((r[x], _num(r.get(metric))) for r in rows if r[group] == name
                         and r.get(x) is not None)
            ys = [p[1] for p in pts]
            if metric == "perplexity" and cap is not None:
                ys = [None if v is not None and v > cap else v for v in ys]
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=ys, mode="lines+markers", name=str(name),
                legendgroup=str(name), showlegend=col == 1,
                line=dict(color=SERIES.get(str(name))),
            ), row=1, col=col)
            over = [p for p in pts if metric == "perplexity" and cap is not None
                    and p[1] is not None and p[1] > cap]
            if over:
                fig.add_trace(go.Scatter(
                    x=[p[0] for p in over], y=[cap] * len(over), mode="markers+text",
                    name=f"{name}: off the chart", legendgroup=str(name), showlegend=False,
                    marker=dict(symbol="triangle-up", size=12, color=SERIES.get(str(name))),
                    text=[f"{p[1]:.2g}" for p in over], textposition="bottom center",
                    textfont=dict(size=10), customdata=[p[1] for p in over],
                    hovertemplate=f"{x_title}: %{{x}}<br>perplexity %{{customdata:.3g}}"
                                  "<extra>" + str(name) + "</extra>",
                ), row=1, col=col)
        fig.update_xaxes(title_text=x_title, row=1, col=col)
        if marker_x is not None:
            fig.add_vline(x=marker_x, line_dash="dot", line_color="grey", row=1, col=col)
            if marker_label:
                fig.add_annotation(x=marker_x, xref=f"x{'' if col == 1 else col}",
                                   yref=f"y{'' if col == 1 else col} domain", y=1.0,
                                   yanchor="bottom", text=marker_label, showarrow=False,
                                   font=dict(size=11, color="#555"), name="marker")
    if scale == "log":
        fig.update_yaxes(type="log", dtick=1, row=1, col=1)  # decades only: 10, 100, 1000
    if cap is not None:
        low = min(ppl)
        rng = ([math.log10(low) - 0.1, math.log10(cap) + 0.15] if scale == "log"
               else [0.0, cap * 1.08])
        fig.update_yaxes(range=rng, row=1, col=1)
        fig.add_annotation(xref="x domain", yref="y domain", x=0.0, y=1.0, yanchor="top",
                           xanchor="left", showarrow=False, font=dict(size=10, color="#555"),
                           text=f"▲ above {cap:.3g}, value shown", name="clip note")
    fig.update_layout(height=400, margin=dict(_MARGIN, t=80),
                      title="Quality against the pruning budget")
    return fig


def order_figure(orders: Mapping[str, Sequence[int]], k: int,
                 stage1: Sequence[int] = ()) -> go.Figure:
    """The pruning orders side by side (a bump chart): one column per criterion, one row
    per rank (rank 0, pruned first, on top), a line joining each block's places in the
    columns. Lines that stay level mean the criteria agree; the first K ranks of every
    column are the prune sets (red: pruned by every criterion, orange: by some). Takes any
    number of named orders over the same blocks."""
    names = list(orders)
    ranks = {name: {b: r for r, b in enumerate(order)} for name, order in orders.items()}
    blocks = list(dict.fromkeys(b for order in orders.values() for b in order))
    pruned_by = {b: sum(1 for n in names if ranks[n].get(b, k) < k) for b in blocks}
    fig = go.Figure()
    # One trace per kind of line, the blocks separated by gaps: a trace per block (30 of
    # them) costs the browser a visible redraw on every K step.
    groups = (("pruned by every criterion", PRUNED, 3.0,
               lambda c: c == len(names) and c > 0),
              ("pruned by some", BASELINE_ONLY, 3.0, lambda c: 0 < c < len(names)),
              ("not pruned", "#b0bec5", 1.2, lambda c: c == 0))
    for label, colour, width, member in groups:
        xs, ys, text = [], [], []
        for b in blocks:
            if not member(pruned_by[b]):
                continue
            for i, n in enumerate(names):
                if b in ranks[n]:
                    xs.append(i)
                    ys.append(ranks[n][b])
                    text.append(str(b))
            xs.append(None)
            ys.append(None)
            text.append("")
        fig.add_trace(go.Scatter(
            x=xs, y=ys, text=text, mode="lines+markers+text", name=label,
            line=dict(color=colour, width=width), connectgaps=False,
            marker=dict(size=20, color="white", line=dict(color=colour, width=2)),
            textfont=dict(size=10), showlegend=False,
            hovertemplate="block %{text}: rank %{y}<extra>" + label + "</extra>",
        ))
    depth = max((len(o) for o in orders.values()), default=0)
    if 0 < k < depth:
        fig.add_hline(y=k - 0.5, line_dash="dash", line_color=PRUNED,
                      annotation_text=f"K = {k}: ranks above are pruned",
                      annotation_position="bottom right", annotation_font_color=PRUNED)
    if stage1:
        fig.add_annotation(xref="paper", yref="paper", x=0, y=0, yshift=-10, showarrow=False,
                           xanchor="left", yanchor="top", font=dict(size=12, color="#555"),
                           text=f"Not ranked (Stage 1 or frozen): {', '.join(map(str, stage1))}")
    fig.update_xaxes(tickvals=list(range(len(names))), ticktext=names, side="top",
                     range=[-0.4, len(names) - 0.6], showgrid=False, tickfont=dict(size=14))
    fig.update_yaxes(range=[max(depth, 1) - 0.4, -0.6], title_text="rank in the pruning order "
                     "(0 first)", dtick=1, showgrid=False, zeroline=False)
    fig.update_layout(title="Pruning orders side by side (red: pruned by every criterion at "
                            "K, orange: by some)",
                      height=160 + 24 * max(depth, 1), margin=dict(_MARGIN, t=90, b=50),
                      plot_bgcolor="white")
    return fig


def width_heatmap_figure(percentiles: Sequence[Sequence[float]], qs: Sequence[float],
                         criterion: str) -> go.Figure:
    """Layers x importance percentiles, log10 colour scale."""
    z = [[math.log10(v) if v is not None and v > 0 else None for v in row] for row in percentiles]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"p{q:g}" for q in qs], y=list(range(len(percentiles))), colorscale="Viridis",
        colorbar=dict(title="log10 importance"),
        hovertemplate="layer %{y}<br>%{x}<br>log10 %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(title=f"Neuron importance per layer ({criterion})",
                      xaxis_title="percentile of the layer's neuron scores",
                      yaxis_title="layer", yaxis_dtick=1, height=140 + 22 * len(percentiles),
                      margin=_MARGIN)
    return fig


def width_overlap_figure(overlaps: Mapping[str, Sequence[float]]) -> go.Figure:
    fig = go.Figure()
    for name, values in overlaps.items():
        fig.add_trace(go.Bar(x=list(range(len(values))), y=list(values), name=name))
    fig.update_layout(title="Overlap of the kept neurons per layer (Jaccard)", barmode="group",
                      xaxis_title="layer", xaxis_dtick=1, yaxis_range=[0, 1], height=340,
                      margin=_MARGIN)
    return fig


# --------------------------------------------------------------------------- the draggable curve

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
    values = [{"estimator": name, "j": j, "H": _num(v)}
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
