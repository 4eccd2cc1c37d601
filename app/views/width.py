"""Page 8: width pruning of the MLPs with output-entropy Taylor importance."""

from __future__ import annotations

import streamlit as st

from analysis.taylor import TAYLOR_CRITERIA
from app import charts, state
from app.logic.exports import (
    FORMAT_LABELS,
    export_root,
    folder_summary,
    follow_suggestion,
    gguf_snippets,
    load_snippet,
    resolve_export_dir,
    width_export_name,
)
from app.logic.inputs import calibration_settings
from app.logic.runs import json_key
from app.logic.width_view import kept_overlap, score_percentiles
from entrodrop import service
from pruning.gguf_export import GGUF_TYPES
from pruning.width import requested_neurons

QS = (0, 5, 25, 50, 75, 95, 100)
# How the amount kept is given: a fraction of each layer's neurons (pruning mode
# `uniform`, round(fraction x I)), or the paper's ratio x hidden size (mode `per_layer`,
# int(ratio x D) as the official code truncates it).
SCALES = {"fraction": "fraction of each layer's neurons",
          "paper": "ratio × hidden size (the paper's convention)"}
MODES = {"fraction": "uniform", "paper": "per_layer"}
LABELS = {"taylor-entropy": "Taylor, output-entropy loss (no labels)",
          "taylor-ce": "Taylor, next-token cross-entropy (classic)",
          "magnitude": "weight magnitude (no data)"}

ss = st.session_state
st.title("Width pruning")
st.markdown(
    "Instead of removing blocks, keep the most important MLP neurons of every layer. A "
    "neuron's importance is a first-order Taylor estimate of how much the loss moves if it "
    "is zeroed; with the **entropy of the model's own output** as the loss, no labels are "
    "needed."
)
with st.expander("What you are seeing", icon=":material/school:"):
    st.markdown("With $a_j$ the input of the down projection for neuron $j$ and "
                "$\\mathcal{L}$ the mean entropy of the next-token distribution:")
    st.latex(r"I_j = \sum_{\text{samples}} \sum_t \left| a_j \, "
             r"\frac{\partial \mathcal{L}}{\partial a_j} \right|, \qquad "
             r"\mathcal{L} = -\frac{1}{T}\sum_t \sum_v p_{t,v} \log p_{t,v}")
    st.markdown("Every layer keeps its most important neurons in their original order; "
                "gate/up rows and down columns are sliced, so the result is a standard "
                "checkpoint. The heatmap shows percentiles of each layer's scores.")

if not ss["cal_sources"]:
    st.info("Choose a calibration source on the Calibration page first.", icon=":material/info:")
    st.stop()

ss["width_criteria"] = [c for c in ss["width_criteria"] if c in TAYLOR_CRITERIA]
st.multiselect("Criteria", TAYLOR_CRITERIA, key="width_criteria", persist_state="session",
               format_func=LABELS.get)
st.number_input("Calibration windows for scoring", min_value=1, max_value=4096, step=1,
                key="width_samples", persist_state="session",
                help=f"Drawn from {ss['cal_sources'][0]} with T = "
                                          f"{ss['cal_seqlen']}.")
cal = None
with state.guard("Checking the settings"):
    cal = calibration_settings(ss["cal_sources"][:1], samples=int(ss["width_samples"]),
                               seqlen=int(ss["cal_seqlen"]), seed=int(ss["cal_seed"]),
                               text_column=ss["cal_text_column"])[0]
if cal is None:
    st.stop()
criteria = list(ss["width_criteria"])
scores_key = json_key(state.model_settings(), cal, criteria)
scores = state.cache_lookup("width_scores", scores_key) if criteria else None
if st.button("Score neurons", key="run_width_scores", type="primary",
             icon=":material/analytics:", disabled=not criteria):
    with state.guard("Scoring the neurons"):
        bar, update = state.progress_bar("Neuron scores")
        loaded = state.loaded_model(update)
        scores = state.cache_compute("width_scores", scores_key, lambda: service.width_scores(
            loaded, cal, criteria, batch_size=int(ss["est_batch_size"]), progress=update))
        bar.progress(1.0, text="Scores done")

loaded = state.peek_model()
if not scores or loaded is None:
    ss.pop("width_result", None)
    st.info("Press **Score neurons** to compute the importances (this loads the model).",
            icon=":material/info:")
    st.stop()

