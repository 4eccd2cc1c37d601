"""Streamed quality figures equal `evaluate_quality` / `quality_curves` on the loaded model."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
from transformers import AutoModelForCausalLM

from analysis.errors import EntroDropError
from pruning.apply import pruned
from pruning.evaluate import evaluate_quality, quality_curves
from pruning.streaming import stream_quality, stream_quality_curves
from pruning.width import width_pruned
from tests.analysis.test_streaming import mixed_gemma
from tests.pruning.streaming.stream_cases import (
    RTOL,
    load_in_memory,
    quality_gap,
    relative_gap,
    save_source,
    width_keep,
)
from tests.tiny_models import MODEL_TYPES, tiny_ids

BLOCK_VARIANTS = {
    "layer-1": ("layer", [1]),
    "layer-0-2": ("layer", [0, 2]),
    "attn-0-3": ("attn", [0, 3]),
    "attn-3": ("attn", [3]),
    "attn-2-3": ("attn", [2, 3]),
}


def _both(model, folder, ids, specs, **kw):
    """(streamed, in-memory) figures for the same specs."""
    factories = {}
    for name, spec in specs.items():
        factories[name] = _factory(model, spec)
    return (stream_quality(folder, ids, specs, **kw),
            evaluate_quality(model, ids, factories, batch_size=kw.get("batch_size", 4)))


def _factory(model, spec):
    parts = dict(spec) if isinstance(spec, dict) else {spec[0]: spec[1]}

    def enter():
        # Width first: its kept neurons are indexed by the original layers.
        stack = ExitStack()
        if "width" in parts:
            stack.enter_context(width_pruned(model, parts["width"]))
        for kind in ("layer", "attn"):
            if kind in parts:
                stack.enter_context(pruned(model, kind, parts[kind]))
        return stack

    return enter


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_variant_equals_in_memory(model_type, sharded, tmp_path):
    folder = save_source(model_type, tmp_path, sharded)
    model = load_in_memory(folder)
    specs = {**BLOCK_VARIANTS, "width": ("width", width_keep(model))}
    ids = tiny_ids(5, 20, seed=4)  # batches of 2: a short last batch
    streamed, in_memory = _both(model, folder, ids, specs, batch_size=2)
    assert quality_gap(streamed, in_memory) <= RTOL
    assert streamed["attn-3"].kl > 0 and streamed["width"].kl > 0  # the variants do differ


def test_combined_variant_equals_nested_pruning(tmp_path):
    folder = save_source("qwen3", tmp_path)
    model = load_in_memory(folder)
    keep = width_keep(model, 0.5)
    specs = {"layer+width": {"layer": [2], "width": keep},
             "attn+width": {"attn": [1, 3], "width": keep}}
    streamed, in_memory = _both(model, folder, tiny_ids(4, 16, seed=2), specs, batch_size=4)
    assert quality_gap(streamed, in_memory) <= RTOL


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_sliding_and_global_layers_keep_their_masks_when_layers_are_removed(model_type, tmp_path):
    model = mixed_gemma(model_type)  # sliding window 4 < T, both layer types
    model.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    specs = {"l0": ("layer", [0]), "l1-2": ("layer", [1, 2]), "a0": ("attn", [0])}
    streamed, in_memory = _both(model, tmp_path, tiny_ids(3, 24, seed=5), specs, batch_size=2)
    assert quality_gap(streamed, in_memory) <= RTOL


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_curves_equal_quality_curves(granularity, tmp_path):
    folder = save_source("llama", tmp_path)
    model = load_in_memory(folder)
    orders = {"knn": [3, 1, 2, 0], "cosine": [1, 3, 2, 0]}
    ids = tiny_ids(4, 16, seed=7)
    streamed = stream_quality_curves(folder, ids, granularity, orders, [1, 2, 3], batch_size=3)
    in_memory = quality_curves(model, ids, granularity, orders, [1, 2, 3], batch_size=3)
    assert [(r["criterion"], r["k"]) for r in streamed] == [(r["criterion"], r["k"]) for r in in_memory]
    for s, m in zip(streamed, in_memory, strict=True):
        for field in ("perplexity", "kl", "top1"):
            assert relative_gap(s[field], m[field]) <= RTOL, (s, m)


def test_variants_with_the_same_decisions_share_states(tmp_path):
    folder = save_source("llama", tmp_path)
    messages = []
    specs = {"a": ("attn", [3]), "b": ("attn", [2, 3]), "c": ("layer", [3]), "d": ("attn", [3])}
    result = stream_quality(folder, tiny_ids(2, 12), specs,
                            progress=lambda f, m: messages.append((f, m)))
    computed = [m for _, m in messages if m.startswith("layer ")]
    # Layers 0 and 1: every variant still equals the unpruned model. Layer 2: the full
    # layer (unpruned, a, c, d) and b's. Layer 3: the full layer on the unpruned state, no
    # attention on it (a and d, once) and no attention on b's state; c skips it.
    counts = [int(m.split(": ")[1].split()[0]) for m in computed]
    assert counts == [1, 1, 2, 3]
    assert result["a"] == result["d"]
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("variants, match", [
    ({"unpruned": ("attn", [1])}, "reserved"),
    ({"x": ("attn", [9])}, "out of range"),
    ({"x": ("heads", [1])}, "unknown pruning kind"),
    ({"x": [1, 2]}, "a variant is"),
    ({"x": {"layer": [1], "attn": [1]}}, "both 'layer' and 'attn'"),
    ({"x": ("width", [torch.arange(4)] * 2)}, "one index tensor per layer"),
    ({"x": ("layer", [0, 1, 2, 3])}, "cannot prune all"),
])
def test_bad_variants_are_user_errors(variants, match, tmp_path):
    folder = save_source("llama", tmp_path)
    with pytest.raises(EntroDropError, match=match):
        stream_quality(folder, tiny_ids(2, 8), variants)


def test_bad_ids_are_user_errors(tmp_path):
    folder = save_source("llama", tmp_path)
    with pytest.raises(EntroDropError, match="vocabulary"):
        stream_quality(folder, torch.full((2, 8), 10_000), {})
    with pytest.raises(EntroDropError, match="granularity"):
        stream_quality_curves(folder, tiny_ids(2, 8), "heads", {"a": [1]}, [1])
