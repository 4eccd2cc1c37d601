"""The dashboard in a real browser with the demo model forced to stream (`--load stream`):
analysis, quality curves and an export run one decoder layer at a time, and the pages say
what needs the whole model."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dashboard

STEP_MS = 360_000


@pytest.mark.slow
@pytest.mark.browser
def test_streamed_demo_model_analyses_evaluates_and_exports(streaming_server, browser_page):
    d = Dashboard(browser_page, streaming_server.url)
    page = d.page
    d.open()
    d.assert_clean("start")
    d.go("Model")
    expect(d.main).to_contain_text("layer streaming")  # the Model page's load estimate
    d.screenshot("model_streaming")

    d.go("Calibration")
    d.set_number("N (windows)", 4)
    d.set_number("T (tokens per window)", 64)
    page.get_by_role("button", name="Run analysis").click()
    d.wait_outcome(d.main.get_by_role("heading", name="Result"), "analysis", STEP_MS)
    expect(d.sidebar).to_contain_text("Analysis: 1 calibration run(s), 0 from cache.")
    for _ in range(3):
        d.step_k("ArrowRight")
    assert d.k_value() == 3

    d.go("Budget")
    expect(d.main).to_contain_text("need the whole model in memory")
    expect(page.get_by_role("button", name="Measure speed")).to_be_disabled()
    d.set_number("Held-out windows", 2)
    page.get_by_role("button", name="Compute quality curves").click()
    d.wait_outcome(d.main.locator(".js-plotly-plot"), "budget", STEP_MS)
    expect(d.main).to_contain_text("Quality curves done")
    d.assert_clean("budget")
    d.screenshot("budget_streaming")

    d.go("Export")
    name = page.get_by_role("textbox", name="Export folder name (inside the export root)")
    name.fill("streamed-k3")
    name.press("Enter")
    d.settle()
    page.get_by_role("button", name="Export pruned model").click()
    done = d.main.get_by_test_id("stAlertContentSuccess").filter(has_text="Exported to")
    d.wait_outcome(done, "export", STEP_MS)
    folder = streaming_server.exports / "streamed-k3"
    manifest = json.loads((folder / "entrodrop.json").read_text())
    assert len(manifest["blocks"]) == 3 and manifest["source_model"] == "demo:smollm2-135m"
    assert (folder / "config.json").is_file()
    assert any(folder.glob("*.safetensors"))