# The per-layer sums are a block criterion of their own, shown on the Prune list page.
ss["width_layer_totals"] = {c: scores[c].layer_totals() for c in scores if c != "magnitude"}
drawn = False
with state.guard("Drawing the neuron importances"):
    percentiles = {c: score_percentiles(scores[c].scores, QS) for c in scores}
    ss["width_result"] = {"qs": list(QS), "percentiles": percentiles}
    if ss["width_show"] not in scores:
        ss["width_show"] = next(iter(scores))
    shown = st.selectbox("Heatmap of", list(scores), key="width_show", persist_state="session",
                         format_func=LABELS.get)
    st.plotly_chart(charts.width_heatmap_figure(percentiles[shown], QS, shown),
                    key="width_heatmap", width="stretch")

    low, high, hidden, inter = service.width_ratio_range(loaded)
    st.radio("Give the amount kept as", list(SCALES), key="width_scale",
             persist_state="session", format_func=SCALES.get, horizontal=True,
             help="The paper (and its code) sets the new MLP width as a multiple of the "
                  "hidden size D: ratio 2.0 keeps 2 × D neurons per layer, which on a model "
                  f"with I = {inter} and D = {hidden} is {min(int(2.0 * hidden), inter)} "
                  "neurons. The fraction says directly how much of each layer stays.")
    scale, mode = ss["width_scale"], MODES[ss["width_scale"]]
    if scale == "fraction":
        ss["width_fraction"] = float(min(max(float(ss["width_fraction"]), 0.05), 1.0))
        st.slider("Fraction of neurons kept per layer", min_value=0.05, max_value=1.0,
                  step=0.05, key="width_fraction", persist_state="session")
        value = float(ss["width_fraction"])
    else:
        ss["width_ratio"] = float(min(max(float(ss["width_ratio"]), 0.05), high))
        st.slider("Keep ratio (kept neurons per layer = int(ratio × hidden size))",
                  min_value=0.05, max_value=float(high), step=0.05, key="width_ratio",
                  persist_state="session")
        value = float(ss["width_ratio"])
    kept = max(1, min(requested_neurons(value, mode, hidden, inter), inter))
    st.caption(f"Keeps {kept} of {inter} neurons per layer ({kept / inter * 100:.0f} % kept), "
               f"hidden size {hidden}"
               + (f"; the paper's ratio for this is {kept / hidden:.2f}." if scale == "fraction"
                  else "; int() truncates, as the official code does."))
    if len(scores) > 1:
        names = list(scores)
        keeps = {c: service.width_keep(scores[c], value, hidden, mode) for c in names}
        overlaps = {f"{names[0]} vs {c}": kept_overlap(keeps[names[0]], keeps[c])
                    for c in names[1:]}
        st.plotly_chart(charts.width_overlap_figure(overlaps), key="width_overlap", width="stretch")
    drawn = True
if not drawn:
    st.stop()

st.subheader("Quality over the keep ratio")
top = 1.0 if scale == "fraction" else high
ratios = sorted({round(top * f, 2) for f in (0.25, 0.5, 0.75, 0.9)})
quality_key = json_key(scores_key, ratios, mode, int(ss["budget_held_out"]))
rows = state.cache_lookup("width_quality", quality_key)
if st.button("Compute quality curves", key="run_width_quality", icon=":material/query_stats:"):
    with state.guard("Computing the width quality curves"):
        bar, update = state.progress_bar("Width quality")

        def compute():
            ids = service.held_out_windows(cal, loaded, int(ss["budget_held_out"]))
            return service.width_curves(loaded, ids, scores, ratios, mode=mode,
                                        batch_size=int(ss["est_batch_size"]), progress=update)

        rows = state.cache_compute("width_quality", quality_key, compute)
        bar.progress(1.0, text="Done")
x_title = "fraction of neurons kept" if scale == "fraction" else "keep ratio (× hidden size)"
if rows:
    ss["width_result"]["quality"] = {"rows": rows, "x_title": x_title, "value": value}
    st.plotly_chart(charts.quality_figure([r for r in rows if r["ratio"] is not None],
                                          x="ratio", marker_x=value, x_title=x_title),
                    key="width_quality_chart", width="stretch")
    st.dataframe(rows, hide_index=True)

st.subheader("Export")
suggested = width_export_name(shown, scale, value, kept)
ss["width_export_name"] = follow_suggestion(ss["width_export_name"],
                                            ss.get("_width_export_suggested"), suggested)
ss["_width_export_suggested"] = suggested
st.text_input("Export folder name (inside the export root)", key="width_export_name",
              persist_state="session")
ss.setdefault("width_export_format", "hf")
ss.setdefault("width_export_gguf_type", "f16")
w1, w2 = st.columns(2)
w1.radio("Format", list(FORMAT_LABELS), key="width_export_format",
         format_func=FORMAT_LABELS.get, help="GGUF: one file that llama.cpp runs.")
if ss["width_export_format"] == "gguf":
    w2.selectbox("GGUF weights", GGUF_TYPES, key="width_export_gguf_type",
                 help="Storage of the weight matrices; norms stay f32. q8_0 is 8-bit.")
if st.button("Export width-pruned model", key="run_width_export", icon=":material/save:"):
    with state.guard("Exporting"):
        target = resolve_export_dir(ss["width_export_name"], export_root())
        with st.spinner("Writing the checkpoint…"):
            # The service builds the manifest, exactly as for the CLI's `width` command.
            path = service.export_width(loaded, scores[shown], cal, shown,
                                        value, target, mode=mode,
                                        overwrite=bool(ss["export_overwrite"]),
                                        fmt=ss["width_export_format"],
                                        gguf_type=ss["width_export_gguf_type"])
        summary = folder_summary(path)
        # Stamped with the model it was cut from: the report leaves it out for another.
        ss["width_export_result"] = {**summary, "criterion": shown, "scale": scale,
                                     "value": value, "kept": kept,
                                     "stamp": {"model": state.model_settings().spec}}
        st.success(f"Exported to `{summary['path']}`: {kept} neurons kept per layer, "
                   f"{summary['bytes'] / 2**20:.1f} MiB.", icon=":material/check_circle:")
        if summary["format"] == "gguf":
            snippets = gguf_snippets(summary["path"])
            st.code(snippets["llama-cli"], language="bash")
            st.code(snippets["python"], language="python")
        else:
            st.code(load_snippet(summary["path"], "layer"), language="python")
