"""The toolbar of a local tool: the app is served from 127.0.0.1, where Streamlit's default
("auto") would show its developer options and the Deploy button; the repository's
.streamlit/config.toml (client.toolbarMode = "viewer") hides them."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect


@pytest.mark.slow
@pytest.mark.browser
def test_toolbar_shows_no_deploy_button_on_localhost(dashboard):
    d = dashboard
    d.open()
    d.assert_clean("start")
    # The toolbar and its menu are there (the check below is not vacuous) ...
    expect(d.page.get_by_test_id("stToolbar")).to_be_attached()
    expect(d.page.get_by_test_id("stMainMenu")).to_be_visible()
    # ... but neither the Deploy button nor the developer items of the menu.
    expect(d.page.get_by_test_id("stAppDeployButton")).to_have_count(0)
    expect(d.page.get_by_role("button", name="Deploy")).to_have_count(0)
    d.page.get_by_test_id("stMainMenu").click()
    menu = d.page.get_by_test_id("stMainMenuPopover")
    expect(menu).to_be_visible()
    expect(menu).not_to_contain_text("Clear cache")
