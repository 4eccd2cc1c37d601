"""Page 6: what pruning costs (quality against K) and what it saves (speed, parameters)."""

from __future__ import annotations

import streamlit as st

from analysis.settings import speed_prompt_len
from app import charts, state
from app.logic.provenance import changes, feasible_ks, prune_stamp
from app.logic.runs import budget_ks, json_key, profile_fingerprint
from app.views.benchmarks_section import benchmarks_section
from app.views.speed_section import engine_speed_section, show_speed
from entrodrop import service

ss = st.session_state
st.title("Budget")

profile, view = state.require_view()
record = state.analysis()

index = int(ss["run_index"])
current = state.analysis_is_current()
stamp = prune_stamp(view, state.model_settings().spec)  # the model now chosen

st.subheader("Quality against K")
st.markdown(
    f"Prune the first K blocks of the **{view.criterion}** order and of the **{view.baseline}** "
    f"order ({view.granularity} blocks) and compare each with the unpruned model on "
    "held-out windows of the same source."
)
st.number_input("Held-out windows", min_value=1, max_value=1024, step=1, key="budget_held_out",
                persist_state="session")
# The chosen K values outlive a change of S_start; those no longer possible are dropped,
# with a note.
ss.setdefault("budget_ks", budget_ks(view.max_k))
kept_ks, skipped_ks = feasible_ks(ss["budget_ks"], view.max_k)
ss["budget_ks"] = kept_ks or budget_ks(view.max_k)
st.multiselect("K values", list(range(view.max_k + 1)), key="budget_ks",
               help=f"Which budgets to evaluate (0..{view.max_k}, the prunable blocks). Each "
                    "costs one pass of the pruned model over the held-out windows.")
ks = sorted(set(ss["budget_ks"]))
st.caption(f"K values: {ks}. Computed once per profile and settings, then cached.")
if skipped_ks:
    st.caption(f"Left out: K = {', '.join(map(str, skipped_ks))}; at most {view.max_k} blocks "
               "can be pruned under this S_start (at least one block always stays).")
cal = record.request.calibrations[index]
# Prune sets per K, not one order: angular_span's best span of K layers is not nested in K+1's.
orders = {view.criterion: view.decision.prune_sets(),
          view.baseline: view.baseline_decision.prune_sets()}
budget_key = json_key(profile_fingerprint(profile), view.granularity, orders,
                      ks, int(ss["budget_held_out"]), record.request.model, cal)
rows = state.cache_lookup("budget", budget_key)
if st.button("Compute quality curves", key="run_budget", type="primary",
             icon=":material/query_stats:", disabled=not current):
    with state.guard("Computing the quality curves"):
        bar, update = state.progress_bar("Quality curves")
        loaded = state.loaded_model(update)

        def compute():
            ids = service.held_out_windows(cal, loaded, int(ss["budget_held_out"]))
            return service.quality_over_k(loaded, ids, orders, view.granularity, ks,
                                          batch_size=int(ss["est_batch_size"]),
                                          progress=update)

        rows = state.cache_compute("budget", budget_key, compute)
        bar.progress(1.0, text="Quality curves done")
if rows:
    ss["budget_result"] = {"key": budget_key, "rows": rows, "skipped_ks": skipped_ks,
                           "stamp": {**stamp, "held_out": int(ss["budget_held_out"])}}
    ss.setdefault("budget_scale", "log")
    ss.setdefault("budget_clip", True)
    o1, o2 = st.columns([1, 2])
    o1.radio("Perplexity axis", ["log", "linear"], key="budget_scale", horizontal=True)
    o2.checkbox("Clip extremes", key="budget_clip",
                help=f"Perplexities above {charts.EXTREME_FACTOR:g}x the unpruned model's are "
                     "drawn as triangles on the top edge, with their value, so they do not "
                     "flatten the rest of the curve.")
    st.plotly_chart(charts.quality_figure(rows, marker_x=view.k, scale=ss["budget_scale"],
                                          clip=bool(ss["budget_clip"]),
                                          marker_label=f"current K = {view.k}"),
                    key="quality_chart", width="stretch")
    st.dataframe(rows, hide_index=True)
    with st.expander("What you are seeing", icon=":material/school:"):
        st.markdown("For each held-out token, with $P$ the unpruned and $Q$ the pruned "
                    "model's next-token distribution:")
        st.latex(r"\mathrm{PPL} = \exp\Big(-\tfrac{1}{n}\sum_t \log Q(x_{t+1}\mid x_{\le t})"
                 r"\Big),\quad \mathrm{KL} = \tfrac{1}{n}\sum_t \sum_v P_v \log\frac{P_v}{Q_v}")
        st.markdown("Top-1 agreement is the fraction of tokens where both models' most "
                    "likely next token is the same. The dotted line is the current K.")
