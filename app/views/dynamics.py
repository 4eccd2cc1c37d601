"""Page 3: the entropy curve, S_start, dH per block and the attention-sink diagnostic."""

from __future__ import annotations

import streamlit as st

from analysis.settings import ESTIMATORS, GRANULARITIES
from app import charts, sidebar, state
from app.logic.prune_view import build_view
from app.logic.runs import profile_fingerprint
from app.logic.teaching import curve_notes
from pruning.decision import criterion_scores

ss = st.session_state
st.title("Entropy dynamics")

profile, _ = state.require_view()
fingerprint = profile_fingerprint(profile)


def _to_manual() -> None:
    """Callback tail: a move that switches the policy to manual reruns the whole app (the
    sidebar's policy radio shows it); a move under the manual policy reruns only the
    fragment below."""
    if ss["stage_policy"] != "manual":
        ss["stage_policy"] = "manual"
        st.rerun()


def _on_slider() -> None:
    _to_manual()


def _on_auto() -> None:
    ss["stage_policy"] = "auto"
    st.rerun()  # the sidebar's policy radio and its estimator choice change


# The curve, the S_start slider and the score bars depend on S_start and K: moving either
# (the sidebar's K slider belongs to this fragment, see sidebar.page_with_tail) reruns and
# redraws only this, not the sidebar, the page's title or the sink chart below.
@st.fragment
def _stages(tail) -> None:
    sidebar.page_with_tail(tail, "Drawing the entropy dynamics", _draw)


def _draw(view) -> None:
    profile = state.current_run()
    num_layers = view.plan.num_layers
    # A new chart per S_start: the browser would otherwise restore the last drag's
    # selection over a boundary moved since with the slider.
    curve_key = f"curve_chart_{view.plan.s_start}"

    def _on_curve_drag(key: str = curve_key) -> None:
        moved = charts.dragged_s_start(ss.get(key), num_layers)
        if moved is not None and moved != int(ss["s_start"]):
            ss["s_start"] = int(moved)
            _to_manual()

    st.multiselect("Estimators to plot", ESTIMATORS, key="curve_estimators",
                   persist_state="session")
    estimators = list(ss["curve_estimators"] or ["knn"])
    st.vega_lite_chart(charts.entropy_curve_spec(profile.entropy_curve, estimators,
                                                view.plan.s_start),
                      key=curve_key, on_select=_on_curve_drag,
                      selection_mode=[charts.BOUNDARY_PARAM], width="stretch")
    for note in curve_notes(profile, view.plan, estimators):
        st.info(note, icon=":material/school:")
    s1, s2 = st.columns([5, 1])
    s1.slider("S_start (first block that may be pruned)", min_value=0,
              max_value=max(num_layers - 1, 1), key="s_start", persist_state="session",
              on_change=_on_slider,
              disabled=num_layers < 2,
              help="Or drag on the chart above (press, move, release). Either switches the "
                   "policy to manual.")
    s2.button("Auto S_start", key="s_start_auto", on_click=_on_auto,
              help="Back to the automatic S_start (minimum of H over the first half of the "
                   "depth).")
    st.caption(f"Policy **{view.plan.policy}** · S_start = **{view.plan.s_start}** · frozen "
               f"blocks {list(view.plan.frozen)} · auto S_start per estimator: "
               + ", ".join(f"{e} {profile.s_start[e]}" for e in ESTIMATORS))
    with st.expander("What you are seeing", icon=":material/school:"):
        st.markdown(
            "Each point is the entropy of the residual stream $Z_j$ at depth $j$: $Z_0$ is "
            "the embedding output and layer $i$ maps $Z_i$ to $Z_{i+1}$, so a model with $L$ "
            "layers has $L+1$ points. Entropy is estimated per calibration window over its "
            f"tokens (the first {profile.settings['skip_first']} positions left out) and "
            "averaged. The **automatic S_start** is"
        )
        st.latex(r"j^* = \arg\min_{0 \le j \le \lfloor L/2 \rfloor} H(Z_j)")
        st.markdown(
            "Layers $0..j^*-1$ compress the input (Stage 1, shaded, never pruned); from $j^*$ "
            "on entropy expands (Stage 2) and blocks may be pruned. The **reference** policy "
            "freezes blocks 0, 1 and L-1 as the research code does. The knn estimator is "
            "$H = D\\,\\overline{\\log(r_i)} + \\tfrac{D}{2}\\log\\pi - "
            "\\log\\Gamma(\\tfrac{D}{2}+1) + \\log N - \\log k$, with $r_i$ the distance to "
            "the $k$-th nearest token."
        )

    st.subheader("Score per block")
    other = {}
    for gran in GRANULARITIES:
        other_view = view if gran == view.granularity else build_view(
            profile, **{**state.view_settings(), "granularity": gran})
        other[gran] = other_view.blocks
    # Cached on every input, so stepping back and forth (or the K and S_start a page
    # visit returns to) does not rebuild it (plotly's validation costs tens of ms).
    key = (f"{profile_fingerprint(profile)}|{view.criterion}|{view.plan.s_start}|"
           f"{list(view.plan.frozen)}|{ {g: sorted(b) for g, b in other.items()} }")
    st.plotly_chart(state.figure("delta_h", key, lambda: charts.delta_h_figure(
        {g: criterion_scores(profile, g, view.criterion) for g in GRANULARITIES}, other,
        view.criterion, view.plan.s_start, view.plan.frozen)), key="dh_chart",
        width="stretch")
    with st.expander("What you are seeing", icon=":material/school:"):
        st.markdown(
            "For each block with input $X$ and output $Y$ the entropy criteria score the "
            "**entropy increase**"
        )
        st.latex(r"\Delta H_i = H(Y_i) - H(X_i)")
        st.markdown(
            "At granularity *layer*, $X = Z_i$ and $Y = Z_{i+1}$; at *attn*, $Y$ is the "
            "residual stream right after the attention sub-block is added back. Blocks that "
            "add the least entropy (lowest $\\Delta H$) change the representation least and "
            "are pruned first. The cosine baseline uses $1 - \\overline{\\cos(X_t, Y_t)}$ "
            f"instead. Red bars are pruned at K = {view.k}; grey bars are Stage 1, light grey "
            "ones frozen."
        )


_stages(sidebar.tail_slot())

# Depends on the profile alone: outside the fragment, so S_start and K moves leave it be.
st.subheader("Attention-sink diagnostic")
sink = state.figure("sink", fingerprint, lambda: charts.sink_figure(
    profile.sink_max_norm, int(profile.settings["skip_first"])))
st.plotly_chart(sink, key="sink_chart", width="stretch")
with st.expander("What you are seeing", icon=":material/school:"):
    st.markdown("Colour is the largest activation norm over the calibration windows,")
    st.latex(r"\max_{\text{windows}} \lVert Z_j[t] \rVert_2")
    st.markdown(
        "per residual point $j$ (rows) and token position $t$ (columns), on a log scale. A "
        "bright first column is an **attention sink**: one position with a norm far above "
        "the rest. Min-max histogram bins then stretch to fit it and every other token "
        "falls into a few bins, so the entropy curve collapses. Leaving the first position "
        "out (`skip_first`, dashed line) removes it from every estimator."
    )
