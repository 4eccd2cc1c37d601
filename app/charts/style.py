"""What every chart shares: the colours that mean the same thing on every page, the
margins, and the one number rule (non-finite values are gaps, not points)."""

from __future__ import annotations

import math

PRUNED = "#d62728"
BASELINE_ONLY = "#ff7f0e"
KEPT = "#1f77b4"
STAGE1 = "#9e9e9e"
FROZEN = "#d0d0d0"
SERIES = {"bucket": "#2ca02c", "knn": "#1f77b4", "renyi": "#9467bd", "cosine": "#ff7f0e",
          "taylor-entropy": "#1f77b4", "taylor-ce": "#ff7f0e", "magnitude": "#7f7f7f",
          "unpruned": "#000000"}
MARGIN = dict(l=60, r=20, t=50, b=50)


def number(v) -> float | None:
    """A plotted value: None (a gap) for None, NaN and infinities."""
    return None if v is None or not math.isfinite(float(v)) else float(v)
