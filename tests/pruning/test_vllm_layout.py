"""The `vllm` layout of attn exports (pruning.vllm_layout): the DeciLM / nemotron-nas config
vLLM reads, the tensors it expects, and the same folder reloaded by transformers giving the
in-memory pruned model's logits. vLLM itself runs in bench/vllm_check.py (its own venv)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from analysis.architectures import get_architecture
from analysis.errors import EntroDropError
from pruning.apply import pruned
from pruning.export import export_pruned, export_size_estimate
from pruning.modeling_template import block_sections, no_op_attention_blocks
from pruning.streaming import stream_export_blocks
from pruning.vllm_layout import LayoutError
from tests.pruning.streaming.stream_cases import app_tokenizer, load_in_memory, save_source
from tests.pruning.streaming.test_stream_export import assert_same_export, tensors_of
from tests.pruning.test_export import RELOAD_SCRIPT, make_tokenizer
from tests.tiny_models import LAYERS, MODEL_TYPES, tiny_ids, tiny_model

REPO = Path(__file__).resolve().parents[2]
VLLM_TYPES = ("llama", "mistral")
# Block 0 pruned (kept at zero for vLLM) and not.
BLOCK_SETS = {"with0": [0, 3], "without0": [1, 2]}
NEW_TOKENS = 6


def export_vllm(model, path, blocks, **kw):
    return export_pruned(model, make_tokenizer(), path, granularity=kw.pop("granularity", "attn"),
                         blocks=blocks, manifest=kw.pop("manifest", {"source_model": "tiny"}),
                         layout="vllm", **kw)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory):
    """Exports llama and mistral in the vLLM layout (block 0 pruned or not) and reloads them
    all in one fresh interpreter that cannot import the project."""
    base = tmp_path_factory.mktemp("vllm-exports")
    cases, records = [], {}
    for model_type in VLLM_TYPES:
        model = tiny_model(model_type)
        model.generation_config.eos_token_id = None
        source = {k: v.clone() for k, v in model.state_dict().items()}
        ids, prompt = tiny_ids(), tiny_ids(batch=2, seqlen=8, seed=3)
        for label, blocks in BLOCK_SETS.items():
            name = f"{model_type}-{label}"
            out = export_vllm(model, base / name, blocks)
            with pruned(model, "attn", blocks):
                expected = {
                    "ids": ids, "prompt": prompt, "new_tokens": NEW_TOKENS,
                    "logits": logits(model, ids),
                    "generated": model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=NEW_TOKENS, do_sample=False),
                }
            torch.save(expected, base / f"{name}.pt")
            cases.append({"name": name, "dir": str(out), "granularity": "attn",
                          "expected": str(base / f"{name}.pt")})
            records[name] = {"dir": out, "blocks": blocks, "source": source}
    (base / "cases.json").write_text(json.dumps(cases))
    (base / "reload.py").write_text(RELOAD_SCRIPT)
    site_dirs = [p for p in site.getsitepackages() if Path(p).resolve() != REPO]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(base / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(base / "reload.py"), str(base / "cases.json"),
         str(base / "results.json"), *site_dirs],
        cwd=base, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((base / "results.json").read_text()), records


@pytest.mark.parametrize("label", BLOCK_SETS)
@pytest.mark.parametrize("model_type", VLLM_TYPES)
def test_vllm_layout_reloads_in_transformers_with_the_pruned_logits(reloaded, model_type, label):
    results, _ = reloaded
    r = results[f"{model_type}-{label}"]
    assert r["class"] == f"EntroDropDeci{type(tiny_model(model_type)).__name__}"
    assert r["module"].startswith("transformers_modules")
    assert r["missing"] == [] and r["unexpected"] == []
    # Block 0's attention runs with a zero output projection: it adds exactly nothing.
    assert r["max_abs_diff"] <= 1e-6
    assert r["generate_equal"]
    assert r["tied"] == r["tie_word_embeddings"]
    assert results["project_importable"] == {"analysis": False, "pruning": False,
                                             "entrodrop": False}


@pytest.mark.parametrize("label", BLOCK_SETS)
def test_vllm_layout_config_holds_the_block_configs_vllm_reads(reloaded, label):
    _, records = reloaded
    record = records[f"llama-{label}"]
    config = json.loads((record["dir"] / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"]
    assert config["model_type"] == "nemotron-nas"
    assert config["entrodrop_model_type"] == "llama"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_entrodrop.EntroDropDeciLlamaConfig",
        "AutoModelForCausalLM": "modeling_entrodrop.EntroDropDeciLlamaForCausalLM"}
    blocks = config["block_configs"]
    assert len(blocks) == LAYERS
    removed = [b for b in record["blocks"] if b != 0]
    for i, block in enumerate(blocks):
        no_op = i in removed
        assert block["attention"] == {"no_op": no_op, "replace_with_linear": False,
                                      "n_heads_in_group": None if no_op else 2}, i
        # intermediate_size, never ffn_mult (which vLLM rounds up to a multiple of 256).
        assert block["ffn"] == {"no_op": False, "replace_with_linear": False,
                                "intermediate_size": 64}, i


@pytest.mark.parametrize("label", BLOCK_SETS)
def test_vllm_layout_tensors_removed_zeroed_and_kept(reloaded, label):
    _, records = reloaded
    record = records[f"llama-{label}"]
    tensors, source = tensors_of(record["dir"]), record["source"]
    removed = [b for b in record["blocks"] if b != 0]
    for i in range(LAYERS):
        present = {k.split(f"model.layers.{i}.")[1] for k in tensors
                   if k.startswith(f"model.layers.{i}.")}
        attn = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                "self_attn.o_proj.weight", "input_layernorm.weight"}
        mlp = {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
               "post_attention_layernorm.weight"}
        assert present == (mlp if i in removed else mlp | attn), i
    zero = "model.layers.0.self_attn.o_proj.weight"
    if 0 in record["blocks"]:
        assert not tensors[zero].any() and source[zero].any()
    for name, tensor in tensors.items():
        if not (0 in record["blocks"] and name == zero):
            assert torch.equal(tensor, source[name]), name


def test_vllm_layout_manifest_and_model_card(reloaded):
    _, records = reloaded
    folder = records["llama-with0"]["dir"]
    manifest = json.loads((folder / "entrodrop.json").read_text())
    assert manifest["layout"] == "vllm" and manifest["blocks"] == [0, 3]
    assert manifest["attn_removed"] == [3] and manifest["attn_zeroed"] == [0]
    card = (folder / "README.md").read_text()
    assert "layout: `vllm`" in card and "LLM(model=" in card and "trust_remote_code=True" in card
    assert "zero output projection" in card
    source = (folder / "modeling_entrodrop.py").read_text()
    assert "analysis" not in source and "pruning." not in source


def test_vllm_layout_without_trust_remote_code_fails_loudly(reloaded):
    _, records = reloaded
    with pytest.raises(ValueError, match="trust_remote_code|nemotron-nas"):
        AutoModelForCausalLM.from_pretrained(records["llama-with0"]["dir"])


def test_reloaded_vllm_layout_export_is_in_the_architecture_table(reloaded):
    from analysis.models import load_model
    from analysis.settings import ModelSettings

    _, records = reloaded
    loaded = load_model(ModelSettings(str(records["llama-without0"]["dir"]), device="cpu",
                                      trust_remote_code=True))
    assert loaded.model.config.model_type == "nemotron-nas"
    assert get_architecture(loaded.model).family == "llama"


@pytest.mark.parametrize("model_type", [t for t in MODEL_TYPES if t not in VLLM_TYPES])
def test_families_vllm_cannot_run_in_this_layout_are_refused_in_one_line(model_type, tmp_path):
    with pytest.raises(LayoutError) as err:
        export_vllm(tiny_model(model_type), tmp_path / "out", [1])
    assert isinstance(err.value, EntroDropError)
    assert "\n" not in str(err.value) and "layout 'transformers'" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_sliding_window_mistral_is_refused(tmp_path):
    model = tiny_model("mistral")
    model.config.sliding_window = 16
    with pytest.raises(LayoutError, match="sliding-window"):
        export_vllm(model, tmp_path / "out", [1])


def test_unknown_layout_is_refused_before_writing(tmp_path):
    with pytest.raises(LayoutError, match="unknown export layout 'sglang'"):
        export_pruned(tiny_model("llama"), None, tmp_path / "out", granularity="attn",
                      blocks=[1], manifest={}, layout="sglang")
    assert not (tmp_path / "out").exists()


def test_layer_export_in_vllm_layout_is_the_standard_checkpoint(tmp_path):
    # vLLM loads layer exports as they are, for any family it supports (qwen3 here).
    model = tiny_model("qwen3")
    out = export_vllm(model, tmp_path / "out", [1], granularity="layer")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen3" and "block_configs" not in config
    assert json.loads((out / "entrodrop.json").read_text())["layout"] == "vllm"
    assert "vLLM loads it as it is" in (out / "README.md").read_text()


def test_size_estimate_counts_the_zeroed_block_and_not_the_removed_norms(tmp_path):
    model = tiny_model("llama")
    out = export_vllm(model, tmp_path / "out", [0, 3])
    written = sum(t.numel() * t.element_size() for t in tensors_of(out).values())
    assert export_size_estimate(model, "attn", [0, 3], layout="vllm") == written
    assert written > export_size_estimate(model, "attn", [0, 3])


def test_streamed_vllm_export_equals_in_memory_export(tmp_path):
    source = save_source("llama", tmp_path / "src")
    model = load_in_memory(source)
    for label, blocks in BLOCK_SETS.items():
        mem = export_pruned(model, app_tokenizer(source), tmp_path / f"{label}-mem",
                            granularity="attn", blocks=blocks, manifest={}, layout="vllm")
        streamed = stream_export_blocks(source, tmp_path / f"{label}-stream", "attn", blocks, {},
                                        layout="vllm", max_shard_bytes=30_000)
        assert_same_export(streamed, mem)


def test_modeling_file_refuses_block_kinds_it_does_not_build():
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64)
    attn = {"no_op": False, "replace_with_linear": False, "n_heads_in_group": 2}
    ffn = {"no_op": False, "replace_with_linear": False, "intermediate_size": 64}
    config.block_configs = block_sections([{"attention": {"no_op": True}, "ffn": ffn},
                                           {"attention": attn, "ffn": ffn}])
    assert no_op_attention_blocks(config) == [0]
    assert config.block_configs[0].attention.no_op is True
    assert not hasattr(config.block_configs[0].ffn, "ffn_mult")  # what vLLM tests
    for bad, match in (({"ffn_mult": 1.0}, "block kind"), ({"intermediate_size": 48}, "MLP width"),
                       ({"replace_with_linear": True}, "block kind")):
        config.block_configs = block_sections([{"attention": attn, "ffn": {**ffn, **bad}}] * 2)
        with pytest.raises(ValueError, match=match):
            no_op_attention_blocks(config)
    config.block_configs = block_sections([{"attention": {**attn, "n_heads_in_group": 4},
                                            "ffn": ffn}] * 2)
    with pytest.raises(ValueError, match="heads per KV head"):
        no_op_attention_blocks(config)
    config.block_configs = block_sections([{"attention": attn, "ffn": ffn}])
    with pytest.raises(ValueError, match="1 entries for 2 layers"):
        no_op_attention_blocks(config)


@pytest.mark.slow
def test_demo_model_vllm_layout_round_trip(demo_cache_dir, tmp_path, monkeypatch):
    """SmolLM2 (9 query heads on 3 KV heads, tied embeddings) from its GGUF: in memory and
    streamed, block 0 among the pruned blocks; transformers gives the pruned logits back."""
    from analysis.models import load_model
    from analysis.settings import ModelSettings

    monkeypatch.setenv("ENTRODROP_CACHE_DIR", demo_cache_dir)
    demo = "demo:smollm2-135m"
    loaded = load_model(ModelSettings(demo, device="cpu", dtype="float32"))
    blocks = [0, 20, 25, 27]
    mem = export_pruned(loaded.model, loaded.tokenizer, tmp_path / "mem", granularity="attn",
                        blocks=blocks, manifest={"source_model": demo}, layout="vllm")
    streamed = stream_export_blocks(demo, tmp_path / "stream", "attn", blocks,
                                    {"source_model": demo}, layout="vllm")
    assert_same_export(streamed, mem)
    config = json.loads((mem / "config.json").read_text())
    assert [i for i, b in enumerate(config["block_configs"]) if b["attention"]["no_op"]] == \
        [20, 25, 27]
    assert {b["attention"]["n_heads_in_group"] for b in config["block_configs"]} == {3, None}
    assert {b["ffn"]["intermediate_size"] for b in config["block_configs"]} == {1536}
    tensors = tensors_of(mem)
    assert not tensors["model.layers.0.self_attn.o_proj.weight"].any()
    assert not any(k.startswith(("model.layers.20.self_attn", "model.layers.20.input_layernorm"))
                   for k in tensors)
    ids = tiny_ids(batch=2, seqlen=32, seed=5) + 100  # real-vocabulary ids
    reloaded = AutoModelForCausalLM.from_pretrained(mem, trust_remote_code=True).eval()
    with pruned(loaded.model, "attn", blocks):
        expected = logits(loaded.model, ids)
    assert (logits(reloaded, ids) - expected).abs().max().item() <= 1e-5


def test_block0_output_bias_is_zeroed_too(tmp_path):
    # Llama with attention_bias: o_proj has a bias, which would otherwise add a constant.
    torch.manual_seed(0)
    config = tiny_model("llama").config
    config.attention_bias = True
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.bias.normal_()
    out = export_vllm(model, tmp_path / "out", [0, 2])
    tensors = tensors_of(out)
    assert not tensors["model.layers.0.self_attn.o_proj.bias"].any()
    assert "model.layers.2.self_attn.o_proj.bias" not in tensors
    ids = tiny_ids()
    with pruned(model, "attn", [0, 2]):
        expected = logits(model, ids)
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert (logits(reloaded, ids) - expected).abs().max().item() <= 1e-6
