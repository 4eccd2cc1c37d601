"""The charts in a real browser on the demo model: drag the Stage-1/Stage-2 boundary on the
entropy chart with the mouse (the shading follows the pointer before anything reaches the
server; the prune list follows on release), check where the labels land on the drawn page,
and keep screenshots of the pages whose charts changed."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

ANALYSIS_MS = 360_000
SCORING_MS = 240_000


def _blocks(text: str) -> list[int]:
    return [int(b) for b in re.findall(r"\d+", text.rsplit(":", 1)[1])]


def _point(chart, j: int):
    """The centre of point j of the top row (aria labels are 'j: 5; H: 1440')."""
    box = chart.locator(f'[aria-label^="j: {j}; H"]').first.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _rect_edge(chart) -> str:
    label = chart.locator('[aria-label*="edge: "]').first.get_attribute("aria-label")
    return re.search(r"edge: (-?\d+)", label).group(1)


def _text_box(chart, pattern: str):
    """The drawn box of the first SVG text matching `pattern`."""
    return chart.locator("text").filter(has_text=re.compile(pattern)).first.bounding_box()


def _rule_x(chart) -> float:
    box = chart.locator('line[aria-roledescription="rule mark"]').first.bounding_box()
    return box["x"] + box["width"] / 2


@pytest.mark.slow
@pytest.mark.browser
def test_drag_the_s_start_boundary_then_the_prune_list_follows(dashboard):
    d, page = dashboard, dashboard.page
    d.open()
    d.go("Calibration")
    d.set_number("N (windows)", 8)
    d.set_number("T (tokens per window)", 64)
    page.get_by_role("button", name="Run analysis").click()
    d.wait_outcome(d.main.get_by_role("heading", name="Result"), "analysis", ANALYSIS_MS)
    d.sidebar.get_by_text("reference (freeze 0, 1, L-1)").click()
    expect(d.k_caption()).to_contain_text("S_start = 2 ·")
    d.settle()
    for _ in range(4):
        d.step_k("ArrowRight")
    before = _blocks(d.k_caption().inner_text())
    assert len(before) == 4 and min(before) >= 2, before

    d.go("Entropy dynamics")
    d.wait_charts(2)  # score per block and the attention-sink diagnostic
    chart = d.main.get_by_test_id("stVegaLiteChart").first
    expect(chart.locator('[aria-label^="j: 0; H"]').first).to_be_visible()
    assert _rect_edge(chart) == "2"
    # The stretched chart stays inside the page's column (its axes are drawn within it).
    column = chart.bounding_box()
    drawn = chart.locator("svg").first.bounding_box()
    assert drawn["x"] + drawn["width"] <= column["x"] + column["width"] + 4, (drawn, column)
    # The labels sit above the plot, the Stage-1 one left of the line, clear of the points.
    rule = _rule_x(chart)
    stage1 = _text_box(chart, "Stage 1")
    assert stage1["x"] + stage1["width"] <= rule, (stage1, rule)
    top_point = min(chart.locator('[aria-label^="j: "]').evaluate_all(
        "els => els.filter(e => /point/.test(e.getAttribute('aria-roledescription') || ''))"
        ".map(e => e.getBoundingClientRect().top)"))
    assert stage1["y"] + stage1["height"] <= top_point, (stage1, top_point)
    d.assert_clean("dynamics")
    d.screenshot("dynamics")

    # Drag from the boundary to the point right after the first pruned block.
    target = min(before) + 1
    x0, y0 = _point(chart, 2)
    x1, _ = _point(chart, target)
    page.mouse.move(x0, y0)
    page.mouse.down()
    steps = 8
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0)
    page.wait_for_timeout(300)
    # While the button is held the shading has followed the pointer in the browser alone.
    assert _rect_edge(chart) == str(target)
    expect(d.k_caption()).to_contain_text("S_start = 2 ·")

    def release() -> None:
        page.mouse.up()
        expect(d.k_caption()).to_contain_text(f"S_start = {target} ·")
        d.settle()

    # The drag switches the policy to manual: the whole app reruns, so the sidebar shows it.
    runs = d.runs_during(release)
    assert "FINISHED_SUCCESSFULLY" in runs, runs
    expect(d.sidebar.get_by_role("radio", name="manual (slider or drag on the chart)")).to_be_checked()
    after = _blocks(d.k_caption().inner_text())
    assert len(after) == 4 and min(after) >= target, (before, after)
    assert min(before) not in after, (before, after)  # now in Stage 1
    chart = d.main.get_by_test_id("stVegaLiteChart").first
    expect(chart.locator(f'[aria-label*="edge: {target}"]').first).to_be_attached()
    d.assert_clean("after the drag")

    d.go("Prune list")
    headline = d.main.locator("p", has_text=re.compile(r"^Pruned at K = \d+ "))
    expect(headline).to_contain_text("Pruned at K = 4 ")
    assert sorted(_blocks(headline.inner_text())) == sorted(after)
    d.wait_charts(1)  # the orders side by side
    d.assert_clean("prune list")
    d.screenshot("prune_list")

    d.go("Calibration heatmap")
    d.wait_charts(1)
    expect(d.main.locator(".js-plotly-plot").first).to_contain_text("S1")
    d.assert_clean("heatmap")
    d.screenshot("heatmap")

    d.go("Budget")
    d.set_number("Held-out windows", 2)
    page.get_by_role("button", name="Compute quality curves").click()
    d.wait_outcome(d.main.locator(".js-plotly-plot"), "budget", SCORING_MS)
    d.wait_charts(1)
    expect(d.main.locator(".js-plotly-plot").first).to_contain_text("current K = 4")
    page.get_by_role("button", name="Measure speed").click()
    d.wait_outcome(d.main.get_by_test_id("stMetric").filter(has_text="tokens/s"), "speed",
                   SCORING_MS)
    expect(d.main.get_by_test_id("stMetric").filter(has_text="ms/token")).to_be_visible()
    d.screenshot("budget")

    # The far end: S_start = 29 of 30 layers, from the keyboard. The Stage-1 label still
    # ends left of the line and above every point.
    d.go("Entropy dynamics")
    slider = d.main.get_by_role("slider", name="S_start (first block that may be pruned)")
    slider.focus()

    def end() -> None:
        page.keyboard.press("End")
        expect(d.k_caption()).to_contain_text("S_start = 29 ·")
        d.settle()

    # Already manual: the move reruns the page's fragment (curve, bars, sidebar K), not the
    # whole app.
    runs = d.runs_during(end)
    assert runs == ["FINISHED_FRAGMENT_RUN_SUCCESSFULLY"], runs
    chart = d.main.get_by_test_id("stVegaLiteChart").first
    expect(chart.locator('[aria-label*="edge: 29"]').first).to_be_attached()
    rule = _rule_x(chart)
    stage1 = _text_box(chart, "Stage 1")
    assert stage1["x"] + stage1["width"] <= rule, (stage1, rule)
    top_point = min(chart.locator('[aria-label^="j: "]').evaluate_all(
        "els => els.filter(e => /point/.test(e.getAttribute('aria-roledescription') || ''))"
        ".map(e => e.getBoundingClientRect().top)"))
    assert stage1["y"] + stage1["height"] <= top_point
    d.assert_clean("s_start 29")
    d.screenshot("dynamics_s_start_29")
