"""The dashboard in a real browser on the real demo model: run a small analysis, visit every
page through the sidebar, move K with the keyboard, export, and keep a screenshot of each
page in test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

ANALYSIS_MS = 360_000  # loads the model (and converts it on a machine that never did)
SCORING_MS = 240_000  # quality curves and neuron scores: a few dozen forward passes
EXPORT_NAME = "browser-export-k5"


def _listed_blocks(text: str) -> list[int]:
    """The block indices after 'blocks' in the prune list's headline."""
    tail = text.split("blocks", 1)[1]
    return [int(b) for b in re.findall(r"\d+", tail)]


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_in_chromium(dashboard, app_server):
    d, page = dashboard, dashboard.page
    d.open()
    d.assert_clean("start")
    expect(d.sidebar).to_contain_text("No analysis yet")

    # Calibration: the default source with a small N and T, then run.
    d.go("Calibration")
    expect(d.main.get_by_test_id("stMultiSelect")).to_contain_text("builtin:licenses")
    d.set_number("N (windows)", 8)
    d.set_number("T (tokens per window)", 64)
    expect(d.sidebar).to_contain_text("N=8 × T=64")
    page.get_by_role("button", name="Run analysis").click()
    d.wait_outcome(d.main.get_by_role("heading", name="Result"), "analysis", ANALYSIS_MS)
    # A fresh cache: the profile was really computed, not read back.
    expect(d.sidebar).to_contain_text("Analysis: 1 calibration run(s), 0 from cache.")
    expect(d.k_caption()).to_contain_text("pruned at K=0: none")
    d.screenshot("calibration")

    # Sidebar: the research code's stage rule (Stage 1 = blocks 0 and 1), then K = 4.
    d.sidebar.get_by_text("reference (freeze 0, 1, L-1)").click()
    expect(d.k_caption()).to_contain_text("S_start = 2 ·")
    d.settle()
    for _ in range(4):
        d.step_k("ArrowRight")
    assert d.k_value() == 4

    d.go("Entropy dynamics")
    d.wait_charts(2)  # score per block, attention-sink diagnostic (plotly)
    curve = d.main.get_by_test_id("stVegaLiteChart").first  # the draggable entropy curve
    expect(curve).to_contain_text("Stage 1")
    expect(curve).to_contain_text("S_start = 2")
    d.assert_clean("dynamics")
    d.screenshot("dynamics")

    d.go("Calibration heatmap")
    d.wait_charts(1)
    d.assert_clean("heatmap")
    d.screenshot("heatmap")

    # Prune list: one step of K adds exactly one block to the list.
    d.go("Prune list")
    headline = d.main.locator("p", has_text=re.compile(r"^Pruned at K = \d+ "))
    expect(headline).to_contain_text("Pruned at K = 4 (attn, knn)")
    before = headline.inner_text()
    blocks_before = _listed_blocks(before)
    assert len(blocks_before) == 4, before
    # The slider is drawn by the page's fragment: the move reruns that, not the whole app.
    runs = d.runs_during(lambda: d.step_k("ArrowRight"))
    assert runs == ["FINISHED_FRAGMENT_RUN_SUCCESSFULLY"], runs
    expect(headline).to_contain_text("Pruned at K = 5 ")
    after = headline.inner_text()
    blocks_after = _listed_blocks(after)
    assert after != before
    assert len(blocks_after) == len(blocks_before) + 1, (before, after)
    assert set(blocks_before) < set(blocks_after), (before, after)
    assert all(b >= 2 for b in blocks_after), after  # Stage 1 is never pruned
    caption_blocks = d.k_caption().inner_text().split(":", 1)[1]
    assert [int(b) for b in re.findall(r"\d+", caption_blocks)] == blocks_after
    d.assert_clean("prune list")
    d.screenshot("prune_list")

    d.go("Budget")
    d.set_number("Held-out windows", 2)  # each K costs two forward passes per window
    page.get_by_role("button", name="Compute quality curves").click()
    d.wait_outcome(d.main.locator(".js-plotly-plot"), "budget", SCORING_MS)
    d.wait_charts(1)
    expect(d.main).to_contain_text("Quality curves done")
    expect(d.main).to_contain_text("Savings at K = 5")
    d.assert_clean("budget")
    d.screenshot("budget")
    # The report holds the results as they stand after the page ran: the quality curves
    # computed in the click's own run are in it (no other run happened since).
    with page.expect_download() as download:
        d.sidebar.get_by_role("button", name="Download report (HTML)").click()
    report = Path(download.value.path()).read_text(encoding="utf-8")
    assert "<h2>Quality against K</h2>" in report

    # Export: a folder inside the export root holding a complete checkpoint.
    d.go("Export")
    name = page.get_by_role("textbox", name="Export folder name (inside the export root)")
    expect(name).to_have_value("demo-smollm2-135m-attn-knn-k5")  # the suggestion follows K
    name.fill(EXPORT_NAME)
    name.press("Enter")
    d.settle()
    page.get_by_role("button", name="Export pruned model").click()
    done = d.main.get_by_test_id("stAlertContentSuccess").filter(has_text="Exported to")
    d.wait_outcome(done, "export", SCORING_MS)
    folder = app_server.exports / EXPORT_NAME
    assert folder.is_dir(), sorted(p.name for p in app_server.exports.iterdir())
    for file in ("config.json", "model.safetensors", "entrodrop.json"):
        assert (folder / file).is_file(), (file, sorted(p.name for p in folder.iterdir()))
    manifest = json.loads((folder / "entrodrop.json").read_text())
    assert sorted(manifest["blocks"]) == blocks_after, manifest
    expect(done).to_contain_text(str(folder))
    d.screenshot("export")

    d.go("Width pruning")
    d.set_number("Calibration windows for scoring", 2)
    page.get_by_role("button", name="Score neurons").click()
    d.wait_outcome(d.main.locator(".js-plotly-plot"), "width", SCORING_MS)
    d.wait_charts(2)  # percentile heatmap and the overlap of the two criteria
    d.assert_clean("width")
    d.screenshot("width")

    d.go("Model")
    expect(d.main.get_by_test_id("stAlertContentSuccess")).to_contain_text(
        "Loaded demo:smollm2-135m")
    d.assert_clean("model")
    d.screenshot("model")
