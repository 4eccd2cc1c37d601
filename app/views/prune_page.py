"""What every page about the current prune choice starts with (Export now; Prune list,
Budget, Entropy dynamics and Calibration heatmap can adopt it): the title, then the
current profile and prune view, or a message saying what is missing."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from analysis.profile import Profile
from app import state
from app.logic.prune_view import PruneView


def prune_page(title: str) -> tuple[Profile, PruneView]:
    """Title the page; (current profile, prune view), or the page stops after saying what
    is missing (`state.require_view`)."""
    st.title(title)
    return state.require_view()


def block_list(blocks: Iterable[int]) -> str:
    """Blocks as the pages write them: ascending, comma-separated, 'none' for no block."""
    return ", ".join(map(str, sorted(blocks))) or "none"
