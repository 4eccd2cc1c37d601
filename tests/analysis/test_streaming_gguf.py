"""Streaming from GGUF files, and from the demo models, equals the in-memory analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from analysis.capture import capture
from analysis.settings import EstimatorSettings
from analysis.streaming import open_source, stream_capture, weight_bytes_of
from tests.analysis.test_streaming import OPTS, assert_same_statistics
from tests.tiny_models import tiny_config, tiny_ids, tiny_model


def _permute_like_llama_cpp(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows: each head's two rotary halves are
    interleaved into adjacent pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gpt2_model():
    """A tiny GPT-2 whose config survives a GGUF round trip (transformers reads neither
    n_inner nor n_positions from GGUF metadata, so both keep their defaults)."""
    config = tiny_config("gpt2")
    config.n_inner, config.n_positions = None, 1024
    torch.manual_seed(4)
    return AutoModelForCausalLM.from_config(config).eval()


def write_gguf(model, path, arch: str, quantized: bool = False) -> None:
    """A tiny model stored as llama.cpp's converter would: `llama` with q/k permuted,
    `gpt2` with its Conv1D matrices transposed; 2-D weights in Q8_0 when `quantized`."""
    import gguf

    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_head_count(c.num_attention_heads)
    if arch == "llama":
        writer.add_context_length(c.max_position_embeddings)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_rope_dimension_count(c.head_dim)
        writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_vocab_size(c.vocab_size)
    else:  # gpt2: the vocabulary size comes from the token list
        writer.add_context_length(c.n_positions)
        writer.add_feed_forward_length(4 * c.hidden_size)
        writer.add_layer_norm_eps(c.layer_norm_epsilon)
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    arch_id = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    table = gguf.get_tensor_name_map(arch_id, c.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        stem, suffix = name.rsplit(".", 1)
        gguf_name = f"{table.get_name(stem)}.{suffix}"
        w = tensor.float().numpy().copy()
        if arch == "llama" and ".q_proj." in name:
            w = _permute_like_llama_cpp(w, c.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            w = _permute_like_llama_cpp(w, c.num_key_value_heads)
        elif arch == "gpt2" and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            w = w.T.copy()
        if quantized and w.ndim == 2:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gguf_name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_llama():
    model = tiny_model("llama", seed=3)
    model.config.tie_word_embeddings = False
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_f32_gguf_streams_the_original_weights(arch, tiny_llama, tmp_path):
    model = tiny_llama if arch == "llama" else _gpt2_model()
    path = tmp_path / "tiny.gguf"
    write_gguf(model, path, arch)
    source = open_source(path)
    for name, tensor in model.state_dict().items():
        if name != "lm_head.weight":  # the GGUF's output.weight is never read
            assert torch.equal(source.read(name), tensor), name  # layout changes undone
    ids = tiny_ids(4, 20, seed=2)
    assert_same_statistics(stream_capture(path, ids, OPTS), capture(model, ids, OPTS))


def test_quantized_gguf_streams_what_transformers_loads(tiny_llama, tmp_path):
    path = tmp_path / "tiny-q8.gguf"
    write_gguf(tiny_llama, path, "llama", quantized=True)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                     dtype=torch.float32).eval()
    source = open_source(path)
    for name, tensor in reference.state_dict().items():
        if name in source.names():
            assert torch.equal(source.read(name), tensor), name
    ids = tiny_ids(4, 20, seed=2)
    assert_same_statistics(stream_capture(path, ids, OPTS), capture(reference, ids, OPTS))
    numel = sum(t.numel() for t in tiny_llama.state_dict().values())
    assert weight_bytes_of(path) == 4 * numel  # dequantised to float32


@pytest.mark.parametrize("quantized", [False, True])
def test_dequantising_a_few_rows_at_a_time_gives_the_whole_tensor(tiny_llama, tmp_path,
                                                                   monkeypatch, quantized):
    import analysis.streaming.gguf_source as gguf_source

    path = tmp_path / "tiny.gguf"
    write_gguf(tiny_llama, path, "llama", quantized=quantized)
    whole = {name: open_source(path).read(name) for name in open_source(path).names()}
    monkeypatch.setattr(gguf_source, "_CHUNK_VALUES", 40)  # a few rows per block
    source = open_source(path)
    for name, tensor in whole.items():
        assert torch.equal(source.read(name), tensor), name


# --------------------------------------------------------------------------- demo models


def _relative_gap(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.slow
@pytest.mark.parametrize("demo", ["demo:smollm2-135m", "demo:gemma3-270m"])
def test_demo_model_streamed_profile_equals_in_memory(demo, demo_cache_dir, monkeypatch):
    from analysis.calibration import load_calibration
    from analysis.models import load_model
    from analysis.profile import build_profile
    from analysis.settings import CalibrationSettings, ModelSettings

    monkeypatch.setenv("ENTRODROP_CACHE_DIR", demo_cache_dir)
    loaded = load_model(ModelSettings(demo, device="cpu", dtype="float32"))
    cal = load_calibration(CalibrationSettings("builtin:licenses", samples=4, seqlen=64),
                           loaded.tokenizer, model=loaded.model, on_gpu=False)
    opts = EstimatorSettings(batch_size=2)
    info = dict(model_info={}, calibration_info={}, opts=opts)  # only the numbers compared
    in_memory = build_profile(capture(loaded.model, cal.input_ids, opts), **info)
    del loaded
    streamed = build_profile(stream_capture(demo, cal.input_ids, opts), **info)
    for estimator in ("bucket", "knn", "renyi"):
        assert _relative_gap(streamed.entropy_curve[estimator],
                             in_memory.entropy_curve[estimator]) <= 1e-5
        for granularity in ("layer", "attn"):
            assert _relative_gap(streamed.scores(granularity, estimator),
                                 in_memory.scores(granularity, estimator)) <= 1e-5
    for granularity in ("layer", "attn"):
        assert _relative_gap(streamed.scores(granularity, "cosine"),
                             in_memory.scores(granularity, "cosine")) <= 1e-5
    assert _relative_gap(streamed.sink_max_norm, in_memory.sink_max_norm) <= 1e-5
