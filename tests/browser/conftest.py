"""Fixtures of the real-browser tests: a Streamlit server on a free port and a headless
Chromium page driven by Playwright, plus `Dashboard`, the helper that clicks through the app
the way a user does (sidebar links, buttons, the keyboard on sliders)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from playwright.sync_api import Locator, Page, expect, sync_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app" / "streamlit_app.py"
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
DEMO_MODEL = "demo:smollm2-135m"
VIEWPORT = {"width": 1400, "height": 900}
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SERVER_START_S = 90
START_TITLE = "EntroDrop Studio"
STEP_MS = 60_000  # one ordinary rerun of a page on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium() -> str:
    override = os.environ.get("ENTRODROP_TEST_CHROMIUM")
    for path in (override, *CHROMIUM_CANDIDATES):
        if path and Path(path).is_file():
            return path
    raise RuntimeError("no Chromium binary found (looked at "
                       f"{', '.join(CHROMIUM_CANDIDATES)}); install Debian's chromium package "
                       "or point $ENTRODROP_TEST_CHROMIUM at one")


@dataclass
class Server:
    url: str
    cache: Path
    exports: Path
    log: Path


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"streamlit did not answer within {SERVER_START_S} s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: only streamlit and its children
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _serve(base: Path, demo_cache_dir, extra_args: list[str]) -> Iterator[Server]:
    """The dashboard on the demo model, profiles and exports in tmp.

    The tmp cache links `models/` to the repository cache, so the GGUF conversion (~40 s)
    happens once per machine while the analysis itself really runs in this test.
    """
    cache, exports = base / "cache", base / "exports"
    cache.mkdir()
    exports.mkdir()
    shared_models = Path(demo_cache_dir) / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(shared_models, target_is_directory=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ENTRODROP_CACHE_DIR": str(cache), "ENTRODROP_EXPORT_ROOT": str(exports),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_MODULES_CACHE": str(base / "hf_modules"), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ENTRODROP_MODEL", None)
    env.pop("ENTRODROP_LOAD", None)
    log = base / "streamlit.log"
    # No file watcher: other people edit app/ while tests run, and a "source changed"
    # banner would end up in the screenshots.
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", str(APP),
           "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--", "--model", DEMO_MODEL, *extra_args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_healthy(proc, url, log)
        yield Server(url=url, cache=cache, exports=exports, log=log)
    finally:
        _stop(proc)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / f"streamlit-{base.name}.log")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, demo_cache_dir) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("browser"), demo_cache_dir, [])


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory, demo_cache_dir) -> Iterator[Server]:
    """The same dashboard started with `--load stream`: the demo model is never loaded whole."""
    yield from _serve(tmp_path_factory.mktemp("browser-stream"), demo_cache_dir,
                      ["--load", "stream"])


@pytest.fixture()
def browser_page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
            context.set_default_timeout(STEP_MS)
            expect.set_options(timeout=STEP_MS)
            yield context.new_page()
        finally:
            browser.close()


class Dashboard:
    """One browser session on the app, driven through what a user sees."""

    def __init__(self, page: Page, url: str):
        self.page = page
        self.url = url
        self.js_errors: list[str] = []
        self.started = time.monotonic()
        # How each script run the server reported ended: a full run of the app, or a rerun
        # of one st.fragment (ForwardMsg.script_finished, read off the websocket).
        self.runs: list[str] = []
        page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    @property
    def sidebar(self) -> Locator:
        return self.page.get_by_test_id("stSidebar")

    @property
    def main(self) -> Locator:
        return self.page.get_by_test_id("stMain")

    def _frame(self, payload) -> None:
        if not isinstance(payload, bytes):
            return
        msg = ForwardMsg()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            return
        if msg.WhichOneof("type") == "script_finished":
            self.runs.append(ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished))

    def runs_during(self, action) -> list[str]:
        """How the script runs that `action` caused ended ('FINISHED_SUCCESSFULLY' for the
        whole app, 'FINISHED_FRAGMENT_RUN_SUCCESSFULLY' for one fragment); `action` must
        wait for its rerun to finish (step_k and settle do)."""
        mark = len(self.runs)
        action()
        return self.runs[mark:]

    def open(self) -> None:
        """The app's address: it opens on the start page."""
        self.page.goto(self.url)
        self.title(START_TITLE).wait_for(timeout=120_000)
        self.settle()

    def log(self, what: str) -> None:
        """Elapsed time per step, shown by pytest when the test fails (or with -s)."""
        print(f"[browser test] {time.monotonic() - self.started:6.1f} s  {what}", flush=True)

    def title(self, text: str) -> Locator:
        return self.main.locator("h1", has_text=re.compile(f"^{re.escape(text)}$"))

    def go(self, link: str) -> None:
        """Click the sidebar link `link` (same session, unlike typing a URL)."""
        nav = self.page.get_by_test_id("stSidebarNav")
        nav.get_by_role("link", name=link, exact=True).click()
        self.title(link).wait_for()
        self.settle()

    def settle(self, quiet_s: float = 0.8, timeout_s: float = 180.0) -> None:
        """Wait until no rerun is running and nothing is stale for `quiet_s` in a row."""
        deadline = time.monotonic() + timeout_s
        idle_since = None
        while time.monotonic() < deadline:
            busy = (self.page.get_by_test_id("stStatusWidget").count() > 0
                    or self.page.locator('[data-stale="true"]').count() > 0)
            now = time.monotonic()
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= quiet_s:
                return
            self.page.wait_for_timeout(100)
        raise AssertionError(f"the app was still running after {timeout_s:.0f} s")

    def wait_charts(self, count: int, timeout_ms: int = STEP_MS) -> None:
        """Wait until `count` plotly charts have drawn data (a trace, or a heatmap image)."""
        self.page.wait_for_function(
            "n => [...document.querySelectorAll('.js-plotly-plot')]"
            ".filter(e => e.querySelector('.main-svg .trace, .main-svg .hm image')).length >= n",
            arg=count, timeout=timeout_ms)
        self.page.wait_for_timeout(400)  # plotly's own transitions

    def wait_outcome(self, success: Locator, where: str, timeout_ms: int) -> None:
        """Wait for `success` after a long action; an error box ends the wait at once and
        fails with the app's own message instead of a bare timeout."""
        failure = (self.page.get_by_test_id("stAlertContentError")
                   .or_(self.page.get_by_test_id("stException")))
        success.or_(failure).first.wait_for(timeout=timeout_ms)
        self.settle()
        self.assert_clean(where)
        expect(success.first).to_be_visible()

    def assert_clean(self, where: str) -> None:
        """No uncaught exception, no st.error and no frontend error on the page."""
        exceptions = self.page.get_by_test_id("stException")
        errors = self.page.get_by_test_id("stAlertContentError")
        assert exceptions.count() == 0, (where, exceptions.all_inner_texts())
        assert errors.count() == 0, (where, errors.all_inner_texts())
        assert not self.js_errors, (where, self.js_errors)

    def set_number(self, label: str, value: int) -> None:
        """Type into a number input and commit it with Enter, as a user does."""
        field = self.main.get_by_role("spinbutton", name=label, exact=True)
        field.fill(str(value))
        field.press("Enter")
        expect(field).to_have_value(str(value))
        self.settle()

    def k_caption(self) -> Locator:
        # A rerun that moves the caption shows the old copy (stale) beside the new one
        # until the run ends; only the live copy is the current state.
        live = self.sidebar.locator('[data-testid="stElementContainer"]:not([data-stale="true"])')
        return live.locator("p", has_text=re.compile(r"^S_start = \d+ · "))

    def step_k(self, key: str) -> None:
        """Move the K slider by one with the keyboard and wait for the rerun."""
        before = self.k_value()
        self.sidebar.get_by_role("slider", name="K (blocks to prune)").focus()
        self.page.keyboard.press(key)
        expected = before + (1 if key == "ArrowRight" else -1)
        expect(self.k_caption()).to_contain_text(f"pruned at K={expected}:")
        self.settle()

    def k_value(self) -> int:
        match = re.search(r"pruned at K=(\d+):", self.k_caption().inner_text())
        assert match, self.k_caption().inner_text()
        return int(match.group(1))

    def screenshot(self, name: str) -> Path:
        """The whole page (main area and sidebar), not only the viewport: Streamlit scrolls
        inside its own containers, so the viewport is grown to the content for the shot."""
        height = self.page.evaluate(
            "() => Math.max(...['stMain', 'stSidebarContent'].map(id => {"
            " const e = document.querySelector(`[data-testid=\"${id}\"]`);"
            " return e ? e.scrollHeight : 0; }))")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.set_viewport_size({"width": VIEWPORT["width"],
                                     "height": max(VIEWPORT["height"], min(int(height), 6000))})
        try:
            self.page.wait_for_timeout(600)  # charts re-layout to the new size
            self.page.screenshot(path=path)
        finally:
            self.page.set_viewport_size(VIEWPORT)
        self.log(f"screenshot {path.name}")
        return path


@pytest.fixture()
def dashboard(app_server, browser_page) -> Dashboard:
    return Dashboard(browser_page, app_server.url)
