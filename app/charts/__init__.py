"""Figure builders. Plain data in, a Plotly `go.Figure` (or, for the draggable curve, a
Vega-Lite spec) out: no Streamlit, no model.

The same builders serve the pages and the HTML report, so both always show the same thing.
One module per page or topic; every public name is importable from `app.charts`.
"""

from app.charts.budget import EXTREME_FACTOR, quality_figure
from app.charts.curve_spec import BOUNDARY_PARAM, dragged_s_start, entropy_curve_spec
from app.charts.dynamics import (
    delta_h_figure,
    entropy_curve_figure,
    outliers,
    sink_figure,
    stage_labels,
)
from app.charts.ranking import agreement_figure, calibration_heatmap_figure, order_figure
from app.charts.style import BASELINE_ONLY, FROZEN, KEPT, PRUNED, SERIES, STAGE1
from app.charts.width import width_heatmap_figure, width_overlap_figure

__all__ = [
    "BASELINE_ONLY", "BOUNDARY_PARAM", "EXTREME_FACTOR", "FROZEN", "KEPT", "PRUNED", "SERIES",
    "STAGE1", "agreement_figure", "calibration_heatmap_figure", "delta_h_figure",
    "dragged_s_start", "entropy_curve_figure", "entropy_curve_spec", "order_figure",
    "outliers", "quality_figure", "sink_figure", "stage_labels", "width_heatmap_figure",
    "width_overlap_figure",
]
