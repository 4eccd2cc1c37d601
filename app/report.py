"""The downloadable report: one self-contained HTML file with every figure and the settings.

plotly.js is embedded once, inline (no CDN), so the file opens offline. `build_html` takes a
plain snapshot dict, so it can run after the session has moved on (deferred download).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone

import plotly.io as pio

from analysis.settings import GRANULARITIES
from app import charts
from app.logic.exports import LAYOUT_LABELS
from app.logic.provenance import changes, prune_stamp
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
        "analysis_changes": state.analysis_changes(),
        "model_spec": state.model_settings().spec,
        "run_index": int(ss.get("run_index", 0) or 0),
        "view_settings": state.view_settings(),
        "curve_estimators": list(ss.get("curve_estimators") or []),
        "budget": ss.get("budget_result"),
        "savings": ss.get("savings_result"),
        "speed": ss.get("speed_result"),
        "generation": ss.get("generation"),
        "export": ss.get("export_result"),
        "width": ss.get("width_result"),
        "width_export": ss.get("width_export_result"),
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
                                             "k": min(view.k, view.max_k)}).blocks
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
            names, matrix, [v.blocks for v in views], "normalised", index),
            "Each calibration set's scores, min-max normalised per set."))
        agree = robustness(runs, views)
        out.append(("Robustness", charts.agreement_figure(agree["names"], agree["jaccard"]),
                    "Jaccard index of the prune sets chosen on each calibration set."))
    budget = _current(snap.get("budget"), prune_stamp(view, snap.get("model_spec",
                                                                     profile.spec)))
    if budget:
        out.append(("Quality against K", charts.quality_figure(budget["rows"], marker_x=view.k),
                    "Held-out perplexity, KL to the unpruned model and top-1 agreement."))
    width = snap.get("width")
    if width and width.get("percentiles"):
        for criterion, pct in width["percentiles"].items():
            out.append((f"Neuron importance ({criterion})",
                        charts.width_heatmap_figure(pct, width["qs"], criterion),
                        "Percentiles of each layer's MLP neuron importance."))
        quality = width.get("quality")
        if quality and quality.get("rows"):
            out.append(("Width pruning: quality against the amount kept", charts.quality_figure(
                [r for r in quality["rows"] if r.get("ratio") is not None], x="ratio",
                marker_x=quality.get("value"), x_title=quality.get("x_title", "keep ratio")),
                "Held-out perplexity, KL and top-1 agreement of the width-pruned model per "
                "criterion."))
    return out


def _current(result: Mapping | None, now: Mapping) -> Mapping | None:
    """`result` if it was made for this prune set (same model, blocks, K...), else None: the
    report never presents a figure of other settings as one of these."""
    if not result:
        return None
    stamp = result.get("stamp")
    if stamp is None:
        return result  # results without a stamp do not depend on the prune set
    return result if not changes(stamp, now) else None


def build_html(snap: Mapping) -> str:
    """The report as one HTML string: a header naming the model, data and settings, the
    figures, then the tables of every result made for these settings."""
    parts = []
    first = True
    for title, fig, text in figures(snap):
        div = pio.to_html(fig, include_plotlyjs=True if first else False, full_html=False,
                          config={"displaylogo": False})
        first = False
        parts.append(f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
                     f"{div}</section>")
    record = snap.get("analysis")
    header = tables = raw = ""
    if record:
        profile = record.runs[min(snap.get("run_index", 0), len(record.runs) - 1)]
        view = build_view(profile, **dict(snap["view_settings"]))
        # Results are stamped with the model chosen when they were made.
        now = prune_stamp(view, snap.get("model_spec", profile.spec))
        header = _header(record, view, snap.get("analysis_changes") or [])
        tables = "".join([
            _prune_table(view),
            _budget_table(_current(snap.get("budget"), now), view),
            _section("Parameter savings", _savings_rows, _current(snap.get("savings"), now)),
            _section("Speed (unpruned → pruned)", _speed_rows, _current(snap.get("speed"), now)),
            _generation(_current(snap.get("generation"), now)),
            _section("Export", _block_export_rows, _current(snap.get("export"), now)),
            # Stamped with its model only: the prune set does not make a width export.
            _section("Width export", _width_export_rows, _current(snap.get("width_export"), now)),
            _left_out(snap, now),
        ])
        raw = _details("The full record (JSON)", {
            "request": asdict(record.request), "messages": record.messages,
            "view": snap.get("view_settings"), "prune_list": view_to_json(view, profile)})
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = "\n".join(parts) or "<p>No analysis has been run yet.</p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>EntroDrop Studio report"
        "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:left;vertical-align:top}th{background:#f0f3f8}"
        ".p{background:#fde0e0}.stale{background:#fff3cd;padding:.6em;border:1px solid #e0c060}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;white-space:pre-wrap}</style>"
        f"</head><body><h1>EntroDrop Studio report</h1><p>Generated {stamp}.</p>{header}"
        f"{body}{tables}{raw}</body></html>"
    )


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"


def _grid(rows: list[Mapping], columns: list[str] | None = None) -> str:
    if not rows:
        return ""
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return _fmt(v)
    return "" if v is None else str(v)


def _header(record, view: PruneView, stale: list[str]) -> str:
    request = record.request
    model, est = request.model, request.estimators
    cals = request.calibrations
    first = cals[0]
    rows = [
        ("Model", model.spec),
        ("Device / data type / load", f"{model.device} / {model.dtype} / {model.load}"),
        ("Calibration data", ", ".join(c.spec for c in cals)),
        ("Windows", f"N = {first.samples} × T = {first.seqlen} tokens, seed {first.seed}"
                    + (f", text column {first.text_column}" if first.text_column else "")),
        ("Estimators", f"bucket bins {est.bins}, knn k {est.knn_k}, Renyi alpha "
                       f"{est.renyi_alpha}, skip_first {est.skip_first}, batch size "
                       f"{est.batch_size}"),
        ("Granularity / criterion", f"{view.granularity} / {view.criterion} "
                                    f"(baseline {view.baseline})"),
        ("S_start", f"{view.plan.s_start} ({view.plan.policy} policy); frozen blocks "
                    f"{list(view.plan.frozen)}; last block "
                    f"{'allowed' if view.plan.allow_last else 'frozen'}"),
        ("K", f"{view.k} of at most {view.max_k}"),
        ("Pruned blocks", f"{sorted(view.blocks)} ({view.criterion}); "
                          f"{sorted(view.baseline_blocks)} ({view.baseline})"),
    ]
    runs = [{"set": run_label(r, i), "layers": r.num_layers, "from cache": c,
             "S_start bucket/knn/renyi": "/".join(str(r.s_start.get(e)) for e in
                                                  ("bucket", "knn", "renyi")),
             "seconds": round(r.seconds, 2)}
            for i, (r, c) in enumerate(zip(record.runs, record.from_cache or
                                           [False] * len(record.runs), strict=True))]
    warn = ""
    if stale:
        warn = (f"<p class='stale'><b>Stale:</b> this analysis was made with other settings "
                f"than the session had when the report was written "
                f"({html.escape('; '.join(stale))}).</p>")
    return (f"<section><h2>What was analysed</h2>{warn}{_table(rows)}"
            f"<h3>Calibration runs</h3>{_grid(runs)}"
            + "".join(f"<p>{html.escape(m)}</p>" for m in record.messages) + "</section>")


def _budget_table(budget: Mapping | None, view: PruneView) -> str:
    if not budget:
        return ""
    skipped = budget.get("skipped_ks") or []
    note = (f"<p>Left out (cannot be pruned under this S_start): K = "
            f"{', '.join(map(str, skipped))}.</p>" if skipped else "")
    return (f"<section><h2>Quality against K (current K = {view.k})</h2>{note}"
            f"{_grid(list(budget['rows']), ['criterion', 'k', 'perplexity', 'kl', 'top1'])}"
            "</section>")


def _section(title: str, rows: Callable[[Mapping], list[tuple[str, object]]],
             result: Mapping | None) -> str:
    """A titled table of `rows(result)`; nothing for a result the session does not hold."""
    if not result:
        return ""
    return f"<section><h2>{html.escape(title)}</h2>{_table(rows(result))}</section>"


def _savings_rows(saved: Mapping) -> list[tuple[str, object]]:
    return [("Parameters", f"{saved['params_base'] / 1e6:.2f} M → "
                           f"{saved['params_pruned'] / 1e6:.2f} M "
                           f"(-{saved['saved_fraction'] * 100:.1f} %)"),
            ("Weights", f"{saved['bytes_base'] / 2**20:.1f} MiB → "
                        f"{saved['bytes_pruned'] / 2**20:.1f} MiB")]


def _speed_rows(speed: Mapping) -> list[tuple[str, object]]:
    return [("Prefill", f"{speed['prefill_tokens_per_s_base']:.0f} → "
                        f"{speed['prefill_tokens_per_s_pruned']:.0f} tokens/s "
                        f"({speed['prefill_ratio']:.2f}×)"),
            ("Decode", f"{speed['decode_ms_per_token_base']:.1f} → "
                       f"{speed['decode_ms_per_token_pruned']:.1f} ms/token "
                       f"({speed['decode_ratio']:.2f}×)"),
            ("Measured", f"median of {speed['repeats']} runs on {speed['device']}")]


def _generation(texts: Mapping | None) -> str:
    if not texts:
        return ""
    stamp = texts.get("stamp") or {}
    prompt = html.escape(str(stamp.get("prompt", "")))
    return ("<section><h2>Side by side</h2>"
            f"<p>Prompt: <code>{prompt}</code>, {stamp.get('tokens', '?')} new tokens, greedy."
            "</p><table><tr><th>Unpruned</th><th>Pruned (blocks "
            f"{html.escape(str(texts.get('blocks')))})</th></tr><tr><td><pre>"
            f"{html.escape(texts['unpruned'])}</pre></td><td><pre>"
            f"{html.escape(texts['pruned'])}</pre></td></tr></table></section>")


def _block_export_rows(result: Mapping) -> list[tuple[str, object]]:
    return _export_rows(result, [
        ("Removed", f"{result.get('granularity')} blocks {result.get('blocks')}"),
        ("Layers", f"{result.get('num_layers_after')} of {result.get('num_layers_before')}")])


def _width_export_rows(result: Mapping) -> list[tuple[str, object]]:
    before, after = result.get("intermediate_size_before"), result.get("intermediate_size")
    return _export_rows(result, [
        ("Criterion", result.get("criterion")),
        ("Kept per layer", f"{result.get('kept')} neurons (intermediate size "
                           f"{_or_unknown(before)} → {_or_unknown(after)})")])


def _export_rows(result: Mapping, what: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Every export kind's rows: where it is, its format and the engine it runs in, `what`
    was pruned, then the parameter count and size on disk."""
    before, after = result.get("parameters_before"), result.get("parameters_after")
    return [("Folder", result["path"]), ("Format", _export_format(result)),
            ("Runs in", _runs_in(result)), *what,
            ("Parameters", f"{before / 1e6:.2f} M → {after / 1e6:.2f} M" if before and after
             else "?"),
            ("On disk", f"{result['files']} files, {result['bytes'] / 2**20:.1f} MiB")]


