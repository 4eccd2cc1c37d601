"""Page 4: calibration sets x blocks, and how robust the prune set is to the data."""

from __future__ import annotations

import streamlit as st

from app import charts, state
from app.logic.prune_view import PruneView, block_stage
from app.logic.runs import calibration_matrix, robustness, run_label, views_for_runs

ss = st.session_state
st.title("Calibration heatmap")


def _blocked(v: PruneView) -> dict[int, str]:
    """The blocks this run's plan never prunes, and why."""
    return {b: stage for b in range(v.plan.num_layers)
            if (stage := block_stage(v, b)) != "prunable"}


_, view = state.require_view()
runs = state.runs()

st.radio("Colour by", ["normalised", "rank"], key="heatmap_mode",
         persist_state="session", horizontal=True,
         format_func={"normalised": "normalised score", "rank": "rank in pruning order"}.get)
with state.guard("Drawing the heatmap"):
    views = views_for_runs(runs, **state.view_settings())
    names = [run_label(r, i) for i, r in enumerate(runs)]
    matrix = calibration_matrix(runs, granularity=view.granularity, criterion=view.criterion,
                                mode=ss["heatmap_mode"], views=views)
    st.plotly_chart(charts.calibration_heatmap_figure(
        names, matrix, [v.blocks for v in views], ss["heatmap_mode"],
        int(ss["run_index"]), blocked=[_blocked(v) for v in views]),
        key="calibration_heatmap", width="stretch")
    with st.expander("What you are seeing", icon=":material/school:"):
        st.markdown(
            f"One row per calibration set, one column per block ({view.granularity}, "
            f"criterion {view.criterion}). *Normalised score* rescales each row to [0, 1]:"
        )
        st.latex(r"\tilde s_i = \frac{s_i - \min_j s_j}{\max_j s_j - \min_j s_j}")
        st.markdown(
            "so 0 is the block that set would prune first. *Rank* is the block's position "
            "in that set's pruning order. Grey cells are never pruned by that set: "
            "**S1** is Stage 1 (before its S_start), **F** a frozen block. Outlined cells are the K blocks "
            "each set prunes with the same S_start policy and K; the current set is bold."
        )

    st.subheader("Robustness")
    if len(runs) < 2:
        st.info("Add a second calibration source on the Calibration page to see how much "
                "the prune set depends on the data.", icon=":material/info:")
    else:
        agree = robustness(runs, views)
        st.plotly_chart(charts.agreement_figure(agree["names"], agree["jaccard"]),
                        key="agreement_chart", width="stretch")
        c1, c2 = st.columns(2)
        c1.metric("Picked by every set", ", ".join(map(str, agree["picked_by_all"])) or "none")
        c2.metric("Picked by a majority",
                  ", ".join(map(str, agree["picked_by_majority"])) or "none")
        st.caption("Jaccard index |A ∩ B| / |A ∪ B| of two sets' prune sets at K = "
                   f"{view.k}; 1 means the data did not change which blocks are pruned.")
