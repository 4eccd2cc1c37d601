"""The Export page's format choice: a GGUF export for llama.cpp, and how to run it."""

from __future__ import annotations

import json

import gguf
import pytest


def test_export_page_writes_gguf_and_shows_how_to_run_it(ui, tmp_path, monkeypatch,
                                                         bpe_model_dir):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    monkeypatch.setenv("ENTRODROP_MODEL", str(bpe_model_dir))
    at = ui.attn_export_page(seed=51)
    ui.export_blocks(at, "tiny-gguf", fmt="gguf", gguf_type="q8_0")
    folder = root / "tiny-gguf"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "entrodrop.json",
                                                         "model.gguf"]
    manifest = json.loads((folder / "entrodrop.json").read_text())
    pruned = sorted(at.session_state["_view"].blocks)
    assert manifest["format"] == "gguf" and manifest["blocks"] == pruned
    assert manifest["gguf"]["gguf_type"] == "q8_0"
    heads = gguf.GGUFReader(folder / "model.gguf").fields["deci.attention.head_count"].contents()
    assert [i for i, h in enumerate(heads) if h == 0] == [b for b in pruned if b != 0]
    codes = [c.value for c in at.code]
    assert any(c.startswith(f"llama-cli -m {folder / 'model.gguf'}") for c in codes)
    assert any("from llama_cpp import Llama" in c for c in codes)
    assert not any("AutoModelForCausalLM" in c for c in codes)


def test_gguf_export_of_a_word_level_tokenizer_model_is_one_error_line(ui, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(tmp_path / "exports"))
    at = ui.analysed(seed=52)
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/export.py").run()
    at.text_input(key="export_name").set_value("no-gguf").run()
    at.radio(key="export_format").set_value("gguf").run()
    at.button(key="run_export").click().run()
    assert not at.exception
    (error,) = at.error
    assert "byte-level BPE" in error.value and "\n" not in error.value.strip()
    assert not (tmp_path / "exports" / "no-gguf").exists()


def test_export_page_writes_the_vllm_layout_and_shows_both_engines(ui, tmp_path, monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.attn_export_page(seed=53)
    at.text_input(key="export_name").set_value("tiny-vllm").run()
    at.radio(key="export_layout").set_value("vllm").run()
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    folder = root / "tiny-vllm"
    manifest = json.loads((folder / "entrodrop.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert manifest["layout"] == "vllm"
    assert config["model_type"] == "nemotron-nas"
    pruned = sorted(at.session_state["_view"].blocks)
    no_op = [i for i, b in enumerate(config["block_configs"]) if b["attention"]["no_op"]]
    assert no_op == [b for b in pruned if b != 0]
    codes = [c.value for c in at.code]
    assert any("LLM(model=" in c and "trust_remote_code=True" in c for c in codes)


def test_export_page_offers_no_vllm_layout_for_a_gguf_file(ui, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(tmp_path / "exports"))
    at = ui.analysed(seed=54)
    at.selectbox(key="granularity").set_value("attn").run()
    at.switch_page("views/export.py").run()
    assert [r.key for r in at.radio if r.key == "export_layout"] == ["export_layout"]
    at.radio(key="export_format").set_value("gguf").run()
    assert not [r for r in at.radio if r.key == "export_layout"]


# Needs llama.cpp's binding, which only `make test` installs (setup --with-engines), as
# the other engine tests (tests/pruning/test_gguf_llamacpp.py) are slow-marked for.
@pytest.mark.slow
def test_budget_page_times_the_pruned_model_in_llama_cpp(ui, monkeypatch, bpe_model_dir):
    monkeypatch.setenv("ENTRODROP_MODEL", str(bpe_model_dir))
    at = ui.analysed(seed=55)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/budget.py").run()
    at.button(key="run_engine_speed").click().run()
    ui.assert_clean(at)
    speed = at.session_state["engine_speed_result"]
    assert speed["engine"] == "llama.cpp" and speed["gguf_type"] == "f16"
    assert speed["prefill_tokens_per_s_pruned"] > 0 and speed["decode_ms_per_token_base"] > 0
    labels = [m.label for m in at.metric]
    assert "Prefill, pruned (llama.cpp)" in labels and "Decode, pruned (llama.cpp)" in labels
    # Another K: the figures were measured for other blocks and are no longer shown.
    at.slider(key="k").set_value(1).run()
    assert "Prefill, pruned (llama.cpp)" not in [m.label for m in at.metric]


def test_width_page_writes_gguf_with_the_kept_neuron_count(ui, tmp_path, monkeypatch,
                                                           bpe_model_dir):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    monkeypatch.setenv("ENTRODROP_MODEL", str(bpe_model_dir))
    at = ui.start("calibration")
    ui.set_calibration(at, seed=56)
    ui.export_width(at, "tiny-width-gguf", fmt="gguf")  # keeps 32 of 64 neurons
    folder = root / "tiny-width-gguf"
    assert (folder / "model.gguf").is_file() and not (folder / "config.json").exists()
    manifest = json.loads((folder / "entrodrop.json").read_text())
    assert manifest["format"] == "gguf"
    fields = gguf.GGUFReader(folder / "model.gguf").fields
    assert fields["llama.feed_forward_length"].contents() == 32
    assert any("32 neurons kept per layer" in s.value for s in at.success)
    assert any(c.value.startswith(f"llama-cli -m {folder / 'model.gguf'}") for c in at.code)
