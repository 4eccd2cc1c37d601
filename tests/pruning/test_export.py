import json
import os
import site
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import analysis.paths as paths_module
from analysis.architectures import count_parameters
from pruning.apply import BlockSelectionError, active_pruning, pruned
from pruning.export import (
    MANIFEST_NAME,
    ExportError,
    InsufficientDiskSpaceError,
    TargetExistsError,
    TargetIsFileError,
    TargetNotWritableError,
    UnsupportedExportError,
    export_pruned,
    export_size_estimate,
    save_clean_checkpoint,
)
from tests.tiny_models import LAYERS, MODEL_TYPES, VOCAB, tiny_config, tiny_ids, tiny_model

REPO = Path(__file__).resolve().parents[2]
BLOCKS = {"layer": [0, 2], "attn": [0, 3]}
NEW_TOKENS = 6

# Runs with `python -I -S`: no cwd, no PYTHONPATH, no .pth files (so no editable install of
# the project); the interpreter's site-packages come in as arguments.
RELOAD_SCRIPT = r'''
import json, sys
sys.path.extend(sys.argv[3:])
results = {"project_importable": {}}
for name in ("analysis", "pruning", "entrodrop"):
    try:
        __import__(name)
        results["project_importable"][name] = True
    except ImportError:
        results["project_importable"][name] = False

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

for case in json.loads(open(sys.argv[1]).read()):
    expected = torch.load(case["expected"], weights_only=True)
    remote = case["granularity"] == "attn"
    model, info = AutoModelForCausalLM.from_pretrained(
        case["dir"], trust_remote_code=remote, output_loading_info=True)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=expected["ids"], use_cache=False).logits
    model.generation_config.eos_token_id = None
    generated = model.generate(expected["prompt"], attention_mask=torch.ones_like(expected["prompt"]),
                               max_new_tokens=expected["new_tokens"], do_sample=False, use_cache=True)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    # AutoTokenizer would pick the family's own class (e.g. Qwen2Tokenizer), which cannot
    # run the tiny word-level test tokenizer; the files themselves are what is checked.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(case["dir"])
    results[case["name"]] = {
        "class": type(model).__name__,
        "module": type(model).__module__,
        "num_hidden_layers": model.config.num_hidden_layers,
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "max_abs_diff": (logits - expected["logits"]).abs().max().item(),
        "generate_equal": torch.equal(generated, expected["generated"]),
        "tied": tied,
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "tokens": tokenizer("w5 w6 w7")["input_ids"],
    }
json.dump(results, open(sys.argv[2], "w"))
'''


