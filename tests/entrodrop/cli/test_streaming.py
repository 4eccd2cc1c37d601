"""`--load stream`: every command gives what `--load memory` gives, without loading the
whole model (real subprocesses on a tiny model folder)."""

import glob
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.entrodrop.cli.support import ANALYSIS, run_cli
from tests.tiny_models import save_tiny, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-stream") / "m"
    save_tiny("llama", folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def _tensors(folder):
    out = {}
    for f in glob.glob(str(folder / "*.safetensors")):
        out.update(load_file(f))
    return out


def _manifest(folder):
    record = json.loads((folder / "entrodrop.json").read_text())
    record.pop("exported_at")
    return record


def _run(args, cache):
    done = run_cli(args, cache)
    assert done.returncode == 0, done.stderr
    return done


def test_stream_and_memory_give_the_same_figures_and_exports(tiny_with_tokenizer, tmp_path):
    model = ["--model", str(tiny_with_tokenizer), *ANALYSIS]
    out = {}
    for mode in ("stream", "memory"):
        done = _run(["evaluate", *model, "--load", mode, "--k", "1", "--ks", "0..2",
                     "--held-out", "2", "--width-ratios", "1,0.5",
                     "--width-criteria", "magnitude,taylor-entropy",
                     "--out", str(tmp_path / f"eval-{mode}.json")], tmp_path / "cache")
        if mode == "stream":
            assert "layer streaming" in done.stderr and "not measured under layer streaming" in done.stdout
        _run(["export", *model, "--load", mode, "--granularity", "layer", "--k", "2",
              "--out", str(tmp_path / f"blocks-{mode}")], tmp_path / "cache")
        width_model = [a for a in model if a not in ("--knn-k", "3")]  # width has no estimators
        _run(["width", *width_model, "--load", mode, "--criterion", "taylor-entropy",
              "--ratio", "0.5", "--out", str(tmp_path / f"width-{mode}")], tmp_path / "cache")
        out[mode] = json.loads((tmp_path / f"eval-{mode}.json").read_text())
    stream, memory = out["stream"], out["memory"]
    assert stream["perplexity"] == pytest.approx(memory["perplexity"], rel=1e-5)
    assert stream["parameters"] == memory["parameters"]
    assert stream["weight_bytes"] == memory["weight_bytes"]
    for a, b in zip(stream["curves"] + stream["width_curves"],
                    memory["curves"] + memory["width_curves"], strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            assert a[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value)
    assert stream["pruned"]["perplexity"] == pytest.approx(memory["pruned"]["perplexity"], rel=1e-5)
    assert stream["pruned"]["speed"] is None and memory["pruned"]["speed"]["params_pruned"] > 0
    assert stream["pruned"]["parameters"]["params_pruned"] == memory["pruned"]["speed"]["params_pruned"]
    for kind in ("blocks", "width"):
        a, b = _tensors(tmp_path / f"{kind}-stream"), _tensors(tmp_path / f"{kind}-memory")
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in b), kind
        assert _manifest(tmp_path / f"{kind}-stream") == _manifest(tmp_path / f"{kind}-memory")
