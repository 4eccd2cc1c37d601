"""The Width pruning page's figures: neuron importance per layer and the overlap of the
kept neurons."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from app.charts.style import MARGIN


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
                      margin=MARGIN)
    return fig


def width_overlap_figure(overlaps: Mapping[str, Sequence[float]]) -> go.Figure:
    fig = go.Figure()
    for name, values in overlaps.items():
        fig.add_trace(go.Bar(x=list(range(len(values))), y=list(values), name=name))
    fig.update_layout(title="Overlap of the kept neurons per layer (Jaccard)", barmode="group",
                      xaxis_title="layer", xaxis_dtick=1, yaxis_range=[0, 1], height=340,
                      margin=MARGIN)
    return fig
