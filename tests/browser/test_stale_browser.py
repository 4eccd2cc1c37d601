"""The issue-14 sequences in a real browser on the demo model: the one-click demo from the
start page; K and S_start at their extremes; an export, then K changes; the side-by-side text,
then K changes; a refused upload; a failed model load, then every page. After each, no result
of other settings is shown as current and no control offers what cannot work."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import START_TITLE

DEMO_MS = 420_000  # converts the demo model on a machine that never did, then analyses
WORK_MS = 240_000  # an export or a generation on a loaded 2-core machine
NUM_LAYERS = 30  # SmolLM2-135M
ANALYSIS_PAGES = ("Entropy dynamics", "Calibration heatmap", "Prune list", "Budget", "Export")


def _slider(d, key: str):
    """A slider by its widget key (labels are for people and may be reworded)."""
    return d.page.locator(f".st-key-{key}").get_by_role("slider")


def _press_until(d, key: str, press: str, value: int) -> None:
    """Move a slider with one key (Home/End) and wait until the app has rerun with it."""
    slider = _slider(d, key)
    slider.focus()
    d.page.keyboard.press(press)
    expect(slider).to_have_value(str(value))
    d.settle()


def _warnings(d, text: str):
    return d.main.get_by_test_id("stAlertContentWarning").filter(has_text=text)


@pytest.mark.slow
@pytest.mark.browser
def test_no_stale_result_or_impossible_control_remains(dashboard, app_server):
    d, page = dashboard, dashboard.page
    # Everything is served by the app itself: no favicon or font from an external host.
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((app_server.url, "data:", "blob:")) else None)

    # --- Start page and the one-click demo.
    d.open()
    d.assert_clean("start page")
    expect(d.title(START_TITLE)).to_be_visible()
    steps = d.main.get_by_test_id("stPageLink")
    expect(steps).to_have_count(6)
    expect(steps.first).to_contain_text("1. Model")
    expect(steps.last).to_contain_text("6. Export")
    favicon = page.locator("link[rel~='icon']").first
    expect(favicon).to_have_attribute(
        "href", re.compile(f"^{re.escape(app_server.url)}/media/[0-9a-f]+\\.png$"))
    d.screenshot("start")
    page.get_by_role("button", name="Run the demo").click()
    d.title("Entropy dynamics").wait_for(timeout=DEMO_MS)
    d.settle()
    d.wait_charts(2)  # score per block, attention-sink diagnostic (plotly)
    expect(d.main.get_by_test_id("stVegaLiteChart").first).to_contain_text("S_start = 1")
    d.assert_clean("demo")
    expect(d.sidebar).to_contain_text("demo:smollm2-135m")
    expect(d.k_caption()).to_contain_text("S_start = 1 · ")
    notes = d.main.get_by_test_id("stAlertContentInfo")
    expect(notes.filter(has_text="Why S_start is 1")).to_be_visible()
    expect(notes.filter(has_text="Why the knn curve has no dip")).to_be_visible()
    d.screenshot("demo_dynamics")

    # --- Extremes: S_start 0 with the last block allowed makes every block prunable, but K
    # stops one short of all of them, and what K allows still works.
    _press_until(d, "s_start", "Home", 0)
    d.sidebar.get_by_text("Allow pruning the last block").click()
    expect(d.k_caption()).to_contain_text(f"S_start = 0 · {NUM_LAYERS} prunable")
    d.settle()
    k_slider = d.sidebar.get_by_role("slider", name="K (blocks to prune)")
    expect(k_slider).to_have_attribute("max", str(NUM_LAYERS - 1))
    _press_until(d, "k", "End", NUM_LAYERS - 1)
    expect(d.k_caption()).to_contain_text(f"pruned at K={NUM_LAYERS - 1}:")
    d.go("Budget")
    expect(d.main.get_by_test_id("stMetric").filter(has_text="Blocks pruned")).to_contain_text(
        f"{NUM_LAYERS - 1} attn")
    d.assert_clean("budget at the largest K")
    # S_start at the last block: nothing is prunable, no K slider, and the sidebar says why.
    d.go("Entropy dynamics")
    d.sidebar.get_by_text("Allow pruning the last block").click()
    d.settle()
    _press_until(d, "s_start", "End", NUM_LAYERS - 1)
    expect(d.sidebar).to_contain_text("No block can be pruned with this S_start")
    expect(d.sidebar.get_by_role("slider", name="K (blocks to prune)")).to_have_count(0)
    d.assert_clean("S_start at the last block")
    page.get_by_role("button", name="Auto S_start").click()
    expect(d.k_caption()).to_contain_text("S_start = 1 · ")
    d.settle()

    # --- An export, then K changes: the green box goes, the name follows K.
    for _ in range(2):
        d.step_k("ArrowRight")
    d.go("Export")
    name = page.get_by_role("textbox", name="Export folder name (inside the export root)")
    expect(name).to_have_value(re.compile(r"-attn-knn-k2$"))
    page.get_by_role("button", name="Export pruned model").click()
    done = d.main.get_by_test_id("stAlertContentSuccess").filter(has_text="Exported to")
    d.wait_outcome(done, "export", WORK_MS)
    expect(done).to_contain_text("-k2")
    d.step_k("ArrowRight")
    expect(d.main.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
    expect(d.main.get_by_test_id("stAlertContentInfo").filter(
        has_text="was made for other settings")).to_contain_text("K 2 → 3")
    expect(name).to_have_value(re.compile(r"-attn-knn-k3$"))
    _press_until(d, "k", "Home", 0)
    expect(d.main.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
    expect(page.get_by_role("button", name="Export pruned model")).to_be_disabled()
    d.assert_clean("export after K changed")
    d.screenshot("export_after_k_change")

    # --- Side-by-side text, then K changes: the old text is withdrawn, not relabelled.
    d.step_k("ArrowRight")
    d.go("Budget")
    field = d.main.get_by_role("spinbutton", name="New tokens", exact=True)
    field.fill("4")
    field.press("Enter")
    d.settle()
    page.get_by_role("button", name="Generate").click()
    pruned_text = d.main.get_by_text(re.compile(r"^Pruned \(blocks \[\d+\], K = 1\)$"))
    d.wait_outcome(pruned_text, "generate", WORK_MS)
    d.step_k("ArrowRight")
    expect(d.main.get_by_text(re.compile(r"^Pruned \(blocks"))).to_have_count(0)
    expect(d.main.get_by_test_id("stAlertContentInfo").filter(
        has_text="generated for other settings")).to_contain_text("K 1 → 2")
    d.assert_clean("budget after K changed")

    # --- A refused upload is not added as a source.
    d.go("Calibration")
    sources = d.main.get_by_test_id("stMultiSelect")
    before = sources.inner_text()
    page.locator(".st-key-cal_upload input[type=file]").set_input_files(
        files=[{"name": "table.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n3,4\n"}])
    refused = d.main.get_by_test_id("stAlertContentError").filter(has_text="Upload refused")
    expect(refused).to_contain_text("no text column found")
    d.settle()
    expect(sources).not_to_contain_text("table.csv")
    assert sources.inner_text() == before
    expect(d.sidebar).not_to_contain_text("uploads")

    # --- A failed model load, then every page.
    d.go("Model")
    d.main.get_by_text("Local folder or GGUF file").click()
    d.settle()
    path = d.main.get_by_role("textbox", name="Model folder or .gguf file")
    path.fill("/nonexistent/model")
    path.press("Enter")
    d.settle()
    page.get_by_role("button", name="Load model").click()
    error = d.main.get_by_test_id("stAlertContentError").filter(has_text="Loading the model")
    expect(error).to_contain_text("does not exist")
    d.settle()
    expect(d.page.get_by_test_id("stProgress")).to_have_count(0)  # no bar frozen part-way
    expect(d.sidebar).to_contain_text("load failed")
    expect(d.sidebar).not_to_contain_text("not loaded yet")
    expect(d.sidebar).to_contain_text("This model did not load")
    expect(d.sidebar).to_contain_text("Stale analysis")
    for link in ANALYSIS_PAGES:
        d.go(link)
        banner = _warnings(d, "Stale: these results are for earlier settings")
        expect(banner).to_contain_text("model demo:smollm2-135m → /nonexistent/model")
        d.assert_clean(f"{link} after a failed load")
    expect(page.get_by_role("button", name="Export pruned model")).to_be_disabled()
    expect(d.main).to_contain_text("Export is off while the analysis is stale")
    # The K = 2 export was of the demo model: no green box for it under another model.
    expect(d.main.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
    expect(d.main.get_by_test_id("stAlertContentInfo").filter(
        has_text="was made for other settings")).to_contain_text("/nonexistent/model")
    d.screenshot("stale_export")
    d.go("Budget")
    for button in ("Compute quality curves", "Generate"):
        expect(page.get_by_role("button", name=button)).to_be_disabled()
    d.go("Width pruning")
    d.assert_clean("width after a failed load")

    # Back to the demo model: the results are current again and the banner is gone.
    d.go("Model")
    d.main.get_by_text("Bundled demo model").click()
    d.settle()
    expect(d.sidebar).to_contain_text("· loaded")
    expect(d.sidebar).not_to_contain_text("Stale analysis")
    d.go("Export")
    expect(_warnings(d, "Stale")).to_have_count(0)
    expect(page.get_by_role("button", name="Export pruned model")).to_be_enabled()
    d.assert_clean("export after going back to the demo")
    assert not outside, outside
