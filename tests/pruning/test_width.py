import json
import os
import subprocess
import sys

import pytest
import torch

from analysis.architectures import get_architecture, get_submodule
from analysis.taylor import NeuronScores, neuron_scores
from pruning.apply import pruned
from pruning.export import ExportError
from pruning.width import (
    MANIFEST_NAME,
    WidthPruningError,
    apply_width_pruning,
    export_width_pruned,
    keep_indices,
    width_pruned,
)
from tests.tiny_models import HIDDEN, MODEL_TYPES, tiny_ids, tiny_model

INTER = 64  # intermediate size of the tiny models
K = round(0.75 * HIDDEN)  # neurons kept per layer: 24


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _config_width(model):
    return getattr(model.config, get_architecture(model).mlp.config_key)


def _keep(model, ratio=0.75):
    scores = neuron_scores(model, tiny_ids(2, 12, seed=5), "taylor-entropy")
    return keep_indices(scores, ratio, hidden_size=model.config.hidden_size)


# keep_indices

def _scores(*layers):
    return NeuronScores("taylor-entropy", [torch.tensor(s, dtype=torch.float32) for s in layers])


def test_keep_indices_per_layer_keeps_int_ratio_times_hidden_size_in_order():
    scores = _scores([0.1, 5.0, 3.0, 0.2, 4.0, 1.0], [9.0, 0.0, 0.0, 8.0, 7.0, 0.5])
    keep = keep_indices(scores, 0.75, hidden_size=4)  # int(3.0) = 3
    assert [k.tolist() for k in keep] == [[1, 2, 4], [0, 3, 4]]
    assert all(k.dtype == torch.int64 for k in keep)
    # Truncated as the official code does: 0.7 * 4 = 2.8 keeps 2 (round() would keep 3).
    assert [len(k) for k in keep_indices(scores, 0.7, hidden_size=4)] == [2, 2]
    assert [len(k) for k in keep_indices(scores, 0.625, hidden_size=4)] == [2, 2]
    # SmolLM2-135M: D = 576, I = 1536; ratio 0.8 keeps int(460.8) = 460 neurons per layer.
    smol = NeuronScores("taylor-entropy", [torch.arange(1536, dtype=torch.float32)] * 2)
    assert [len(k) for k in keep_indices(smol, 0.8, hidden_size=576)] == [460, 460]
    # More than I asked for keeps the whole layer; less than one keeps one.
    assert [k.tolist() for k in keep_indices(scores, 4.0, hidden_size=4)] == [list(range(6))] * 2
    assert [k.tolist() for k in keep_indices(scores, 0.01, hidden_size=4)] == [[1], [0]]


def test_keep_indices_uniform_keeps_a_fraction_of_each_layer_and_breaks_ties_by_index():
    scores = _scores([1.0, 2.0, 2.0, 2.0, 0.0, 2.0, 1.0, 1.0])
    assert keep_indices(scores, 0.5, mode="uniform")[0].tolist() == [1, 2, 3, 5]
    assert keep_indices(scores, 0.25, mode="uniform")[0].tolist() == [1, 2]
    assert keep_indices(scores, 1.0, mode="uniform")[0].tolist() == list(range(8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ratio=0.0, hidden_size=4), "positive number"),
        (dict(ratio=float("nan"), hidden_size=4), "positive number"),
        (dict(ratio=0.5), "needs the model's hidden_size"),
        (dict(ratio=1.5, mode="uniform"), r"keep-fraction in \(0, 1\]"),
        (dict(ratio=0.5, mode="global"), "mode must be"),
    ],
)
def test_keep_indices_rejects_bad_arguments(kwargs, message):
    with pytest.raises(WidthPruningError, match=message):
        keep_indices(_scores([1.0, 2.0]), **kwargs)


def test_keep_indices_rejects_non_finite_scores():
    with pytest.raises(WidthPruningError, match="layer 1"):
        keep_indices(_scores([1.0, 2.0], [1.0, float("nan")]), 0.5, mode="uniform")


# apply_width_pruning / width_pruned

