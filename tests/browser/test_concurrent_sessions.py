"""Two real browser sessions analysing different calibration sets at once, on one server and
one shared model: each gets its own result, equal to the same analysis run alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from analysis.settings import AnalysisRequest, CalibrationSettings, EstimatorSettings, ModelSettings
from entrodrop import service
from tests.browser.conftest import (
    APP,
    CHROMIUM_ARGS,
    REPO,
    STEP_MS,
    VIEWPORT,
    Dashboard,
    _chromium,
    _free_port,
    _stop,
    _wait_healthy,
)
from tests.tiny_models import save_tiny

SEEDS = (11, 12)


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrent")
    model = save_tiny("llama", base / "model")
    cache = base / "cache"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ENTRODROP_CACHE_DIR": str(cache), "ENTRODROP_EXPORT_ROOT": str(base / "x"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = base / "streamlit.log"
    cmd = [str(Path(sys.executable).with_name("streamlit")), "run", str(APP), "--server.headless",
           "true", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--", "--model", str(model)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_healthy(proc, url, log)
        yield url, model, cache
    finally:
        _stop(proc)


@pytest.mark.slow
@pytest.mark.browser
def test_two_sessions_analyse_at_once_and_get_their_own_results(tiny_server):
    url, model, cache = tiny_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            boards = []
            for seed in SEEDS:
                context = browser.new_context(viewport=VIEWPORT)
                context.set_default_timeout(STEP_MS)
                d = Dashboard(context.new_page(), url)
                d.open()
                d.go("Calibration")
                d.set_number("N (windows)", 4)
                d.set_number("T (tokens per window)", 32)
                d.set_number("Seed", seed)
                boards.append(d)
            for d in boards:  # both start before either finishes
                d.page.get_by_role("button", name="Run analysis").click()
            for d in boards:
                d.wait_outcome(d.main.get_by_role("heading", name="Result"), "analysis", 240_000)
                d.assert_clean("after the analysis")
        finally:
            browser.close()

    entries = [json.loads(f.read_text())["payload"] for f in (cache / "profiles").glob("*.json")]
    by_seed = {e["calibration"]["seed"]: e for e in entries}
    assert set(by_seed) == set(SEEDS)
    assert by_seed[11]["calibration"]["fingerprint"] != by_seed[12]["calibration"]["fingerprint"]
    for seed, profile in by_seed.items():
        s = profile["settings"]
        alone = service.analyze(AnalysisRequest(
            ModelSettings(str(model)),
            (CalibrationSettings(profile["calibration"]["spec"], 4, 32, seed),),
            EstimatorSettings(s["bins"], s["knn_k"], s["renyi_alpha"], s["skip_first"]),
            use_cache=False)).runs[0]
        assert profile["calibration"]["fingerprint"] == alone.calibration["fingerprint"]
        for est in ("bucket", "knn", "renyi"):
            assert profile["entropy_curve"][est] == pytest.approx(alone.entropy_curve[est], abs=1e-6)
        assert profile["blocks"]["layer"]["cosine"] == pytest.approx(alone.blocks["layer"].cosine, abs=1e-6)
