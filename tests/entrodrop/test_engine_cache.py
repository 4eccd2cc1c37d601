"""The unpruned GGUF file that llama.cpp timings compare against (entrodrop.service.
engine_cache, through service.blocks.base_gguf) is written once per model content and
settings, reused while they stay the same, and never served for a changed model."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from analysis.settings import ModelSettings
from entrodrop import service
from entrodrop.service.blocks import base_gguf
from entrodrop.service.engine_cache import ENTRIES_KEPT
from tests.tiny_models import tiny_bpe_tokenizer, tiny_config


def _save(folder, seed: int) -> None:
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(tiny_config("llama")).save_pretrained(folder)
    tiny_bpe_tokenizer().save_pretrained(folder)


def _embedding(path) -> np.ndarray:
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    return np.asarray(tensors["token_embd.weight"].data)


def _entries(cache):
    return sorted((cache / "engines" / "base").glob("*.gguf"))


def test_the_unpruned_gguf_is_written_once_and_reused(tmp_path, isolated_cache):
    folder = tmp_path / "model"
    _save(folder, 0)
    loaded = service.load(ModelSettings(str(folder), device="cpu"))
    first = base_gguf(loaded, "layer", "f32")
    inode = first.stat().st_ino
    again = base_gguf(loaded, "layer", "f32")
    # os.replace of a rewritten file would give the path another inode.
    assert again == first and again.stat().st_ino == inode
    assert _entries(isolated_cache) == [first]
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp left
    weights = loaded.model.model.embed_tokens.weight.detach().numpy()
    np.testing.assert_array_equal(_embedding(first), weights)


def test_other_settings_get_their_own_unpruned_gguf(tmp_path, isolated_cache):
    folder = tmp_path / "model"
    _save(folder, 0)
    loaded = service.load(ModelSettings(str(folder), device="cpu"))
    paths = {base_gguf(loaded, "layer", "f32"), base_gguf(loaded, "layer", "f16"),
             base_gguf(loaded, "attn", "f32")}
    assert len(paths) == 3 and set(_entries(isolated_cache)) == paths


def test_a_changed_model_never_gets_the_old_unpruned_gguf(tmp_path, isolated_cache):
    folder = tmp_path / "model"
    _save(folder, 0)
    old = base_gguf(service.load(ModelSettings(str(folder), device="cpu")), "layer", "f32")
    old_weights = _embedding(old).copy()
    _save(folder, 1)  # the same path, other weights
    loaded = service.load(ModelSettings(str(folder), device="cpu"))
    new = base_gguf(loaded, "layer", "f32")
    assert new != old
    assert not np.array_equal(_embedding(new), old_weights)
    np.testing.assert_array_equal(_embedding(new),
                                  loaded.model.model.embed_tokens.weight.detach().numpy())


def test_a_streamed_model_edited_after_opening_gets_a_new_unpruned_gguf(tmp_path,
                                                                        isolated_cache):
    # A streamed model's export reads the files when it runs, so the key must describe the
    # files then, not when the model was opened.
    folder = tmp_path / "model"
    _save(folder, 0)
    streamed = service.load(ModelSettings(str(folder), device="cpu", load="stream"))
    assert isinstance(streamed, service.StreamedModel)
    old = base_gguf(streamed, "layer", "f32")
    old_weights = _embedding(old).copy()
    _save(folder, 1)
    new = base_gguf(streamed, "layer", "f32")
    assert new != old and not np.array_equal(_embedding(new), old_weights)


def test_only_the_most_recently_used_unpruned_ggufs_are_kept(tmp_path, isolated_cache):
    folder = tmp_path / "model"
    _save(folder, 0)
    loaded = service.load(ModelSettings(str(folder), device="cpu"))
    kept = [base_gguf(loaded, g, t) for g, t in
            (("layer", "f32"), ("layer", "f16"), ("layer", "bf16"), ("attn", "f32"))]
    assert len(kept) == ENTRIES_KEPT
    base_gguf(loaded, "layer", "f32")  # used again: now the most recent
    newest = base_gguf(loaded, "attn", "f16")
    assert set(_entries(isolated_cache)) == {kept[0], *kept[2:], newest}


# Needs llama.cpp's binding, which only `make test` installs, like the other engine tests.
@pytest.mark.slow
def test_engine_speed_times_against_the_cached_unpruned_gguf(tmp_path, isolated_cache):
    folder = tmp_path / "model"
    _save(folder, 0)
    loaded = service.load(ModelSettings(str(folder), device="cpu"))
    kw = {"gguf_type": "f32", "prompt_len": 8, "new_tokens": 2, "repeats": 1}
    first = service.engine_speed(loaded, "layer", [1], **kw)
    [entry] = _entries(isolated_cache)
    inode = entry.stat().st_ino
    second = service.engine_speed(loaded, "layer", [2], **kw)
    assert _entries(isolated_cache) == [entry] and entry.stat().st_ino == inode
    for result in (first, second):
        assert result["engine"] == "llama.cpp" and result["params_pruned"] < result["params_base"]
    assert first["params_base"] == second["params_base"]
