"""Page 0: what the tool shows, the steps through it, and a one-click demo."""

from __future__ import annotations

import streamlit as st

from app import state
from app.logic import teaching

ss = st.session_state
st.title("EntroDrop Studio")
st.markdown(
    "A language model is a stack of layers, and not all of them earn their keep. EntroDrop "
    "measures how much **information (entropy)** each layer adds to the text's hidden "
    "representation, and removes the layers that add the least. This dashboard shows every "
    "step: the entropy curve through the model, which blocks would go first and how that "
    "compares with the usual cosine rule, what pruning costs in quality and saves in size "
    "and speed, and the pruned model written to disk."
)


def _use_demo() -> None:
    """Callback: the demo's settings, set before the widgets that show them are drawn."""
    ss["model_source"] = "demo"
    ss["demo_name"] = teaching.DEMO_MODEL.removeprefix("demo:")
    ss["model_spec"] = teaching.DEMO_MODEL
    ss["cal_sources"] = [teaching.DEMO_SOURCE]
    ss["cal_samples"] = teaching.DEMO_SAMPLES
    ss["cal_seqlen"] = teaching.DEMO_SEQLEN
    ss["stage_policy"] = "auto"
    ss["k"] = 0


st.subheader("Try it in one click")
st.caption(teaching.demo_description())
if st.button("Run the demo", key="run_demo", type="primary", icon=":material/play_arrow:",
             on_click=_use_demo):
    with state.guard("Running the demo"):
        bar, update = state.progress_bar("Demo")
        state.analyse(state.analysis_request(), update)
        bar.progress(1.0, text="Demo analysis done")
        st.switch_page("views/dynamics.py")

st.subheader("The steps")
for number, step in enumerate(teaching.STEPS, start=1):
    left, right = st.columns([1, 3])
    left.page_link(step.page, label=f"{number}. {step.title}")
    right.markdown(step.text)
st.caption("The sidebar holds the choices every page shares: the calibration set, the "
           "granularity (whole layers or attention sub-blocks), the criterion, the S_start "
           "policy and K. Every result says which settings made it, and one made with other "
           "settings is marked stale.")
