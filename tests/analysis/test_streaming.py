"""Layer streaming gives the in-memory capture's statistics, one layer in memory at a time."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from analysis.architectures import get_architecture
from analysis.capture import Accumulator, capture
from analysis.settings import EstimatorSettings
from analysis.streaming import (
    StreamingError,
    engine,
    open_source,
    should_stream,
    stream_capture,
    weight_bytes_of,
)
from analysis.streaming.skeleton import (
    body_param_names,
    build_skeleton,
    loaded,
    record_layer_inputs,
)
from tests.tiny_models import MODEL_TYPES, tiny_config, tiny_ids, tiny_model

OPTS = EstimatorSettings(bins=8, knn_k=3, renyi_alpha=2.0, skip_first=1, batch_size=2)


def assert_same_statistics(streamed: Accumulator, in_memory: Accumulator, rtol: float = 1e-5) -> None:
    for name in vars(in_memory):
        torch.testing.assert_close(getattr(streamed, name), getattr(in_memory, name),
                                   rtol=rtol, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def _save(model, folder, sharded: bool):
    # A small shard size puts every few tensors in their own file, with an index.
    model.save_pretrained(folder, max_shard_size="20KB" if sharded else "50GB")
    assert (folder / "model.safetensors.index.json").is_file() == sharded
    return folder


def _in_memory(folder, ids, opts=OPTS):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return capture(model, ids, opts)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_streaming_equals_in_memory_capture(model_type, sharded, tmp_path):
    folder = _save(tiny_model(model_type, seed=1), tmp_path, sharded)
    ids = tiny_ids(5, 20, seed=4)  # 5 windows in batches of 2: a short last batch
    assert_same_statistics(stream_capture(folder, ids, OPTS), _in_memory(folder, ids))


def mixed_gemma(model_type: str):
    """A tiny Gemma whose sliding window (4) is shorter than T, with both layer types."""
    config = tiny_config(model_type)
    config.sliding_window = 4
    config.layer_types = ["sliding_attention", "full_attention"] * 2
    torch.manual_seed(2)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma_sliding_and_global_layers_get_their_own_masks(model_type, tmp_path):
    model = mixed_gemma(model_type)
    model.save_pretrained(tmp_path)
    ids = tiny_ids(3, 24, seed=5)
    assert_same_statistics(stream_capture(tmp_path, ids, OPTS), _in_memory(tmp_path, ids))

    # The recorded inputs are the model's own: a sliding layer's mask hides what a
    # global layer's mask shows.
    skeleton = build_skeleton(model.config, torch.float32)
    with loaded(skeleton, {n: model.get_parameter(n).detach().clone()
                                           for n in body_param_names(skeleton)}, torch.device("cpu")):
        _z0, calls = record_layer_inputs(skeleton, ids[:1], torch.device("cpu"))
    sliding, full = calls[0][1]["attention_mask"], calls[1][1]["attention_mask"]
    assert not _sees(sliding, query=23, key=0) and _sees(sliding, query=23, key=20)
    assert _sees(full, query=23, key=0)


def _sees(mask, query: int, key: int) -> bool:
    """Whether a query may attend to a key under a transformers mask: None is plain causal
    (sdpa's is_causal), a bool mask marks what is visible, a float mask adds 0 there."""
    if mask is None:
        return key <= query
    m = mask[0, 0, query, key]
    return bool(m) if m.dtype == torch.bool else bool(m == 0)


def track_reads(monkeypatch, module, prefix: str) -> tuple[list, list[int]]:
    """Replace `module.read_tensors` so that each tensor it reads under `prefix` is tracked
    until it is freed, wherever it is kept (read-ahead, module, export buffer). Returns
    (alive: [(storage weak reference, bytes)], peaks: the bytes alive after each read)."""
    from torch.multiprocessing.reductions import StorageWeakRef

    alive: list[tuple[StorageWeakRef, int]] = []
    peaks: list[int] = []
    real_read = module.read_tensors

    def counted_read(source, names, dtype):
        out = real_read(source, names, dtype)
        for name, t in out.items():
            if name.startswith(prefix):
                alive.append((StorageWeakRef(t.untyped_storage()), t.untyped_storage().nbytes()))
        peaks.append(sum(size for ref, size in alive if not ref.expired()))
        return out

    monkeypatch.setattr(module, "read_tensors", counted_read)
    return alive, peaks


def test_streaming_holds_at_most_two_layers(tmp_path, monkeypatch):
    config = tiny_config("llama")
    config.num_hidden_layers = 6
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path, max_shard_size="20KB")
    skeleton = build_skeleton(config, torch.float32)
    prefix = get_architecture(skeleton).layers_path + "."
    layers = get_architecture(skeleton).layers(skeleton)
    one_layer = sum(p.numel() * 4 for p in layers[0].parameters())

    # Every decoder-layer tensor the engine will hold is created by its reader.
    alive, peaks = track_reads(monkeypatch, engine, prefix)
    stream_capture(tmp_path, tiny_ids(4, 20), OPTS)
    assert len(peaks) == 1 + 6  # the body, then each layer once
    assert max(peaks) <= 2 * one_layer
    assert max(peaks) == 2 * one_layer  # the read-ahead overlaps: the count does see two
    assert all(ref.expired() for ref, _ in alive)  # nothing outlives the run


