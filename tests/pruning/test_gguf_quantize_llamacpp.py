"""Our q8_0 GGUF tensors are the bytes llama.cpp's own quantizer makes from our f32 file.

So the top-1 loss of a q8_0 export against f32 in llama.cpp (Gemma 3 270M: 0.875 top-1
agreement unpruned, about 0.7 attn-pruned; the demo's original Q4_K_M file itself agrees
0.867 with the float model) is llama.cpp's 8-bit path on that model, not our writer.
"""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from analysis.models import demo_gguf_path, load_model
from analysis.settings import ModelSettings
from pruning.export import export_pruned
from pruning.gguf_export import GGUF_FILE, export_as_gguf
from pruning.llamacpp import llama_cpp

pytestmark = pytest.mark.slow

LLAMA_FTYPE_MOSTLY_Q8_0 = 7  # llama.h's enum llama_ftype


def _tensors(path) -> dict[str, tuple[str, bytes]]:
    from gguf import GGUFReader

    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes())
            for t in GGUFReader(path).tensors}


@pytest.mark.parametrize("granularity, blocks", [("layer", []), ("attn", [5, 6, 7, 14])],
                         ids=["unpruned", "attn-k4"])
def test_q8_0_export_equals_llama_cpp_quantizing_the_f32_export(granularity, blocks, tmp_path):
    try:
        _check_q8_0_against_llama_cpp(granularity, blocks, tmp_path)
    finally:
        # About 1.7 GB of exports and GGUF files per case: not left for pytest's retention.
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_q8_0_against_llama_cpp(granularity, blocks, tmp_path):
    name = "gemma3-270m"
    loaded = load_model(ModelSettings(f"demo:{name}", device="cpu", dtype="float32"))
    paths = {t: export_as_gguf(lambda f: export_pruned(
        loaded.model, loaded.tokenizer, f, granularity=granularity, blocks=blocks, manifest={}),
        tmp_path / t, gguf_type=t, tokenizer_gguf=demo_gguf_path(name)) / GGUF_FILE
        for t in ("f32", "q8_0")}
    theirs = tmp_path / "llama-cpp-q8_0.gguf"
    lc = llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_Q8_0
    assert lc.llama_model_quantize(str(paths["f32"]).encode(), str(theirs).encode(),
                                   ctypes.byref(params)) == 0
    ours, ref = _tensors(paths["q8_0"]), _tensors(theirs)
    assert set(ours) == set(ref)
    assert "Q8_0" in {kind for kind, _ in ours.values()}
    differing = [n for n in ours if ours[n] != ref[n]]
    assert not differing, f"tensors that differ from llama.cpp's q8_0: {differing[:5]}"
