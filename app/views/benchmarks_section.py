"""The Budget page's "Standard benchmarks" section: lm-evaluation-harness on the in-memory
model, pruned in place for every K of every chosen criterion, and accuracy against K."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import streamlit as st

from app import state
from app.logic.runs import budget_ks, json_key, profile_fingerprint
from entrodrop import service
from pruning.benchmarks import (
    BenchmarkSettings,
    accuracy_rows,
    harness_version,
    task_dir_fingerprint,
)
from pruning.ranking import PROFILE_CRITERIA as CRITERIA  # ppl_greedy needs a search: CLI

_DEFAULTS = {"bench_tasks": "", "bench_include_path": "", "bench_limit": 50}


def accuracy_figure(rows: Sequence[dict], task: str, metric: str, *,
                    marker_x: int | None = None) -> go.Figure:
    """`metric` of `task` against K, one line per criterion (and granularity), with the
    harness's standard error as error bars; the dotted line is the current K."""
    fig = go.Figure()
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["task"] == task and r["metric"] == metric:
            series.setdefault(r["criterion"], []).append(r)
    for criterion, points in series.items():
        points = sorted(points, key=lambda r: r["k"])
        fig.add_trace(go.Scatter(
            x=[p["k"] for p in points], y=[p["value"] for p in points], name=criterion,
            mode="lines+markers",
            error_y=dict(type="data", array=[p["stderr"] or 0.0 for p in points], visible=True),
            hovertemplate="K=%{x}<br>" + metric + "=%{y:.3f}<extra>" + criterion + "</extra>"))
    if marker_x is not None:
        fig.add_vline(x=marker_x, line_dash="dot", line_color="#7f7f7f")
    fig.update_layout(title=f"{task}: {metric} against K", xaxis_title="K (blocks pruned)",
                      yaxis_title=metric, height=380, margin=dict(l=60, r=20, t=50, b=50))
    fig.update_xaxes(dtick=1)
    return fig


def benchmarks_section(profile, view, record) -> None:
    """Choose tasks (a local task directory and/or the harness's own), criteria and K values;
    run with progress; show accuracy against K per criterion. Results are cached in
    st.cache_data under everything that decides them."""
    ss = st.session_state
    for key, value in _DEFAULTS.items():
        ss.setdefault(key, value)
    ss.setdefault("bench_criteria", [c for c in (view.criterion, view.baseline) if c in CRITERIA])
    ss.setdefault("bench_ks", budget_ks(min(view.max_k, 4), max_points=5))

    st.subheader("Standard benchmarks (lm-eval)")
    st.markdown(
        f"Score the pruned model on lm-evaluation-harness tasks (lm-eval {harness_version()}), "
        f"for each K of each criterion ({view.granularity} blocks). The model is pruned in "
        "place for each variant, nothing is exported. Offline, use tasks over local files: a "
        "directory of lm-eval YAML tasks (e.g. `dataset_path: json` with `data_files`).")
    c1, c2 = st.columns(2)
    c1.text_input("Task directory (your YAML tasks)", key="bench_include_path",
                  placeholder="/path/to/tasks")
    c2.text_input("Tasks (comma-separated)", key="bench_tasks",
                  placeholder="e.g. my_local_task or hellaswag,arc_easy")
    c3, c4, c5 = st.columns([2, 2, 1])
    c3.multiselect("Criteria", list(CRITERIA), key="bench_criteria")
    c4.multiselect("K values", list(range(view.max_k + 1)), key="bench_ks")
    c5.number_input("Documents per task (0 = all)", min_value=0, step=10, key="bench_limit")

    tasks = tuple(t.strip() for t in str(ss["bench_tasks"]).split(",") if t.strip())
    if not tasks:
        st.info("Name one or more tasks to run the benchmarks.", icon=":material/info:")
        return
    include = str(ss["bench_include_path"]).strip() or None
    limit = int(ss["bench_limit"]) or None
    criteria = list(ss["bench_criteria"])
    ks = sorted(int(k) for k in ss["bench_ks"])
    with state.guard("Checking the benchmark settings"):
        settings = BenchmarkSettings(tasks, include, limit,
                                     int(ss["est_batch_size"])).validate()
        if not criteria or not ks:
            st.info("Choose at least one criterion and one K value.", icon=":material/info:")
            return
        # Prune sets per K: angular_span's best span of K layers is not nested in K+1's.
        orders = {c: service.decision(profile, view.granularity, c, 0, view.plan).prune_sets()
                  for c in criteria}
        key = json_key(profile_fingerprint(profile), record.request.model, view.granularity,
                       orders, ks, settings.to_json(), task_dir_fingerprint(include),
                       harness_version())
        rows = state.cache_lookup("benchmarks", key)
        # As for the quality curves, speed, text and export: no model run while the analysis
        # is for other settings (the page's stale banner says which).
        current = state.analysis_is_current()
        if st.button("Run benchmarks", key="run_benchmarks", icon=":material/checklist:",
                     disabled=not current):
            bar, update = state.progress_bar("Benchmarks")
            loaded = state.loaded_model(update)
            rows = state.cache_compute("benchmarks", key, lambda: accuracy_rows(
                service.benchmark_over_k(loaded, orders, view.granularity, ks, settings,
                                         progress=update, bars=False)))
            bar.progress(1.0, text="Benchmarks done")
        if not current:
            st.caption("Benchmarks are off while the analysis is stale: run it again on the "
                       "Calibration page, so the variants are pruned as chosen for the current "
                       "model and data.")
        if not rows:
            ss.pop("bench_result", None)
            if current:
                st.info("Press **Run benchmarks** to score the variants.",
                        icon=":material/info:")
            return
        ss["bench_result"] = {"key": key, "rows": rows}
        pairs = sorted({(r["task"], r["metric"]) for r in rows})
        shown = st.selectbox("Task and metric", [f"{t} · {m}" for t, m in pairs],
                             key="bench_show")
        task, metric = pairs[[f"{t} · {m}" for t, m in pairs].index(shown)]
        st.plotly_chart(accuracy_figure(rows, task, metric, marker_x=view.k),
                        key="bench_chart", width="stretch")
        st.dataframe([{k: r[k] for k in ("criterion", "k", "blocks", "task", "metric", "value",
                                         "stderr", "samples")} for r in rows], hide_index=True)
        first = rows[0]
        st.caption(f"lm-eval {first['harness_version']}; task versions: " + ", ".join(
            sorted({f"{r['task']} v{r['task_version']}" for r in rows})) + ".")
