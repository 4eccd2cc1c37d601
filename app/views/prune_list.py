"""Page 5: the ranked prune list next to the cosine baseline, with downloads."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import charts, sidebar, state
from app.logic.prune_view import (
    block_list,
    block_rows,
    ranking_rows,
    rows_to_csv,
    taylor_block_rows,
    view_to_json,
)
from app.sidebar import CRITERION_LABELS
from entrodrop import service
from pruning.manifest import RANK_STRING_NOTE
from pruning.ranking import CRITERIA

ss = st.session_state
st.title("Prune list")

state.require_view()
st.caption("K, the granularity, the criterion and the S_start policy are in the sidebar; "
           "changing them only re-ranks the cached profile, no model runs.")


# Everything below depends on K: a K move (the sidebar slider belongs to this fragment,
# see sidebar.page_with_tail) reruns and redraws only this, not the sidebar and the page.
@st.fragment
def _ranked(tail) -> None:
    sidebar.page_with_tail(tail, "Drawing the prune list", _page)


def _page(view) -> None:
    profile = state.current_run()
    c = view.comparison
    st.markdown(f"**Pruned at K = {view.k}** ({view.granularity}, {view.criterion}): "
                f"blocks {block_list(view.blocks)}")
    st.markdown(f"**Baseline** ({view.baseline}): blocks "
                f"{block_list(view.baseline_blocks)}")
    m1, m2, m3 = st.columns(3)
    m1.metric("Overlap", f"{c.overlap} of {view.k}")
    m2.metric("Jaccard", f"{c.jaccard:.2f}")
    m3.metric("Kendall tau", "n/a" if c.kendall_tau is None else f"{c.kendall_tau:.2f}",
              help="Over all prunable blocks, independent of K.")

    rows = ranking_rows(view)
    table = pd.DataFrame({
        "rank": [r["rank"] for r in rows],
        f"{view.criterion} block": [r["block"] for r in rows],
        f"{view.criterion} score": [r["score"] for r in rows],
        f"{view.baseline} block": [r["baseline_block"] for r in rows],
        f"{view.baseline} score": [r["baseline_score"] for r in rows],
        "pruned": [r["pruned"] for r in rows],
    })
    both_a = [r["in_both_sets"] for r in rows]
    both_b = [r["baseline_in_both_sets"] for r in rows]


    def _style(df: pd.DataFrame) -> pd.DataFrame:
        colours = pd.DataFrame("", index=df.index, columns=df.columns)
        for i, r in enumerate(rows):
            if not r["pruned"]:
                continue
            colours.iloc[i, 1] = colours.iloc[i, 2] = (
                "background-color: #c8e6c9" if both_a[i] else "background-color: #ffe0b2")
            colours.iloc[i, 3] = colours.iloc[i, 4] = (
                "background-color: #c8e6c9" if both_b[i] else "background-color: #ffe0b2")
        return colours


    st.dataframe(table.style.apply(_style, axis=None).format(precision=4), hide_index=True,
                 width="stretch")
    st.caption("Rows above K are pruned. Green: the block is pruned by both orders; orange: "
               f"by one only (only {view.criterion}: {list(c.only_a)}, only {view.baseline}: "
               f"{list(c.only_b)}). Rank 0 is pruned first. Frozen and Stage-1 blocks are not "
               "listed.")

    st.subheader("The orders side by side")
    ss.setdefault("order_criteria", [view.criterion, view.baseline])
    st.multiselect("Criteria to compare", CRITERIA, key="order_criteria",
                   format_func=lambda c: CRITERION_LABELS.get(c, c),
                   help="Every criterion ranks the same Stage-2 blocks; a line joins each block's "
                        "ranks. Changing this only re-ranks the cached profile.")
    with state.guard("Ranking the blocks"):
        chosen = list(dict.fromkeys(ss["order_criteria"] or [view.criterion, view.baseline]))
        orders = {c: view.order if c == view.criterion else
                  view.baseline_order if c == view.baseline else
                  list(service.decision(profile, view.granularity, c, view.k, view.plan).order)
                  for c in chosen}
        unranked = [b for b in range(view.plan.num_layers) if b not in set(view.order)]
        st.plotly_chart(charts.order_figure(orders, view.k, unranked), key="order_chart",
                        width="stretch")
        st.caption("Rank 0 (top) is pruned first. A level line means the criteria place the "
                   "block alike; crossing lines are where they disagree. Above the dashed line "
                   f"are the first K = {view.k} of each order.")

    st.subheader("Taylor importance as a block criterion")
    totals = ss.get("width_layer_totals") or {}
    if view.granularity != "layer":
        st.caption("The per-layer sum of MLP-neuron importance scores whole layers: switch the "
                   "granularity to **layer** to compare it with the entropy and cosine orders.")
    elif not totals or any(len(t) != view.plan.num_layers for t in totals.values()):
        st.info("Score the neurons on the **Width pruning** page to compare the per-layer sum of "
                "Taylor importance with these orders.", icon=":material/info:")
    else:
        st.dataframe(pd.DataFrame(taylor_block_rows(totals, view)), hide_index=True,
                     width="stretch")
        st.caption("A layer's score is the sum over its MLP neurons of |a * dL/da| (L = output "
                   "entropy for taylor-entropy); the least important layer is pruned first, under "
                   "the same stage plan and K.")

    st.subheader("Download")
    d1, d2, d3 = st.columns(3)
    d1.download_button("CSV (one row per block)", rows_to_csv(block_rows(view)),
                       file_name=f"prune-list-{view.granularity}-{view.criterion}-k{view.k}.csv",
                       mime="text/csv", key="download_csv", on_click="ignore")
    d2.download_button("JSON", json.dumps(view_to_json(view, profile), indent=2),
                       file_name=f"prune-list-{view.granularity}-{view.criterion}-k{view.k}.json",
                       mime="application/json", key="download_json", on_click="ignore")
    d3.download_button("Rank string (research code format)", view.rank_string() + "\n",
                       file_name=f"rank-string-{view.granularity}-{view.criterion}.txt",
                       mime="text/plain", key="download_rank_string", on_click="ignore")
    st.markdown(f"**Rank string** ({view.criterion}). {RANK_STRING_NOTE}")
    st.code(view.rank_string(), language=None)
    with st.expander("What you are seeing", icon=":material/school:"):
        st.markdown(
            "Both orders sort the Stage-2 blocks by ascending score (ties by block index): "
            f"{view.criterion} by its score, the baseline by its importance. The first K of "
            "each are pruned. With $A_K$ and $B_K$ the two pruned sets:"
        )
        st.latex(r"\text{overlap} = |A_K \cap B_K|, \qquad "
                 r"J = \frac{|A_K \cap B_K|}{|A_K \cup B_K|}")
        st.markdown("Kendall $\\tau$ compares the full orders: "
                    "$\\tau = (n_c - n_d) / \\binom{n}{2}$ over concordant and discordant pairs.")


_ranked(sidebar.tail_slot())
