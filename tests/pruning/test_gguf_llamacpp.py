"""GGUF exports of the demo models run in the real llama.cpp (through `llama_cpp`) and give
the logits transformers gives for the same pruned model, in float32.

Each case exports the pruned model exactly as the tool does (the Hugging Face export, then
the GGUF writer), runs one held-out window of 128 tokens through llama.cpp with an f32 KV
cache, and compares every position's logits with transformers on the same pruned model.
Tolerances: SmolLM2 (Llama) within 1e-3 (measured: about 1e-4); Gemma 3 within 0.25
(measured: about 0.05; llama.cpp computes GELU through an f16 table). Top-1 must agree at
every position whose two best logits are further apart than the tolerance (closer ones
are ties within the engines' rounding).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.models import demo_gguf_path, load_model
from analysis.settings import CalibrationSettings, ModelSettings
from entrodrop import service
from pruning.apply import pruned
from pruning.export import export_pruned
from pruning.gguf_export import GGUF_FILE, export_as_gguf
from pruning.llamacpp import gguf_logits, gguf_size, measure_gguf_speed
from pruning.width import export_width_pruned, width_pruned

pytestmark = pytest.mark.slow

TOLERANCE = {"smollm2-135m": 1e-2, "gemma3-270m": 0.5}


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def demo(request):
    name = request.param
    loaded = load_model(ModelSettings(f"demo:{name}", device="cpu", dtype="float32"))
    window = service.held_out_windows(CalibrationSettings("builtin:licenses", 8, 128), loaded, 1)
    return name, loaded, window


def _export(loaded, name, out, write_hf, gguf_type="f32"):
    return export_as_gguf(write_hf, out, gguf_type=gguf_type,
                          tokenizer_gguf=demo_gguf_path(name)) / GGUF_FILE


def _compare(ref: np.ndarray, got: np.ndarray, tol: float) -> tuple[float, float]:
    diff = float(np.abs(ref - got).max())
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > tol
    agree = ref.argmax(-1) == got.argmax(-1)
    assert diff <= tol, f"max |logit difference| {diff} > {tol}"
    assert agree[clear].all(), f"top-1 differs at positions {np.flatnonzero(~agree & clear)}"
    return diff, float(agree.mean())


def _block_sets(name: str):
    late = [10, 11, 12, 13] if name == "gemma3-270m" else [22, 23, 24, 25]
    return [("layer", []), ("layer", late), ("attn", [5, 6, 7, 14]), ("attn", [0, 3, 7, 9])]


@pytest.mark.parametrize("case", range(4), ids=["unpruned", "layer-k4", "attn-k4",
                                                "attn-k4-with-block-0"])
def test_block_export_runs_in_llama_cpp_with_transformers_logits(demo, case, tmp_path):
    name, loaded, window = demo
    granularity, blocks = _block_sets(name)[case]
    path = _export(loaded, name, tmp_path / "out", lambda f: export_pruned(
        loaded.model, loaded.tokenizer, f, granularity=granularity, blocks=blocks,
        manifest={"source_model": f"demo:{name}"}))
    with torch.no_grad(), pruned(loaded.model, granularity, blocks):
        ref = loaded.model(window).logits[0].numpy()
    got = gguf_logits(path, window[0].tolist())
    diff, agree = _compare(ref, got, TOLERANCE[name])
    manifest = json.loads((path.parent / "entrodrop.json").read_text())
    assert manifest["format"] == "gguf" and manifest["gguf"]["gguf_type"] == "f32"
    arch = manifest["gguf"]["architecture"]
    if name == "smollm2-135m":
        assert arch == ("deci" if granularity == "attn" and blocks else "llama")
    else:
        assert arch == "gemma3"
    print(f"{name} {granularity} {blocks}: max |diff| {diff:.2e}, top-1 {agree:.3f}")


def test_width_export_runs_in_llama_cpp_with_transformers_logits(demo, tmp_path):
    name, loaded, window = demo
    g = torch.Generator().manual_seed(0)
    hidden = loaded.model.config.hidden_size
    inter = loaded.model.config.intermediate_size
    keep = [torch.sort(torch.randperm(inter, generator=g)[:int(0.8 * hidden)]).values
            for _ in range(loaded.num_layers)]
    path = _export(loaded, name, tmp_path / "out", lambda f: export_width_pruned(
        loaded.model, loaded.tokenizer, keep, f, manifest={"source_model": f"demo:{name}"}))
    with torch.no_grad(), width_pruned(loaded.model, keep):
        ref = loaded.model(window).logits[0].numpy()
    got = gguf_logits(path, window[0].tolist())
    diff, agree = _compare(ref, got, TOLERANCE[name])
    manifest = json.loads((path.parent / "entrodrop.json").read_text())
    assert manifest["gguf"]["feed_forward_length"] == [int(0.8 * hidden)] * loaded.num_layers
    print(f"{name} width {int(0.8 * hidden)}: max |diff| {diff:.2e}, top-1 {agree:.3f}")


# Measured top-1 agreement of q8_0 with f32 on this window: SmolLM2 0.95, Gemma 3 0.70
# (llama.cpp's own q8_0 quantizer gives the same bytes: test_gguf_quantize_llamacpp.py).
Q8_0_TOP1 = {"smollm2-135m": 0.9, "gemma3-270m": 0.6}


def test_q8_0_attn_export_is_smaller_and_keeps_most_top1(demo, tmp_path):
    name, loaded, window = demo
    blocks = [5, 6, 7, 14]
    paths = {t: _export(loaded, name, tmp_path / t, lambda f: export_pruned(
        loaded.model, loaded.tokenizer, f, granularity="attn", blocks=blocks, manifest={}),
        gguf_type=t) for t in ("f32", "q8_0")}
    full, q8 = (gguf_logits(paths[t], window[0].tolist()) for t in ("f32", "q8_0"))
    assert gguf_size(paths["q8_0"])[1] < 0.3 * gguf_size(paths["f32"])[1]
    agree = float((full.argmax(-1) == q8.argmax(-1)).mean())
    assert agree >= Q8_0_TOP1[name], agree


def test_llama_cpp_speed_of_a_pruned_file_against_the_unpruned_one(tmp_path):
    name = "smollm2-135m"
    loaded = load_model(ModelSettings(f"demo:{name}", device="cpu", dtype="float32"))
    paths = {k: _export(loaded, name, tmp_path / k, lambda f, b=b: export_pruned(
        loaded.model, loaded.tokenizer, f, granularity="layer", blocks=b, manifest={}),
        gguf_type="f16") for k, b in (("base", []), ("pruned", list(range(10, 25))))}
    speed = measure_gguf_speed(paths["pruned"], paths["base"], prompt_len=64, new_tokens=8,
                               repeats=1, warmup=0)
    assert speed.params_pruned < speed.params_base
    assert speed.prefill_tokens_per_s_base > 0 and speed.decode_ms_per_token_pruned > 0
    assert speed.device.startswith("llama.cpp")