def _export_format(result: Mapping) -> str:
    if result.get("format") != "gguf":
        return "hf (Hugging Face folder)"
    gguf = result.get("gguf") or {}
    return (f"gguf (one file), {_or_unknown(gguf.get('gguf_type'))} weights, llama.cpp "
            f"architecture {_or_unknown(gguf.get('architecture'))}")


def _runs_in(result: Mapping) -> str:
    if result.get("format") == "gguf":
        return "llama.cpp"
    layout = result.get("layout") or "transformers"
    return f"{LAYOUT_LABELS.get(layout, layout)} (layout {layout})"


def _or_unknown(value) -> str:
    return "?" if value is None else str(value)


def _left_out(snap: Mapping, now: Mapping) -> str:
    """Name the results the session holds that were made for other settings."""
    names = {"budget": "quality curves", "savings": "parameter savings", "speed": "speed",
             "generation": "side-by-side text", "export": "export",
             "width_export": "width export"}
    gone = [label for key, label in names.items()
            if snap.get(key) and _current(snap.get(key), now) is None]
    if not gone:
        return ""
    return (f"<p class='stale'>Left out, made for other settings than these: "
            f"{html.escape(', '.join(gone))}.</p>")


def _details(title: str, data) -> str:
    text = json.dumps(data, indent=2, default=str)
    return (f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre>"
            "</details>")


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
