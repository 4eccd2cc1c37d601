"""The repository's .streamlit/config.toml is the configuration `streamlit run` uses when
started from the repository root (as `make run`, the Docker image and the browser tests do)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_streamlit_started_in_the_repository_hides_the_deploy_button():
    streamlit = str(Path(sys.executable).with_name("streamlit"))
    shown = subprocess.run([streamlit, "config", "show"], cwd=REPO, capture_output=True,
                           text=True, timeout=120, check=True).stdout
    lines = shown.splitlines()
    at = lines.index('toolbarMode = "viewer"')
    # Set by this repository's file, not by a default or a user's ~/.streamlit.
    assert str(REPO / ".streamlit" / "config.toml") in lines[at - 1]
