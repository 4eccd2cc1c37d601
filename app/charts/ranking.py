"""How the blocks are ranked: the calibration sets x blocks heatmap, the agreement of
their prune sets, and the pruning orders side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from app.charts.style import BASELINE_ONLY, FROZEN, MARGIN, PRUNED


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
                      margin=dict(MARGIN, l=180, b=130))
    return fig


def agreement_figure(names: Sequence[str], jaccard: Sequence[Sequence[float]]) -> go.Figure:
    fig = go.Figure(go.Heatmap(
        z=jaccard, x=list(names), y=list(names), zmin=0, zmax=1, colorscale="Greens",
        text=[[f"{v:.2f}" for v in row] for row in jaccard], texttemplate="%{text}",
        colorbar=dict(title="Jaccard"),
    ))
    fig.update_layout(title="Agreement of the prune sets (Jaccard)", height=160 + 45 * len(names),
                      margin=dict(MARGIN, l=180), yaxis_autorange="reversed")
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
                      height=160 + 24 * max(depth, 1), margin=dict(MARGIN, t=90, b=50),
                      plot_bgcolor="white")
    return fig