def make_tokenizer():
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "<s>", "</s>"])}
    vocab.update({f"w{i}": i for i in range(len(vocab), VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory, tokenizer):
    """Exports every family at both granularities, then reloads them all in one fresh,
    isolated interpreter. Returns (results of the reload, in-process records)."""
    base = tmp_path_factory.mktemp("exports")
    cases, records = [], {}
    for model_type in MODEL_TYPES:
        model = tiny_model(model_type)
        model.generation_config.eos_token_id = None
        ids, prompt = tiny_ids(), tiny_ids(batch=2, seqlen=8, seed=3)
        source_logits = logits(model, ids)
        for granularity, blocks in BLOCKS.items():
            name = f"{model_type}-{granularity}"
            out = export_pruned(model, tokenizer, base / name, granularity=granularity,
                                blocks=blocks, manifest={"source_model": f"tiny-{model_type}",
                                                         "criterion": "knn",
                                                         "score": np.float32(0.25)})
            with pruned(model, granularity, blocks):
                expected = {
                    "ids": ids, "prompt": prompt, "new_tokens": NEW_TOKENS,
                    "logits": logits(model, ids),
                    "generated": model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=NEW_TOKENS, do_sample=False),
                    "parameters": count_parameters(model),
                }
            torch.save(expected, base / f"{name}.pt")
            cases.append({"name": name, "dir": str(out), "granularity": granularity,
                          "expected": str(base / f"{name}.pt")})
            records[name] = {"dir": out, "parameters": expected["parameters"],
                             "source_unchanged": torch.equal(logits(model, ids), source_logits)
                             and active_pruning(model) is None}
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


def test_reload_process_cannot_import_the_project(reloaded):
    results, _ = reloaded
    assert results["project_importable"] == {"analysis": False, "pruning": False,
                                             "entrodrop": False}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_layer_export_loads_with_stock_transformers(reloaded, model_type):
    results, records = reloaded
    r, record = results[f"{model_type}-layer"], records[f"{model_type}-layer"]
    assert r["module"].startswith("transformers.models.")
    assert r["num_hidden_layers"] == LAYERS - len(BLOCKS["layer"])
    assert r["missing"] == [] and r["unexpected"] == []
    assert r["max_abs_diff"] <= 1e-5
    assert r["generate_equal"]
    assert r["tied"] == r["tie_word_embeddings"]
    assert r["tokens"] == [5, 6, 7]
    assert not (record["dir"] / "modeling_entrodrop.py").exists()
    config = json.loads((record["dir"] / "config.json").read_text())
    assert "auto_map" not in config
    assert config.get("num_hidden_layers", config.get("n_layer")) == LAYERS - 2  # GPT-2: n_layer
    if "layer_types" in config:
        assert len(config["layer_types"]) == LAYERS - 2
    assert record["source_unchanged"]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_attn_export_loads_with_its_own_modeling_file(reloaded, model_type):
    results, records = reloaded
    r, record = results[f"{model_type}-attn"], records[f"{model_type}-attn"]
    assert r["class"].startswith("EntroDrop") and r["module"].startswith("transformers_modules")
    assert r["num_hidden_layers"] == LAYERS
    assert r["missing"] == [] and r["unexpected"] == []
    assert r["max_abs_diff"] <= 1e-5
    assert r["generate_equal"]
    assert r["tied"] == r["tie_word_embeddings"]
    config = json.loads((record["dir"] / "config.json").read_text())
    assert config["entrodrop_dropped_attn"] == BLOCKS["attn"]
    assert config["auto_map"]["AutoModelForCausalLM"] == f"modeling_entrodrop.{r['class']}"
    source = (record["dir"] / "modeling_entrodrop.py").read_text()
    assert "analysis" not in source and "pruning." not in source
    assert record["source_unchanged"]


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_manifest_and_model_card(reloaded, granularity):
    _, records = reloaded
    record = records[f"gemma2-{granularity}"]
    manifest = json.loads((record["dir"] / "entrodrop.json").read_text())
    assert manifest["source_model"] == "tiny-gemma2" and manifest["score"] == 0.25
    assert manifest["granularity"] == granularity and manifest["blocks"] == BLOCKS[granularity]
    assert manifest["num_layers_before"] == LAYERS
    assert manifest["num_layers_after"] == (LAYERS - 2 if granularity == "layer" else LAYERS)
    assert manifest["parameters_after"] == record["parameters"]
    assert manifest["parameters_after"] < manifest["parameters_before"]
    assert {"transformers_version", "torch_version", "exported_at"} <= set(manifest)
    card = (record["dir"] / "README.md").read_text()
    assert ("trust_remote_code=True" in card) == (granularity == "attn")
    assert "tiny-gemma2" in card and "knn" in card


def export_llama(path, granularity="layer", **kw):
    model = kw.pop("model", None) or tiny_model("llama")
    return export_pruned(model, make_tokenizer(), path, granularity=granularity,
                         blocks=kw.pop("blocks", [1]), manifest=kw.pop("manifest", {}), **kw)


def test_non_empty_target_is_refused_and_overwrite_replaces_it(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(TargetExistsError, match="overwrite"):
        export_llama(target)
    assert (target / "keep.txt").read_text() == "mine"
    with pytest.raises(TargetExistsError, match="holds no export of this tool"):
        export_llama(target, overwrite=True)  # overwrite replaces only a previous export
    (target / MANIFEST_NAME).write_text("{}")

    export_llama(target, granularity="attn", overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / "modeling_entrodrop.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    export_llama(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_target_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(TargetIsFileError):
        export_llama(tmp_path / "out")


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetNotWritableError):
        export_llama(tmp_path / "file" / "out")


@pytest.mark.parametrize("overwrite", [False, True])
def test_crash_mid_export_leaves_nothing_behind(tmp_path, overwrite):
    target = tmp_path / "out"
    if overwrite:
        export_llama(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    seen = []

    def crash(frac, msg):
        seen.append(frac)
        if frac >= 0.7:  # after the weights are written
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        export_llama(target, granularity="attn", overwrite=overwrite, progress=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert target.exists() == overwrite
    if overwrite:  # the previous export is intact
        assert not (target / "modeling_entrodrop.py").exists()
        assert (target / "model.safetensors").exists()


def test_progress_reaches_one(tmp_path):
    seen = []
    export_llama(tmp_path / "out", progress=lambda frac, msg: seen.append((frac, msg)))
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0 and all(m for _, m in seen)


def test_too_little_disk_space_is_refused(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(paths_module.shutil, "disk_usage", lambda p: usage(10**6, 10**6, 1000))
    with pytest.raises(InsufficientDiskSpaceError, match="MiB"):
        export_llama(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_size_estimate_matches_the_weights_file(tmp_path):
    model = tiny_model("gemma2")  # tied embeddings: counted once
    for granularity in ("layer", "attn"):
        estimate = export_size_estimate(model, granularity, [0, 2])
        out = export_llama(tmp_path / granularity, granularity, model=model, blocks=[0, 2])
        size = (out / "model.safetensors").stat().st_size
        assert estimate <= size <= estimate + 64 * 1024
        assert estimate < export_size_estimate(model, granularity, [])


def test_source_is_never_saved_and_quantization_config_is_dropped(tmp_path):
    model = tiny_model("llama")
    ids = tiny_ids()
    before = logits(model, ids)
    model.config.quantization_config = {"quant_method": "gguf"}

    def refuse(*args, **kwargs):
        raise RuntimeError("a GGUF-loaded model cannot be saved")

    model.save_pretrained = refuse
    out = export_llama(tmp_path / "out", model=model, blocks=[0, 2])
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert model.config.num_hidden_layers == LAYERS and model.config.quantization_config
    assert torch.equal(logits(model, ids), before)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    with pruned(model, "layer", [0, 2]):
        torch.testing.assert_close(logits(reloaded, ids), logits(model, ids), rtol=0, atol=1e-5)


def test_bad_requests_are_refused_before_writing(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(BlockSelectionError):
        export_llama(tmp_path / "a", model=model, blocks=[LAYERS])
    with pytest.raises(ExportError, match="manifest.when"):
        export_llama(tmp_path / "b", model=model, manifest={"when": object()})
    with pruned(model, "attn", [1]):
        with pytest.raises(ExportError, match="unpruned"):
            export_llama(tmp_path / "c", model=model)
    gpt2 = AutoModelForCausalLM.from_config(
        tiny_config("gpt2").__class__(**{**tiny_config("gpt2").to_dict(),
                                         "scale_attn_by_inverse_layer_idx": True}))
    with pytest.raises(UnsupportedExportError, match="layer index"):
        export_llama(tmp_path / "d", model=gpt2)
    assert list(tmp_path.iterdir()) == []


def test_weights_that_do_not_fit_the_rebuilt_model_are_refused(tmp_path):
    model = tiny_model("llama")
    state = {k: v for k, v in model.state_dict().items() if k != "model.norm.weight"}
    with pytest.raises(ExportError, match="model.norm.weight"):
        save_clean_checkpoint(model, tmp_path, state_dict=state)
    state = {**model.state_dict(), "model.extra.weight": torch.zeros(1)}
    with pytest.raises(ExportError, match="model.extra.weight"):
        save_clean_checkpoint(model, tmp_path, state_dict=state)


def test_attn_export_without_trust_remote_code_fails_loudly(tmp_path):
    # Guards against stock transformers quietly building the unpruned class with random
    # weights for the dropped attention blocks.
    import json

    from transformers import AutoModelForCausalLM

    from analysis.architectures import get_architecture
    from analysis.models import ModelLoadError, load_model
    from analysis.settings import ModelSettings

    out = export_llama(tmp_path / "attn", granularity="attn")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "entrodrop_llama"
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(out)
    with pytest.raises(ModelLoadError, match="trust remote code"):
        load_model(ModelSettings(str(out), device="cpu"))
    loaded = load_model(ModelSettings(str(out), device="cpu", trust_remote_code=True))
    assert get_architecture(loaded.model).family == "llama"
