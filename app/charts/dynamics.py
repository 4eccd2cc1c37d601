"""The Entropy dynamics page's figures: the entropy curve (Plotly, for the report), the
score per block and the attention-sink diagnostic."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.style import FROZEN, KEPT, MARGIN, PRUNED, SERIES, STAGE1, number


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
        ys = [number(v) for v in curves[name]]
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
    fig.update_layout(height=230 * len(names) + 110, margin=dict(MARGIN, t=100),
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
        ys = [number(v) for v in scores[gran]]
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
    fig.update_layout(height=260 * len(grans) + 60, margin=MARGIN, showlegend=False,
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
                      height=420, margin=MARGIN,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return fig
