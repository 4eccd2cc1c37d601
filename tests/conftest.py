"""Shared fixtures: tiny model folders and an isolated cache per test session."""

from __future__ import annotations

import os

import pytest

from tests.tiny_models import save_tiny


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """A fresh ENTRODROP_CACHE_DIR for one test (demo-model conversions are shared)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def demo_cache_dir():
    """The real repository cache, where the demo model is converted once."""
    from analysis.paths import REPO_ROOT

    return os.environ.get("ENTRODROP_CACHE_DIR") or str(REPO_ROOT / "cache")