else:
    ss.pop("budget_result", None)
    st.info("Press **Compute quality curves** to run the model on held-out windows.",
            icon=":material/info:")

st.subheader(f"Savings at K = {view.k}")
loaded = state.peek_model() if current else None
if not current:
    ss.pop("savings_result", None)
    st.info("Parameter and speed figures need the analysed model: run the analysis for the "
            "current settings first.", icon=":material/history:")
elif loaded is None:
    ss.pop("savings_result", None)
    st.info("Load the model (Model page) to see parameter and speed figures.",
            icon=":material/info:")
else:
    with state.guard("Counting parameters"):
        # Cached: counting prunes the shared model for a moment, under the service's lock.
        saved = state.cache_compute(
            "savings", json_key(loaded.identity, str(loaded.dtype), view.granularity,
                                view.blocks),
            lambda: service.parameter_savings(loaded, view.granularity, view.blocks))
        p1, p2, p3 = st.columns(3)
        p1.metric("Parameters", f"{saved['params_pruned'] / 1e6:.2f} M",
                  f"-{saved['saved_fraction'] * 100:.1f} %", delta_color="inverse")
        p2.metric("Weights", f"{saved['bytes_pruned'] / 2**20:.1f} MiB",
                  f"-{(saved['bytes_base'] - saved['bytes_pruned']) / 2**20:.1f} MiB",
                  delta_color="inverse")
        p3.metric("Blocks pruned", f"{view.k} {view.granularity}")
        ss["savings_result"] = {**saved, "stamp": stamp}
    speed_key = json_key(view.granularity, view.blocks, loaded.identity)
    streamed = isinstance(loaded, service.StreamedModel)
    if streamed:
        st.caption("Speed and side-by-side text need the whole model in memory; this model "
                   "is streamed layer by layer (Model page: load).")
    if st.button("Measure speed", key="run_speed", icon=":material/timer:", disabled=streamed,
                 help="Prefill throughput and decode latency, base and pruned interleaved."):
        with state.guard("Measuring speed"):
            with st.spinner("Timing the base and the pruned model…"):
                prompt_len = speed_prompt_len(ss["cal_seqlen"])
                ss["speed_result"] = {"key": speed_key, "stamp": stamp, **service.speed(
                    loaded, view.granularity, view.blocks, prompt_len=prompt_len,
                    new_tokens=16)}
    speed = ss.get("speed_result")
    if speed and speed.get("key") == speed_key:
        show_speed(speed, "transformers")
    engine_speed_section(loaded, view, speed_key, stamp)

st.subheader("Side by side")
st.text_area("Prompt", key="gen_prompt", persist_state="session", height=80)
g1, g2 = st.columns(2)
g1.number_input("New tokens", min_value=1, max_value=512, step=1, key="gen_tokens",
                persist_state="session")
g2.checkbox("Use the chat template", key="gen_chat", persist_state="session")
streamed = isinstance(state.peek_model(), service.StreamedModel)
gen_stamp = {**stamp, "prompt": ss["gen_prompt"], "tokens": int(ss["gen_tokens"]),
             "chat": bool(ss.get("gen_chat"))}
if st.button("Generate", key="run_generate", icon=":material/edit_note:",
             disabled=streamed or not current):
    ss.pop("generation", None)  # a failed run must not leave the last text under new settings
    with state.guard("Generating"):
        bar, update = state.progress_bar("Preparing the model")
        loaded = state.loaded_model(update)
        bar.empty()
        with st.spinner("Generating with the unpruned and the pruned model…"):
            ss["generation"] = service.generate(
                loaded, view.granularity, view.blocks, ss["gen_prompt"],
                max_new_tokens=int(ss["gen_tokens"]), chat=bool(ss.get("gen_chat")))
            ss["generation"]["blocks"] = list(view.blocks)
            ss["generation"]["stamp"] = gen_stamp
texts = ss.get("generation")
changed = changes(texts.get("stamp", {}), gen_stamp) if texts else []
if texts and changed:
    st.info(f"The last text was generated for other settings ({'; '.join(changed)}); press "
            "**Generate** for the current ones.", icon=":material/history:")
elif texts:
    t1, t2 = st.columns(2)
    t1.markdown("**Unpruned**")
    t1.text(texts["unpruned"])
    t2.markdown(f"**Pruned** (blocks {texts.get('blocks')}, K = {view.k})")
    t2.text(texts["pruned"])

benchmarks_section(profile, view, record)
