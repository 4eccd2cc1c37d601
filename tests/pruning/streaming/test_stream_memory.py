"""No streaming step holds more than two decoder layers' weights (storage weak references)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from pruning.streaming import (
    stream_export_blocks,
    stream_export_width,
    stream_neuron_scores,
    stream_quality,
    walk,
)
from tests.analysis.test_streaming import track_reads
from tests.tiny_models import tiny_config, tiny_ids

LAYERS = 6
PREFIX = "model.layers."


@pytest.fixture()
def source(tmp_path):
    config = tiny_config("llama")
    config.num_hidden_layers = LAYERS
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    layer = model.model.layers[0]
    return tmp_path / "src", {
        "layer": sum(p.numel() * 4 for p in layer.parameters()),
        "tensor": max(p.numel() * 4 for p in layer.parameters()),
        "keep": [torch.arange(0, 64, 2)] * LAYERS,
    }


@pytest.fixture()
def counted(monkeypatch):
    """Every decoder-layer tensor the streaming code reads is tracked until it is freed,
    wherever it is kept (read-ahead, module, export buffer); `peaks` holds the bytes alive
    right after each read."""
    alive, peaks = track_reads(monkeypatch, walk, PREFIX)
    yield peaks
    assert all(ref.expired() for ref, _ in alive)  # nothing outlives the run


def test_quality_holds_at_most_two_layers(source, counted):
    folder, size = source
    stream_quality(folder, tiny_ids(4, 16), {"a": ("attn", [2, 4]), "l": ("layer", [1]),
                                             "w": ("width", size["keep"])}, batch_size=2)
    assert len(counted) == 1 + LAYERS + 1  # the body, each layer once, the tail
    assert max(counted) == 2 * size["layer"]  # the read-ahead overlaps: the count sees two


@pytest.mark.parametrize("criterion", ["taylor-entropy", "magnitude"])
def test_taylor_holds_at_most_two_layers(source, counted, criterion):
    folder, size = source
    stream_neuron_scores(folder, tiny_ids(4, 16), criterion, batch_size=2)
    if criterion == "magnitude":  # each layer's MLP once
        assert len(counted) == LAYERS and max(counted) < 2 * size["layer"]
    else:  # the body, the layers forward, the tail, the layers backward
        assert len(counted) == 1 + LAYERS + 1 + LAYERS
        assert max(counted) == 2 * size["layer"]


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_block_export_holds_one_tensor(source, counted, tmp_path, granularity):
    folder, size = source
    stream_export_blocks(folder, tmp_path / "out", granularity, [1, 3], {}, tokenizer=False)
    assert max(counted) <= size["tensor"]


def test_width_export_holds_one_layer(source, counted, tmp_path):
    folder, size = source
    stream_export_width(folder, tmp_path / "out", size["keep"], {}, tokenizer=False)
    assert len(counted) > LAYERS and max(counted) <= size["layer"]
