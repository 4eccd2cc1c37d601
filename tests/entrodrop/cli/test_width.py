"""`entrodrop width` (entrodrop.cli.width): width-pruned exports of a tiny model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.entrodrop.cli.support import run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


@pytest.mark.parametrize(("criterion", "mode", "width"),
                         [("taylor-entropy", "uniform", 32), ("magnitude", "per_layer", 16)])
def test_width_export_is_a_standard_checkpoint(tiny_llama_dir, cache, tmp_path, criterion, mode, width):
    # tiny llama: hidden 32, intermediate 64; uniform keeps half of 64, per_layer 0.5 * 32.
    out = tmp_path / f"width-{criterion}"
    r = run_cli(["--quiet", "width", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
                 "--samples", "4", "--seqlen", "16", "--device", "cpu", "--criterion", criterion,
                 "--ratio", "0.5", "--mode", mode, "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == width
    assert model.model.layers[0].mlp.down_proj.weight.shape == (32, width)
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert torch.isfinite(logits).all()
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert manifest["criterion"] == criterion and manifest["ratio"] == 0.5
