"""The GGUF writer (pruning.gguf_export) on tiny random Llama models, read back with
gguf.GGUFReader: architecture and per-layer metadata, omitted and stand-in tensors, the
rotary row order, storage types, the tokenizer keys, and the export folder's rules."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from analysis.models import demo_gguf_path
from pruning.export import TargetExistsError, UnsupportedExportError, export_pruned
from pruning.gguf_export import (
    GGUF_FILE,
    GGUFExportError,
    export_as_gguf,
    folder_to_gguf,
    permute_rotary_rows,
)
from pruning.width import export_width_pruned
from tests.tiny_models import VOCAB, tiny_bpe_tokenizer, tiny_model


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def _export(model, out, granularity="layer", blocks=(), gguf_type="f32", **kw):
    def write_hf(folder):
        export_pruned(model, tiny_bpe_tokenizer(), folder, granularity=granularity,
                      blocks=list(blocks), manifest={"source_model": "tiny"})
    return export_as_gguf(write_hf, out, gguf_type=gguf_type, **kw)


def _read(folder):
    reader = gguf.GGUFReader(folder / GGUF_FILE)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def _f32(t) -> np.ndarray:
    return np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))


def test_permute_rotary_rows_interleaves_the_two_halves_of_each_head():
    # 2 heads of dimension 4: rows 0..3 are head 0 (halves [0,1] and [2,3]), rows 4..7 head 1.
    w = np.arange(8, dtype=np.float32)[:, None].repeat(3, axis=1)
    got = permute_rotary_rows(w, n_heads=2)[:, 0].tolist()
    assert got == [0, 2, 1, 3, 4, 6, 5, 7]


def test_layer_export_is_plain_llama_with_permuted_q_k_and_exact_weights(llama, tmp_path):
    out = _export(llama, tmp_path / "out", "layer", [1])
    fields, tensors = _read(out)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 3
    assert fields["llama.attention.head_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.feed_forward_length"] == 64
    assert fields["llama.rope.dimension_count"] == 8
    state = llama.state_dict()
    # The tiny model's head is not tied, so it is stored (a tied one is left out: llama.cpp
    # then uses token_embd, as the demo exports show).
    np.testing.assert_array_equal(_f32(tensors["output.weight"]), state["lm_head.weight"].numpy())
    assert len(tensors) == 3 + 3 * 9
    # New layer 1 is old layer 2: q rows permuted per head, v as it is, norms exact.
    q = state["model.layers.2.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(_f32(tensors["blk.1.attn_q.weight"]), permute_rotary_rows(q, 4))
    k = state["model.layers.2.self_attn.k_proj.weight"].numpy()
    np.testing.assert_array_equal(_f32(tensors["blk.1.attn_k.weight"]), permute_rotary_rows(k, 2))
    np.testing.assert_array_equal(_f32(tensors["blk.1.attn_v.weight"]),
                                  state["model.layers.2.self_attn.v_proj.weight"].numpy())
    np.testing.assert_array_equal(_f32(tensors["blk.1.ffn_norm.weight"]),
                                  state["model.layers.2.post_attention_layernorm.weight"].numpy())
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert manifest["format"] == "gguf" and manifest["blocks"] == [1]
    assert manifest["gguf"]["architecture"] == "llama"
    assert not (out / "hf-checkpoint").exists()
    assert "llama-cli -m" in (out / "README.md").read_text()


def test_attn_export_is_deci_with_zero_heads_and_no_attention_tensors_there(llama, tmp_path):
    out = _export(llama, tmp_path / "out", "attn", [2])
    fields, tensors = _read(out)
    assert fields["general.architecture"] == "deci"
    assert fields["deci.attention.head_count"] == [4, 4, 0, 4]
    assert fields["deci.attention.head_count_kv"] == [2, 2, 0, 2]
    assert fields["deci.feed_forward_length"] == [64, 64, 64, 64]
    for part in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_norm"):
        assert f"blk.2.{part}.weight" not in tensors
        assert f"blk.1.{part}.weight" in tensors
    for part in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down"):
        assert f"blk.2.{part}.weight" in tensors


def test_attn_export_of_block_0_keeps_heads_as_linear_attention_with_zero_output(llama, tmp_path):
    out = _export(llama, tmp_path / "out", "attn", [0, 3])
    fields, tensors = _read(out)
    # Layer 0 keeps its head count (llama.cpp takes the head size from it) with 0 KV heads.
    assert fields["deci.attention.head_count"] == [4, 4, 4, 0]
    assert fields["deci.attention.head_count_kv"] == [0, 2, 2, 0]
    assert "blk.0.attn_q.weight" not in tensors
    zero = _f32(tensors["blk.0.attn_output.weight"])
    assert zero.shape == (32, 32) and not zero.any()
    np.testing.assert_array_equal(_f32(tensors["blk.0.attn_norm.weight"]),
                                  llama.state_dict()["model.layers.0.input_layernorm.weight"].numpy())
    assert "blk.3.attn_norm.weight" not in tensors
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert manifest["gguf"]["attention_as_linear_zero"] == [0]
    assert manifest["gguf"]["attention_omitted"] == [3]


def test_per_layer_mlp_widths_are_written_as_a_deci_array(llama, tmp_path):
    hf = tmp_path / "hf"
    export_pruned(llama, tiny_bpe_tokenizer(), hf, granularity="layer", blocks=[], manifest={})
    state = load_file(hf / "model.safetensors")
    for i, width in enumerate([64, 48, 32, 64]):
        for name in ("gate_proj", "up_proj"):
            key = f"model.layers.{i}.mlp.{name}.weight"
            state[key] = state[key][:width].contiguous()
        key = f"model.layers.{i}.mlp.down_proj.weight"
        state[key] = state[key][:, :width].contiguous()
    save_file(state, hf / "model.safetensors", metadata={"format": "pt"})
    folder_to_gguf(hf, tmp_path / "w.gguf", gguf_type="f32")
    reader = gguf.GGUFReader(tmp_path / "w.gguf")
    assert reader.fields["general.architecture"].contents() == "deci"
    assert reader.fields["deci.feed_forward_length"].contents() == [64, 48, 32, 64]
    assert reader.fields["deci.attention.head_count"].contents() == [4, 4, 4, 4]
    shapes = {t.name: tuple(reversed(t.shape.tolist())) for t in reader.tensors}
    assert shapes["blk.2.ffn_down.weight"] == (32, 32)
    assert shapes["blk.1.ffn_up.weight"] == (48, 32)


def test_q8_0_quantises_matrices_keeps_norms_f32_and_stores_odd_rows_as_f16(llama, tmp_path):
    keep = [torch.arange(20)] * 4  # 20 neurons: down_proj rows of 20 are not q8_0 blocks

    def write_hf(folder):
        export_width_pruned(llama, tiny_bpe_tokenizer(), keep, folder, manifest={})

    out = export_as_gguf(write_hf, tmp_path / "out", gguf_type="q8_0")
    _, tensors = _read(out)
    kinds = {name: t.tensor_type.name for name, t in tensors.items()}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.ffn_up.weight"] == "Q8_0"
    assert kinds["blk.0.ffn_down.weight"] == "F16"
    assert kinds["blk.0.attn_norm.weight"] == "F32"
    w = gguf.quants.dequantize(tensors["blk.0.ffn_up.weight"].data, gguf.GGMLQuantizationType.Q8_0)
    ref = llama.state_dict()["model.layers.0.mlp.up_proj.weight"][:20].numpy()
    assert np.abs(w.reshape(ref.shape) - ref).max() <= np.abs(ref).max() / 127
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert manifest["gguf"]["feed_forward_length"] == [20] * 4
    assert manifest["method"] == "width"


def test_hf_tokenizer_becomes_gpt2_bpe_keys(llama, tmp_path):
    out = _export(llama, tmp_path / "out", "layer", [])
    fields, _ = _read(out)
    tok = tiny_bpe_tokenizer()
    assert fields["tokenizer.ggml.model"] == "gpt2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == VOCAB
    assert tokens[tok.convert_tokens_to_ids("th")] == "th"
    assert "t h" in fields["tokenizer.ggml.merges"]
    assert fields["tokenizer.ggml.bos_token_id"] == 1
    assert fields["tokenizer.ggml.eos_token_id"] == 2


def test_tokenizer_keys_are_copied_from_a_gguf_source(llama, tmp_path):
    source = demo_gguf_path("smollm2-135m")
    out = _export(llama, tmp_path / "out", "layer", [], tokenizer_gguf=source)
    fields, _ = _read(out)
    src = gguf.GGUFReader(source)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id"):
        assert fields[key] == src.fields[key].contents()
    assert fields["tokenizer.ggml.tokens"][:50] == src.fields["tokenizer.ggml.tokens"].contents()[:50]
    assert json.loads((out / "entrodrop.json").read_text())["gguf"]["tokenizer_from"] == "gguf source"


def test_existing_target_is_kept_unless_overwrite(llama, tmp_path):
    out = _export(llama, tmp_path / "out", "layer", [1])
    before = (out / GGUF_FILE).stat().st_size
    with pytest.raises(TargetExistsError):
        _export(llama, out, "layer", [1, 2])
    assert (out / GGUF_FILE).stat().st_size == before
    _export(llama, out, "layer", [1, 2], overwrite=True)
    assert gguf.GGUFReader(out / GGUF_FILE).fields["llama.block_count"].contents() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_unsupported_family_and_word_level_tokenizer_are_refused_in_one_line(tmp_path):
    gpt2 = tiny_model("gpt2")
    with pytest.raises(UnsupportedExportError, match="--format hf"):
        export_as_gguf(lambda f: export_pruned(gpt2, None, f, granularity="attn", blocks=[1],
                                               manifest={}), tmp_path / "a")
    from tests.tiny_models import tiny_tokenizer

    with pytest.raises(GGUFExportError, match="byte-level BPE"):
        export_as_gguf(lambda f: export_pruned(tiny_model("llama"), tiny_tokenizer(), f,
                                               granularity="layer", blocks=[], manifest={}),
                       tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
