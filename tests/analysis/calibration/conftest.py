"""Fixtures of the calibration tests; each test gets its own cache folder."""

from __future__ import annotations

import json

import pytest

from tests.analysis.calibration.support import make_char_tokenizer, words


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


@pytest.fixture
def docs_file(tmp_path):
    """A .jsonl of documents of mixed lengths (some shorter than the window)."""
    lengths = [10, 300, 15, 120, 500, 8, 240, 60]
    texts = [words(i, n) for i, n in enumerate(lengths)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path, texts