@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pruning_equals_zeroing_the_dropped_neurons(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(2, 12)
    keep = _keep(model)
    assert [len(k) for k in keep] == [K] * 4
    # Reference: the unpruned model with the dropped neurons' down-projection weights zeroed.
    layout = get_architecture(model).mlp
    masked = tiny_model(model_type)
    with torch.no_grad():
        for layer, idx in zip(get_architecture(masked).layers(masked), keep, strict=True):
            down = get_submodule(layer, layout.output)
            dropped = torch.ones(INTER, dtype=torch.bool)
            dropped[idx] = False
            if layout.conv1d:
                down.weight[dropped, :] = 0
            else:
                down.weight[:, dropped] = 0
    expected = _logits(masked, ids)

    apply_width_pruning(model, keep)
    assert _config_width(model) == K
    got = _logits(model, ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    n_pruned = sum(p.numel() for p in model.parameters())
    assert n_pruned < sum(p.numel() for p in masked.parameters())
    # The pruned model keeps working: a second pass with another input, and a backward.
    model(input_ids=tiny_ids(1, 7, seed=9)).logits.sum().backward()


@pytest.mark.parametrize("model_type", ["llama", "phi3", "gpt2", "opt"])
def test_keeping_every_neuron_changes_nothing(model_type):
    model = tiny_model(model_type)
    ids = tiny_ids(2, 10)
    before = _logits(model, ids)
    apply_width_pruning(model, [torch.arange(INTER)] * 4)
    assert torch.equal(_logits(model, ids), before)
    assert _config_width(model) == INTER


def test_slices_the_right_rows_and_columns():
    phi3 = tiny_model("phi3")
    mlp = phi3.model.layers[0].mlp
    gate_up, down = mlp.gate_up_proj.weight.clone(), mlp.down_proj.weight.clone()
    idx = torch.tensor([3, 10, 40])
    apply_width_pruning(phi3, [idx] * 4)
    assert torch.equal(mlp.gate_up_proj.weight, gate_up[torch.cat([idx, idx + INTER])])
    assert torch.equal(mlp.down_proj.weight, down[:, idx])
    assert (mlp.gate_up_proj.out_features, mlp.down_proj.in_features) == (6, 3)

    gpt2 = tiny_model("gpt2")
    mlp = gpt2.transformer.h[2].mlp
    fc, fc_bias, proj = mlp.c_fc.weight.clone(), mlp.c_fc.bias.clone(), mlp.c_proj.weight.clone()
    apply_width_pruning(gpt2, [idx] * 4)
    assert torch.equal(mlp.c_fc.weight, fc[:, idx]) and torch.equal(mlp.c_fc.bias, fc_bias[idx])
    assert torch.equal(mlp.c_proj.weight, proj[idx, :])
    assert (mlp.c_fc.nf, mlp.c_proj.nx, gpt2.config.n_inner) == (3, 3, 3)

    llama = tiny_model("llama")
    apply_width_pruning(llama, [idx] * 4)
    assert llama.model.layers[3].mlp.intermediate_size == 3


def test_width_pruned_restores_the_model_even_after_an_exception():
    model = tiny_model("gpt2")
    ids = tiny_ids(2, 10)
    before = _logits(model, ids)
    params = list(model.parameters())
    keep = _keep(model)
    with width_pruned(model, keep):
        assert model.config.n_inner == K
        assert not torch.equal(_logits(model, ids), before)
    assert model.config.n_inner == INTER
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert torch.equal(_logits(model, ids), before)

    with pytest.raises(RuntimeError, match="inside"):
        with width_pruned(model, keep):
            raise RuntimeError("inside")
    assert model.transformer.h[0].mlp.c_fc.nf == INTER
    assert torch.equal(_logits(model, ids), before)


def test_gpt2_default_n_inner_none_is_restored():
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import tiny_config

    config = tiny_config("gpt2")
    config.n_inner = None  # means 4 * n_embd = 128
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with width_pruned(model, [torch.arange(0, 128, 2)] * 4):
        assert model.config.n_inner == 64
        _logits(model, tiny_ids(1, 5))
    assert model.config.n_inner is None


@pytest.mark.parametrize(
    "keep, message",
    [
        ([torch.arange(8)] * 3, r"one index tensor per layer \(4\)"),
        ([torch.arange(8)] * 3 + [torch.arange(9)], "same number of neurons"),
        ([torch.arange(8)] * 3 + [torch.tensor([0, 1, 2, 3, 4, 5, 6, 64])], "outside 0..63"),
        ([torch.arange(8)] * 3 + [torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])], "repeats"),
        ([torch.arange(8)] * 3 + [torch.arange(8.0)], "1-D tensor of neuron indices"),
    ],
)
def test_bad_keep_is_rejected_before_anything_changes(keep, message):
    model = tiny_model("llama")
    ids = tiny_ids(1, 8)
    before = _logits(model, ids)
    with pytest.raises(WidthPruningError, match=message):
        apply_width_pruning(model, keep)
    assert model.config.intermediate_size == INTER
    assert torch.equal(_logits(model, ids), before)


def test_unsorted_keep_is_applied_in_original_order():
    a, b = tiny_model("opt"), tiny_model("opt")
    idx = torch.tensor([50, 3, 17, 8])
    apply_width_pruning(a, [idx] * 4)
    apply_width_pruning(b, [idx.sort().values] * 4)
    assert torch.equal(a.model.decoder.layers[0].fc1.weight, b.model.decoder.layers[0].fc1.weight)


