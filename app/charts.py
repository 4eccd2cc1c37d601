"""Plotly figure builders. Plain data in, `go.Figure` out: no Streamlit, no model.

The same builders serve the pages and the HTML report, so both always show the same thing.
"""

from __future__ import annotations

import math
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


def entropy_curve_figure(curves: Mapping[str, Sequence], estimators: Sequence[str],
                         s_start: int, *,
                         stage1_label: str = "Stage 1 (never pruned)") -> go.Figure:
    """H(Z_j) for j = 0..L, one row per estimator (their scales differ), Stage 1 shaded
    (j = 0..S_start) and S_start marked. Points carry j so a click can move S_start."""
    names = [e for e in estimators if e in curves] or list(curves)[:1]
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[f"{e}: H(Z_j)" for e in names])
    for row, name in enumerate(names, start=1):
        ys = [_num(v) for v in curves[name]]
        xs = list(range(len(ys)))
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name, customdata=xs,
            line=dict(color=SERIES.get(name)), marker=dict(size=8),
            hovertemplate="j=%{x}<br>H=%{y:.4g}<extra>" + name + "</extra>",
        ), row=row, col=1)
        fig.update_yaxes(title_text="nats", row=row, col=1)
    if s_start > 0:
        fig.add_vrect(x0=-0.4, x1=s_start, fillcolor=STAGE1, opacity=0.18, line_width=0,
                      annotation_text=stage1_label, annotation_position="bottom left")
    fig.add_vline(x=s_start, line_dash="dash", line_color=PRUNED,
                  annotation_text=f"S_start = {s_start}", annotation_position="top right")
    fig.update_xaxes(title_text="j (Z_0 = embeddings, Z_j = output of layer j-1)", dtick=1,
                     row=len(names), col=1)
    fig.update_layout(height=230 * len(names) + 80, margin=_MARGIN, showlegend=False,
                      clickmode="event+select", title="Entropy of the residual stream")
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


def delta_h_figure(scores: Mapping[str, Sequence], pruned: Mapping[str, Sequence[int]],
                   criterion: str, s_start: int, frozen: Sequence[int]) -> go.Figure:
    """One bar chart per granularity ('layer', 'attn') of the criterion's block scores;
    red = pruned at the current K, grey = Stage 1, light grey = frozen."""
    grans = list(scores)
    what = "importance 1 - cos(X, Y)" if criterion == "cosine" else "dH = H(Y) - H(X)"
    fig = make_subplots(rows=len(grans), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[f"{g} blocks: {criterion} {what}" for g in grans])
    for row, gran in enumerate(grans, start=1):
        ys = [_num(v) for v in scores[gran]]
        colours = _bar_colours(len(ys), set(pruned.get(gran, ())), s_start, set(frozen))
        fig.add_trace(go.Bar(
            x=list(range(len(ys))), y=ys, marker_color=colours, name=gran,
            hovertemplate="block %{x}<br>%{y:.4g}<extra>" + gran + "</extra>",
        ), row=row, col=1)
        fig.update_yaxes(title_text=criterion, row=row, col=1)
    fig.update_xaxes(title_text="block (layer index)", dtick=1, row=len(grans), col=1)
    fig.update_layout(height=260 * len(grans) + 60, margin=_MARGIN, showlegend=False,
                      title="Score per block (red: pruned at the current K)")
    return fig


def sink_figure(max_norm: Sequence[Sequence], skip_first: int) -> go.Figure:
    """log10 of the largest activation norm max_samples ||Z_j[t]|| per point j and position t."""
    z = [[math.log10(v) if v is not None and v > 0 else None for v in row] for row in max_norm]
    fig = go.Figure(go.Heatmap(
        z=z, colorscale="Viridis", colorbar=dict(title="log10 ||Z||"),
        hovertemplate="position %{x}<br>j=%{y}<br>log10 norm %{z:.2f}<extra></extra>",
    ))
    if skip_first > 0:
        fig.add_vline(x=skip_first - 0.5, line_color="white", line_dash="dash",
                      annotation_text=f"skip_first = {skip_first}", annotation_font_color="white")
    fig.update_layout(title="Attention-sink diagnostic: largest activation norm",
                      xaxis_title="token position t", yaxis_title="j (residual stream point)",
                      height=380, margin=_MARGIN)
    return fig


def calibration_heatmap_figure(names: Sequence[str], matrix: Sequence[Sequence],
                               outlines: Sequence[Sequence[int]], mode: str,
                               current: int = 0) -> go.Figure:
    """Calibration sets x blocks; each row's own prune set outlined (the current set bold)."""
    title = "rank in pruning order" if mode == "rank" else "normalised score (0 = pruned first)"
    fig = go.Figure(go.Heatmap(
        z=[[None if v is None else float(v) for v in row] for row in matrix],
        x=list(range(len(matrix[0]) if matrix else 0)), y=list(range(len(names))),
        colorscale="RdBu", reversescale=False, colorbar=dict(title=title),
        hovertemplate="block %{x}<br>%{z:.3g}<extra></extra>",
    ))
    for row, blocks in enumerate(outlines):
        for b in blocks:
            fig.add_shape(type="rect", x0=b - 0.5, x1=b + 0.5, y0=row - 0.5, y1=row + 0.5,
                          line=dict(color="black", width=3 if row == current else 1.5))
    fig.update_yaxes(tickvals=list(range(len(names))),
                     ticktext=[n + (" (current)" if i == current else "")
                               for i, n in enumerate(names)], autorange="reversed")
    fig.update_layout(title="Calibration sets x blocks (outlined: each set's prune set)",
                      xaxis_title="block", xaxis_dtick=1, height=140 + 45 * len(names),
                      margin=dict(_MARGIN, l=180))
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


def quality_figure(rows: Sequence[Mapping], *, x: str = "k", group: str = "criterion",
                   marker_x: float | None = None, x_title: str = "K (blocks pruned)") -> go.Figure:
    """Perplexity, KL and top-1 agreement against `x`, one line per `group` value."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in _METRICS],
                        horizontal_spacing=0.08)
    groups = list(dict.fromkeys(r[group] for r in rows if r.get(x) is not None))
    for col, (metric, _) in enumerate(_METRICS, start=1):
        for name in groups:
            pts = sorted((r[x], r.get(metric)) for r in rows if r[group] == name
                         and r.get(x) is not None)
            fig.add_trace(go.Scatter(
                x=[p[0] for p in pts], y=[_num(p[1]) if p[1] is not None else None for p in pts],
                mode="lines+markers", name=str(name), legendgroup=str(name),
                showlegend=col == 1, line=dict(color=SERIES.get(str(name))),
            ), row=1, col=col)
        fig.update_xaxes(title_text=x_title, row=1, col=col)
        if marker_x is not None:
            fig.add_vline(x=marker_x, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(height=380, margin=_MARGIN, title="Quality against the pruning budget")
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
