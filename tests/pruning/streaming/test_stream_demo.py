"""The demo model streamed straight from its GGUF file: the same curves and export as the
in-memory path on the converted model (slow: loads the real demo model)."""

from __future__ import annotations

import pytest
import torch

from pruning.export import export_pruned
from pruning.streaming import stream_export_blocks, stream_quality_curves
from tests.pruning.streaming.stream_cases import RTOL, relative_gap
from tests.pruning.streaming.test_stream_export import assert_same_export

DEMO = "demo:smollm2-135m"


@pytest.fixture(scope="module")
def demo(demo_cache_dir):
    from analysis.calibration import load_calibration
    from analysis.models import load_model
    from analysis.settings import CalibrationSettings, ModelSettings

    mp = pytest.MonkeyPatch()
    mp.setenv("ENTRODROP_CACHE_DIR", demo_cache_dir)
    loaded = load_model(ModelSettings(DEMO, device="cpu", dtype="float32"))
    cal = load_calibration(CalibrationSettings("builtin:licenses", samples=4, seqlen=64),
                           loaded.tokenizer, model=loaded.model, on_gpu=False)
    yield loaded, cal.input_ids
    mp.undo()


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_demo_quality_curves_streamed_from_gguf_equal_in_memory(demo, granularity):
    from pruning.evaluate import quality_curves

    loaded, ids = demo
    orders = {"entropy": [20, 25, 12, 27], "cosine": [27, 20, 26, 25]}
    in_memory = quality_curves(loaded.model, ids, granularity, orders, [1, 2, 4], batch_size=2)
    streamed = stream_quality_curves(DEMO, ids, granularity, orders, [1, 2, 4], batch_size=2)
    assert [(r["criterion"], r["k"]) for r in streamed] == [(r["criterion"], r["k"]) for r in in_memory]
    for s, m in zip(streamed, in_memory, strict=True):
        for field in ("perplexity", "kl", "top1"):
            assert relative_gap(s[field], m[field]) <= RTOL, (field, s, m)


@pytest.mark.slow
def test_demo_layer_export_from_gguf_equals_in_memory_export(demo, tmp_path):
    loaded, _ = demo
    manifest = {"source_model": DEMO}
    mem = export_pruned(loaded.model, loaded.tokenizer, tmp_path / "mem", granularity="layer",
                        blocks=[20, 25], manifest=manifest)
    streamed = stream_export_blocks(DEMO, tmp_path / "stream", "layer", [20, 25], manifest,
                                    max_shard_bytes=200 * 2**20)
    assert_same_export(streamed, mem)
    assert loaded.model.dtype == torch.float32
