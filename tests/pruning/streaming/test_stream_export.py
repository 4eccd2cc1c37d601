"""Streamed exports are the in-memory exports, tensor for tensor, written without the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from analysis.errors import EntroDropError
from pruning.apply import pruned
from pruning.export import TargetExistsError, export_pruned
from pruning.streaming import stream_export_blocks, stream_export_width
from pruning.streaming.writer import INDEX_FILE
from pruning.width import export_width_pruned, width_pruned
from tests.analysis.test_streaming_gguf import write_gguf
from tests.pruning.streaming.stream_cases import (
    app_tokenizer,
    load_in_memory,
    save_source,
    width_keep,
)
from tests.tiny_models import LAYERS, MODEL_TYPES, tiny_ids, tiny_model

BLOCKS = {"layer": [0, 2], "attn": [0, 3]}
KINDS = ("layer", "attn", "width")
MANIFEST = {"source_model": "tiny", "criterion": "knn", "score": 0.25}
SHARDED = ("mistral", "gemma2", "gpt2")  # these sources have a few tensors per file


def tensors_of(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                assert name not in out, f"{name} is in two shards"
                out[name] = f.get_tensor(name)
    return out


def assert_same_export(streamed: Path, in_memory: Path) -> None:
    """Every tensor equal (names, dtypes, values); every other file equal, the manifest
    and model card up to the export time and the folder's own name."""
    got, want = tensors_of(streamed), tensors_of(in_memory)
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    def others_in(folder: Path) -> list[str]:  # the shard layout may differ, not the rest
        return sorted(p.name for p in folder.iterdir()
                      if p.suffix != ".safetensors" and p.name != INDEX_FILE)

    others = others_in(in_memory)
    assert others == others_in(streamed)
    for name in others:
        a, b = (streamed / name).read_text(), (in_memory / name).read_text()
        if name == "entrodrop.json":
            a, b = json.loads(a), json.loads(b)
            a.pop("exported_at"), b.pop("exported_at")
        elif name == "README.md":
            a = _card(a, streamed.name)
            b = _card(b, in_memory.name)
        assert a == b, name


