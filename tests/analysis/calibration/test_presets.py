"""Presets through `datasets`: offline failures, the research pool, lazy reading."""

from __future__ import annotations

import pytest

from analysis.calibration import PRESETS, CalibrationError, load_calibration, presets
from tests.analysis.calibration.support import (
    assert_windows_from,
    contains,
    encode,
    settings,
    words,
)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "ds"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_offline_without_cache_fails_with_advice(tok, empty_hf_cache, name):
    with pytest.raises(CalibrationError, match=rf"preset:{name} .*not available offline.*builtin:"):
        load_calibration(settings(f"preset:{name}"), tok)


def test_preset_with_unreachable_hub_is_forced_offline(tok, monkeypatch):
    import datasets
    import datasets.config

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(presets, "_hub_reachable", lambda: False)
    seen = []

    def fake_load(*args, **kwargs):
        seen.append(datasets.config.HF_HUB_OFFLINE)
        raise ConnectionError("no cache")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(CalibrationError, match="preset:c4 .*not available offline"):
        load_calibration(settings("preset:c4"), tok)
    assert seen == [True]
    assert datasets.config.HF_HUB_OFFLINE is False  # restored afterwards


def test_law_preset_keeps_the_research_document_pool(tok, monkeypatch):
    import datasets

    rows = [words(1000 + i, 120) for i in range(40)]
    fake = datasets.Dataset.from_dict({"text": rows})
    calls = []

    def fake_load(repo_id, config=None, split=None, data_files=None):
        calls.append((repo_id, config, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cal = load_calibration(settings("preset:law", n=5, t=30), tok)
    assert calls == [("AdaptLLM/law_knowledge_prob", None, "test")]
    pool = fake.shuffle(seed=42).select(range(10))["text"][:5]
    assert cal.recipe["documents"] == 5
    assert_windows_from(cal, tok, pool)
    outside = [r for r in rows if r not in pool]
    assert not any(contains(encode(tok, t), row)
                   for t in outside for row in cal.input_ids.tolist())


def test_c4_preset_reads_documents_lazily(tok, monkeypatch):
    import datasets

    rows = [words(2000 + i, 100) for i in range(300)]
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: datasets.Dataset.from_dict({"text": rows}))
    cal = load_calibration(settings("preset:c4", n=4, t=30), tok)
    assert cal.recipe["documents"] == 300
    assert cal.recipe["documents_tokenized"] <= 8
    assert_windows_from(cal, tok, rows)
