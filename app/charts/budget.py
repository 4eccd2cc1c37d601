"""The Budget page's quality curves: perplexity, KL and top-1 agreement against K."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.style import MARGIN, SERIES, number

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
           if (v := number(r.get("perplexity"))) is not None and v > 0]
    cap = min(ppl) * EXTREME_FACTOR if clip and ppl else None
    if cap is not None and max(ppl) <= cap:
        cap = None
    for col, (metric, title) in enumerate(_METRICS, start=1):
        fig.update_yaxes(title_text=title, row=1, col=col)
        for name in groups:
            pts = sorted((r[x], number(r.get(metric))) for r in rows if r[group] == name
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
    fig.update_layout(height=400, margin=dict(MARGIN, t=80),
                      title="Quality against the pruning budget")
    return fig