def _card(text: str, folder_name: str) -> str:
    lines = [line for line in text.replace(folder_name, "<out>").splitlines()
             if "Exported with transformers" not in line]  # ends with the export time
    return "\n".join(lines)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """For every family and kind: (streamed folder, in-memory folder, pruned model's logits)."""
    base = tmp_path_factory.mktemp("stream-exports")
    ids = tiny_ids(2, 16, seed=3)
    out = {}
    for model_type in MODEL_TYPES:
        source = save_source(model_type, base / f"{model_type}-src", sharded=model_type in SHARDED)
        model = load_in_memory(source)
        tokenizer = app_tokenizer(source)
        keep = width_keep(model)
        for kind in KINDS:
            name = f"{model_type}-{kind}"
            # Small shards for some, so that the index and several files are written too.
            shard = 30_000 if model_type in ("llama", "gemma3_text", "opt") else 5 * 10**9
            if kind == "width":
                mem = export_width_pruned(model, tokenizer, keep, base / f"{name}-mem", manifest=MANIFEST)
                streamed = stream_export_width(source, base / f"{name}-stream", keep, MANIFEST,
                                               max_shard_bytes=shard)
                with width_pruned(model, keep):
                    expected = logits(model, ids)
            else:
                mem = export_pruned(model, tokenizer, base / f"{name}-mem", granularity=kind,
                                    blocks=BLOCKS[kind], manifest=MANIFEST)
                streamed = stream_export_blocks(source, base / f"{name}-stream", kind,
                                                BLOCKS[kind], MANIFEST, max_shard_bytes=shard)
                with pruned(model, kind, BLOCKS[kind]):
                    expected = logits(model, ids)
            out[name] = (streamed, mem, ids, expected)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_streamed_export_equals_in_memory_export(exports, model_type, kind):
    streamed, mem, _, _ = exports[f"{model_type}-{kind}"]
    assert_same_export(streamed, mem)
    sharded = (streamed / INDEX_FILE).is_file()
    assert sharded == (model_type in ("llama", "gemma3_text", "opt"))
    if sharded:
        index = json.loads((streamed / INDEX_FILE).read_text())
        assert set(index["weight_map"]) == set(tensors_of(streamed))
        assert index["metadata"]["total_size"] == sum(
            t.numel() * t.element_size() for t in tensors_of(streamed).values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_streamed_export_loads_and_gives_the_pruned_logits(exports, model_type, kind):
    streamed, _, ids, expected = exports[f"{model_type}-{kind}"]
    model, info = AutoModelForCausalLM.from_pretrained(
        streamed, dtype=torch.float32, trust_remote_code=kind == "attn", output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    config = json.loads((streamed / "config.json").read_text())
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    assert layers == (LAYERS - 2 if kind == "layer" else LAYERS)
    torch.testing.assert_close(logits(model.eval(), ids), expected, rtol=1e-5, atol=1e-6)


def test_gguf_source_exports_what_the_gguf_loaded_model_exports(tmp_path):
    model = tiny_model("llama", seed=3)
    model.config.tie_word_embeddings = False
    gguf = tmp_path / "tiny.gguf"
    write_gguf(model, gguf, "llama", quantized=True)  # no tokenizer in it
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name,
                                                  dtype=torch.float32).eval()
    for kind, blocks in BLOCKS.items():
        mem = export_pruned(loaded, None, tmp_path / f"{kind}-mem", granularity=kind,
                            blocks=blocks, manifest=MANIFEST)
        streamed = stream_export_blocks(gguf, tmp_path / f"{kind}-stream", kind, blocks, MANIFEST,
                                        tokenizer=False)
        assert_same_export(streamed, mem)
        assert all(t.dtype == torch.float32 for t in tensors_of(streamed).values())


def test_bf16_checkpoint_exports_in_its_own_dtype_or_the_one_asked(tmp_path):
    source = tmp_path / "src"
    tiny_model("qwen2", dtype=torch.bfloat16).save_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).eval()
    mem = export_pruned(model, None, tmp_path / "mem", granularity="layer", blocks=[1], manifest={})
    streamed = stream_export_blocks(source, tmp_path / "stream", "layer", [1], {}, tokenizer=False)
    assert_same_export(streamed, mem)
    as_f32 = stream_export_blocks(source, tmp_path / "f32", "layer", [1], {}, tokenizer=False,
                                  dtype="float32")
    assert all(t.dtype == torch.float32 for t in tensors_of(as_f32).values())
    assert json.loads((as_f32 / "config.json").read_text())["dtype"] == "float32"


def test_existing_target_is_refused_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    from pruning.streaming import walk

    source = save_source("llama", tmp_path / "src")
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(TargetExistsError):
        stream_export_blocks(source, target, "layer", [1], {})
    assert (target / "mine.txt").read_text() == "mine"
    (target / "entrodrop.json").write_text("{}")  # overwrite replaces only a previous export

    calls = []

    def failing_read(*args):
        calls.append(args)
        if len(calls) > 5:
            raise OSError("disk went away")
        return real_read(*args)

    real_read = walk.read_tensors
    monkeypatch.setattr(walk, "read_tensors", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        stream_export_blocks(source, target, "attn", [1], {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    assert sorted(p.name for p in target.iterdir()) == ["entrodrop.json", "mine.txt"]


@pytest.mark.parametrize("call, match", [
    (lambda s, o: stream_export_blocks(s, o, "layer", [7], {}), "out of range"),
    (lambda s, o: stream_export_blocks(s, o, "heads", [1], {}), "unknown granularity"),
    (lambda s, o: stream_export_blocks(s, o, "attn", [1], {"bad": object()}), "cannot be written"),
    (lambda s, o: stream_export_width(s, o, [torch.arange(8)] * 3, {}), "one index tensor per layer"),
    (lambda s, o: stream_export_width(s, o, [torch.arange(8)] * 3 + [torch.arange(9)], {}),
     "same number of neurons"),
])
def test_bad_requests_are_refused_before_writing(call, match, tmp_path):
    source = save_source("llama", tmp_path / "src")
    with pytest.raises(EntroDropError, match=match):
        call(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_progress_reaches_one(tmp_path):
    source = save_source("gemma2", tmp_path / "src")
    seen = []
    stream_export_blocks(source, tmp_path / "out", "layer", [1], {},
                         progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0
