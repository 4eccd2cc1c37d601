"""The downloadable report: one self-contained HTML file with every figure and the settings.

plotly.js is embedded once, inline (no CDN), so the file opens offline. `build_html` takes a
plain snapshot dict, so it can run after the session has moved on (deferred download).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone

import plotly.io as pio

from analysis.settings import GRANULARITIES
from app import charts
from app.logic.prune_view import PruneView, build_view, ranking_rows, view_to_json
from app.logic.runs import calibration_matrix, robustness, run_label, views_for_runs
from pruning.decision import criterion_scores
from pruning.manifest import RANK_STRING_NOTE


def snapshot() -> dict:
    """What the report needs from the current session (references, no copies)."""
    import streamlit as st

    from app import state

    ss = st.session_state
    return {
        "analysis": state.analysis(),
        "run_index": int(ss.get("run_index", 0) or 0),
        "view_settings": state.view_settings(),
        "curve_estimators": list(ss.get("curve_estimators") or []),
        "budget": ss.get("budget_result"),
        "width": ss.get("width_result"),
    }


def figures(snap: Mapping) -> list[tuple[str, object, str]]:
    """(title, figure, explanation) for every chart the snapshot can draw."""
    record = snap.get("analysis")
    if not record:
        return []
    runs = record.runs
    index = min(snap.get("run_index", 0), len(runs) - 1)
    profile = runs[index]
    settings = dict(snap["view_settings"])
    view = build_view(profile, **settings)
    out: list[tuple[str, object, str]] = []
    estimators = snap.get("curve_estimators") or list(profile.entropy_curve)
    out.append(("Entropy dynamics", charts.entropy_curve_figure(
        profile.entropy_curve, estimators, view.plan.s_start),
        "H(Z_j) for j = 0..L; Stage 1 (shaded) is never pruned; S_start is the first "
        "block that may be pruned."))
    other = {}
    for gran in GRANULARITIES:
        other[gran] = build_view(profile, **{**settings, "granularity": gran,
                                             "k": min(view.k, view.max_k)}).pruned
    out.append(("Score per block", charts.delta_h_figure(
        {g: criterion_scores(profile, g, view.criterion) for g in GRANULARITIES}, other,
        view.criterion, view.plan.s_start, view.plan.frozen),
        "dH_i = H(Y_i) - H(X_i) per block; the lowest are pruned first."))
    out.append(("Attention-sink diagnostic", charts.sink_figure(
        profile.sink_max_norm, int(profile.settings["skip_first"])),
        "log10 of max over samples of ||Z_j[t]|| per point j and position t."))
    if len(runs) > 1:
        views = views_for_runs(runs, **settings)
        names = [run_label(r, i) for i, r in enumerate(runs)]
        matrix = calibration_matrix(runs, granularity=view.granularity,
                                    criterion=view.criterion, mode="normalised", views=views)
        out.append(("Calibration heatmap", charts.calibration_heatmap_figure(
            names, matrix, [v.pruned for v in views], "normalised", index),
            "Each calibration set's scores, min-max normalised per set."))
        agree = robustness(runs, views)
        out.append(("Robustness", charts.agreement_figure(agree["names"], agree["jaccard"]),
                    "Jaccard index of the prune sets chosen on each calibration set."))
    budget = snap.get("budget")
    if budget:
        out.append(("Quality against K", charts.quality_figure(budget["rows"], marker_x=view.k),
                    "Held-out perplexity, KL to the unpruned model and top-1 agreement."))
    width = snap.get("width")
    if width and width.get("percentiles"):
        for criterion, pct in width["percentiles"].items():
            out.append((f"Neuron importance ({criterion})",
                        charts.width_heatmap_figure(pct, width["qs"], criterion),
                        "Percentiles of each layer's MLP neuron importance."))
    return out


def build_html(snap: Mapping) -> str:
    """The report as one HTML string."""
    parts = []
    first = True
    for title, fig, text in figures(snap):
        div = pio.to_html(fig, include_plotlyjs=True if first else False, full_html=False,
                          config={"displaylogo": False})
        first = False
        parts.append(f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
                     f"{div}</section>")
    record = snap.get("analysis")
    tables = ""
    settings = {"view": snap.get("view_settings"), "request": None, "messages": None}
    if record:
        profile = record.runs[min(snap.get("run_index", 0), len(record.runs) - 1)]
        view = build_view(profile, **dict(snap["view_settings"]))
        tables = _prune_table(view) + _pre("Prune list (JSON)", view_to_json(view, profile))
        settings.update(request=asdict(record.request), messages=record.messages)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = "\n".join(parts) or "<p>No analysis has been run yet.</p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>EntroDrop Studio report"
        "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        ".p{background:#fde0e0}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"
        f"</head><body><h1>EntroDrop Studio report</h1><p>Generated {stamp}.</p>{body}"
        f"{tables}{_pre('Settings', settings)}</body></html>"
    )


def _prune_table(view: PruneView) -> str:
    head = (f"<tr><th>rank</th><th>{view.criterion} block</th><th>score</th>"
            f"<th>{view.baseline} block</th><th>score</th></tr>")
    rows = []
    for r in ranking_rows(view):
        cls = " class='p'" if r["pruned"] else ""
        rows.append(f"<tr{cls}><td>{r['rank']}</td><td>{r['block']}</td><td>{_fmt(r['score'])}"
                    f"</td><td>{r['baseline_block']}</td><td>{_fmt(r['baseline_score'])}</td></tr>")
    c = view.comparison
    tau = "n/a" if c.kendall_tau is None else f"{c.kendall_tau:.3f}"
    return (f"<section><h2>Prune list (K = {view.k}, {view.granularity})</h2>"
            f"<p>Overlap {c.overlap} of {view.k}, Jaccard {c.jaccard:.3f}, Kendall tau {tau}. "
            f"Shaded rows are pruned.</p><table>{head}{''.join(rows)}</table>"
            f"<p>{html.escape(RANK_STRING_NOTE)}</p><pre>{view.rank_string()}</pre></section>")


def _fmt(v) -> str:
    return "" if v is None else f"{v:.5g}"


def _pre(title: str, data) -> str:
    text = json.dumps(data, indent=2, default=str)
    return f"<section><h2>{html.escape(title)}</h2><pre>{html.escape(text)}</pre></section>"