# export

_RELOAD = """
import sys
import torch
from transformers import AutoModelForCausalLM
ids = torch.load(sys.argv[1])
out = {}
for folder in sys.argv[3:]:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out[folder] = model(input_ids=ids).logits
ours = [n for n in sys.modules if n.split(".")[0] in ("analysis", "pruning", "entrodrop", "tests")]
assert not ours, ours
torch.save(out, sys.argv[2])
"""


class _FakeTokenizer:
    def save_pretrained(self, folder):
        (folder / "tokenizer_config.json").write_text('{"fake": true}')


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every family, pruned to K neurons, exported; then reloaded by stock transformers in
    one fresh, isolated interpreter."""
    root = tmp_path_factory.mktemp("export")
    ids = tiny_ids(2, 11, seed=4)
    results = {}
    for model_type in MODEL_TYPES:
        model = tiny_model(model_type)
        keep = _keep(model)
        before = _logits(model, ids)
        tokenizer = _FakeTokenizer() if model_type == "llama" else None
        out = export_width_pruned(model, tokenizer, keep, root / model_type,
                                  manifest={"method": "width", "criterion": "taylor-entropy"})
        with width_pruned(model, keep):
            pruned = _logits(model, ids)
        results[model_type] = dict(folder=out, keep=keep, pruned=pruned,
                                   unchanged=torch.equal(_logits(model, ids), before))
    torch.save(ids, root / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _RELOAD, str(root / "ids.pt"), str(root / "out.pt"),
         *(str(r["folder"]) for r in results.values())],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = torch.load(root / "out.pt")
    for r in results.values():
        r["reloaded"] = reloaded[str(r["folder"])]
    return root, results


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_export_reloads_with_stock_transformers(exported, model_type):
    root, results = exported
    r = results[model_type]
    assert r["unchanged"], "export must leave the in-memory model unpruned"
    torch.testing.assert_close(r["reloaded"], r["pruned"], atol=1e-5, rtol=0)
    config = json.loads((r["folder"] / "config.json").read_text())
    key = get_architecture(tiny_model(model_type)).mlp.config_key
    assert config[key] == K
    manifest = json.loads((r["folder"] / MANIFEST_NAME).read_text())
    assert manifest["method"] == "width" and manifest["criterion"] == "taylor-entropy"
    assert manifest["width_pruning"]["config_key"] == key
    assert manifest["width_pruning"]["intermediate_size_after"] == K
    assert manifest["width_pruning"]["kept_neurons"] == [k.tolist() for k in r["keep"]]
    assert manifest["parameters_after"] < manifest["parameters_before"]
    assert "most important MLP neurons" in (r["folder"] / "README.md").read_text()
    assert (r["folder"] / "tokenizer_config.json").exists() == (model_type == "llama")
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_export_refuses_to_overwrite_unless_asked(tmp_path):
    model = tiny_model("qwen2")
    keep = _keep(model)
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ExportError, match="already exists"):
        export_width_pruned(model, None, keep, target, manifest={})
    assert (target / "old.txt").exists()
    with pytest.raises(ExportError, match="holds no export of this tool"):
        export_width_pruned(model, None, keep, target, manifest={}, overwrite=True)
    (target / MANIFEST_NAME).write_text("{}")  # overwrite replaces only a previous export
    export_width_pruned(model, None, keep, target, manifest={}, overwrite=True)
    assert not (target / "old.txt").exists()
    assert (target / "config.json").exists() and (target / MANIFEST_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_export_leaves_nothing_behind(tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, folder):
            raise OSError("disk full")

    model = tiny_model("qwen3")
    with pytest.raises(OSError, match="disk full"):
        export_width_pruned(model, BrokenTokenizer(), _keep(model), tmp_path / "out", manifest={})
    assert list(tmp_path.iterdir()) == []
    assert model.config.intermediate_size == INTER


def test_export_rejects_unequal_counts_without_writing(tmp_path):
    model = tiny_model("llama")
    keep = [torch.arange(8)] * 3 + [torch.arange(9)]
    with pytest.raises(WidthPruningError, match="same number"):
        export_width_pruned(model, None, keep, tmp_path / "out", manifest={})
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_model_with_blocks_pruned_in_memory(tmp_path):
    model = tiny_model("llama")
    keep = _keep(model)
    with pruned(model, "attn", [1]):
        with pytest.raises(WidthPruningError, match="pruned in memory"):
            export_width_pruned(model, None, keep, tmp_path / "out", manifest={})
    assert list(tmp_path.iterdir()) == []
    with width_pruned(model, keep):
        with pytest.raises(WidthPruningError, match="MLP width pruned in memory"):
            export_width_pruned(model, None, keep, tmp_path / "out", manifest={})
    assert list(tmp_path.iterdir()) == []
