"""EntroDrop Studio, the dashboard.

    streamlit run app/streamlit_app.py -- --model demo:smollm2-135m

The model can also be preselected with $ENTRODROP_MODEL. Nothing is loaded at start-up:
the model loads on the Model page, or when the analysis first needs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts app/ on sys.path, not the repository root that holds the packages.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import sidebar, state  # noqa: E402

# A local image, not an emoji or a material icon: Streamlit fetches those favicons from an
# external host, which fails offline.
st.set_page_config(page_title="EntroDrop Studio", page_icon=str(ROOT / "app" / "favicon.png"),
                   layout="wide")

PAGES = [
    st.Page("views/start.py", title="Start", icon=":material/home:", default=True),
    st.Page("views/model.py", title="Model", icon=":material/memory:"),
    st.Page("views/calibration.py", title="Calibration", icon=":material/dataset:"),
    st.Page("views/dynamics.py", title="Entropy dynamics", icon=":material/show_chart:"),
    st.Page("views/heatmap.py", title="Calibration heatmap", icon=":material/grid_on:"),
    st.Page("views/prune_list.py", title="Prune list", icon=":material/format_list_numbered:"),
    st.Page("views/budget.py", title="Budget", icon=":material/speed:"),
    st.Page("views/export.py", title="Export", icon=":material/save:"),
    st.Page("views/width.py", title="Width pruning", icon=":material/compress:"),
]
# Pages that draw the sidebar's K slider themselves, inside the st.fragment holding what
# depends on K and S_start: a move then reruns and redraws that fragment, not the page.
DRAW_TAIL = {"Entropy dynamics", "Prune list"}

# The last resort: whatever escapes a page's own guards is still one st.error (a bug's
# traceback goes to the error log), never a traceback on the page.
with state.guard("Starting the session"):
    state.init_session()
if not st.session_state.get("_initialised"):
    st.stop()
page = st.navigation(PAGES)
with state.guard("Drawing the sidebar"):
    sidebar.render(page_draws_tail=page.title in DRAW_TAIL)
with state.guard(f"Drawing the {page.title} page"):
    page.run()
with state.guard("Updating the sidebar"):
    sidebar.refresh()
