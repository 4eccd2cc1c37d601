"""`--format gguf` on the export commands and `evaluate --engine llama.cpp` (tiny models)."""

import json

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.entrodrop.cli.support import ANALYSIS, run_cli
from tests.tiny_models import tiny_bpe_tokenizer, tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


@pytest.fixture(scope="module")
def bpe_llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bpe-llama")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama")).save_pretrained(folder)
    tiny_bpe_tokenizer().save_pretrained(folder)
    return folder


DECISION = ["--criterion", "cosine", "--k", "1", "--policy", "manual", "--s-start", "1"]


def test_export_format_gguf_writes_one_file_and_says_how_to_run_it(bpe_llama_dir, cache, tmp_path):
    out = tmp_path / "pruned"
    r = run_cli(["--quiet", "export", "--model", str(bpe_llama_dir), *ANALYSIS, "--granularity",
                 "attn", *DECISION, "--out", str(out), "--format", "gguf", "--gguf-type", "bf16"],
                cache)
    assert r.returncode == 0, r.stderr
    assert f"llama-cli -m {out / 'model.gguf'}" in r.stderr
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert manifest["format"] == "gguf" and manifest["gguf"]["gguf_type"] == "bf16"
    reader = gguf.GGUFReader(out / "model.gguf")
    heads = reader.fields["deci.attention.head_count"].contents()
    assert [i for i, h in enumerate(heads) if h == 0] == manifest["blocks"]
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2} == {"BF16"}


def test_width_format_gguf_records_the_new_mlp_width(bpe_llama_dir, cache, tmp_path):
    out = tmp_path / "width"
    r = run_cli(["--quiet", "width", "--model", str(bpe_llama_dir), "--calibration",
                 "builtin:random", "--samples", "2", "--seqlen", "16", "--device", "cpu",
                 "--ratio", "1.0", "--out", str(out), "--format", "gguf"], cache)
    assert r.returncode == 0, r.stderr
    reader = gguf.GGUFReader(out / "model.gguf")
    assert reader.fields["llama.feed_forward_length"].contents() == 32
    assert json.loads((out / "entrodrop.json").read_text())["format"] == "gguf"


def test_bad_gguf_type_and_unsupported_tokenizer_fail_in_one_line(tiny_llama_dir, cache, tmp_path):
    r = run_cli(["export", "--model", str(tiny_llama_dir), *ANALYSIS, *DECISION, "--out",
                 str(tmp_path / "a"), "--format", "gguf", "--gguf-type", "q4_k"], cache)
    assert r.returncode == 2 and "--gguf-type" in r.stderr
    r = run_cli(["--quiet", "export", "--model", str(tiny_llama_dir), *ANALYSIS, *DECISION,
                 "--out", str(tmp_path / "b"), "--format", "gguf"], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "byte-level BPE" in r.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_evaluate_engine_llama_cpp_times_gguf_files(bpe_llama_dir, cache, tmp_path):
    out = tmp_path / "eval.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(bpe_llama_dir), *ANALYSIS, "--held-out",
                 "2", "--granularity", "layer", *DECISION, "--repeats", "1", "--engine", "both",
                 "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())["pruned"]
    engine = data["speed_llama_cpp"]
    assert engine["engine"] == "llama.cpp" and engine["gguf_type"] == "f16"
    assert engine["params_pruned"] < engine["params_base"]
    assert engine["prefill_tokens_per_s_base"] > 0 and engine["decode_ratio"] > 0
    assert data["speed"]["params_pruned"] < data["speed"]["params_base"]
    assert "llama.cpp (f16) prefill x" in r.stdout