def test_progress_reaches_the_end(tmp_path):
    folder = _save(tiny_model("qwen3"), tmp_path, sharded=False)
    seen = []
    stream_capture(folder, tiny_ids(3, 16), OPTS, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert "layer 4/4" in seen[-1][1]


def test_batch_size_argument_overrides_the_settings(tmp_path):
    folder = _save(tiny_model("phi3"), tmp_path, sharded=False)
    ids = tiny_ids(4, 16, seed=6)
    assert_same_statistics(stream_capture(folder, ids, OPTS, batch_size=4),
                           stream_capture(folder, ids, OPTS, batch_size=1))


def test_bfloat16_checkpoint_streams_in_float32(tmp_path):
    folder = tmp_path
    tiny_model("llama", dtype=torch.bfloat16).save_pretrained(folder)
    ids = tiny_ids(3, 16)
    assert_same_statistics(stream_capture(folder, ids, OPTS, device="cpu", dtype="float32"),
                           _in_memory(folder, ids))


def test_weight_bytes_from_headers(tmp_path):
    from safetensors.torch import load_file

    tiny_model("gpt2").save_pretrained(tmp_path)
    stored = sum(t.numel() * t.element_size()
                 for t in load_file(tmp_path / "model.safetensors").values())
    assert weight_bytes_of(tmp_path) == stored
    assert weight_bytes_of(tmp_path, torch.bfloat16) == stored // 2


def test_should_stream_compares_with_free_memory():
    gib = 2**30
    assert not should_stream(2 * gib, "cpu", free=8 * gib)
    assert should_stream(8 * gib, "cpu", free=8 * gib)
    assert should_stream(7 * gib, "cpu", free=8 * gib)  # no room left for activations
    assert isinstance(should_stream(1, "cpu"), bool)  # measures the machine itself


def test_folder_without_safetensors_is_refused(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(StreamingError, match="no .safetensors weights"):
        open_source(tmp_path)


def test_missing_layer_weight_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_model("llama").save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.2.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StreamingError, match=r"model\.layers\.2\.mlp\.up_proj\.weight"):
        stream_capture(tmp_path, tiny_ids(2, 16), OPTS)


def test_weights_of_another_config_are_refused(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(StreamingError, match="do not belong to this config"):
        stream_capture(tmp_path, tiny_ids(2, 16), OPTS)


def test_truncated_shard_is_reported(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(StreamingError, match="corrupt or truncated"):
        open_source(tmp_path)


def test_shards_of_the_windows_merge_to_the_whole(tmp_path):
    # What torchrun ranks do: each streams its own windows, the accumulators add up.
    folder = _save(tiny_model("mistral"), tmp_path, sharded=False)
    ids = tiny_ids(6, 20, seed=2)
    whole = stream_capture(folder, ids, OPTS)
    merged = stream_capture(folder, ids[0::2], OPTS).merge(stream_capture(folder, ids[1::2], OPTS))
    assert_same_statistics(merged, whole)


def test_recording_puts_the_real_layers_back(tmp_path):
    model = tiny_model("opt")
    skeleton = build_skeleton(model.config, torch.float32)
    layers = get_architecture(skeleton).layers(skeleton)
    originals = list(layers)
    body = {n: model.get_parameter(n).detach().clone() for n in body_param_names(skeleton)}
    with loaded(skeleton, body, torch.device("cpu")):
        z0, calls = record_layer_inputs(skeleton, tiny_ids(1, 12), torch.device("cpu"))
    assert list(layers) == originals
    assert z0.shape == (1, 12, model.config.hidden_size) and len(calls) == len(layers)
    assert all(p.is_meta for p in skeleton.parameters())  # the body's weights are gone again
