"""Streamed neuron scores equal `analysis.taylor.neuron_scores` on the loaded model."""

from __future__ import annotations

import pytest
import torch

from analysis.errors import EntroDropError
from analysis.taylor import neuron_scores
from pruning.streaming import stream_neuron_scores
from tests.pruning.streaming.stream_cases import RTOL, load_in_memory, save_source
from tests.tiny_models import MODEL_TYPES, tiny_ids


def score_gap(streamed, in_memory) -> float:
    """The largest relative gap over every neuron of every layer."""
    assert streamed.criterion == in_memory.criterion
    assert [s.shape for s in streamed.scores] == [s.shape for s in in_memory.scores]
    return max(float(((s - m).abs() / m.abs().clamp_min(1e-30)).max())
               for s, m in zip(streamed.scores, in_memory.scores, strict=True))


@pytest.mark.parametrize("criterion", ["taylor-entropy", "taylor-ce", "magnitude"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_scores_equal_in_memory(model_type, criterion, tmp_path):
    folder = save_source(model_type, tmp_path, sharded=model_type in ("gemma2", "opt"))
    ids = tiny_ids(5, 20, seed=4)  # batches of 2: a short last batch
    streamed = stream_neuron_scores(folder, ids, criterion, batch_size=2)
    in_memory = neuron_scores(load_in_memory(folder), ids, criterion, batch_size=2)
    assert score_gap(streamed, in_memory) <= RTOL
    assert all(s.dtype == torch.float32 and (s > 0).any() for s in streamed.scores)


def test_scores_do_not_depend_on_batch_size(tmp_path):
    folder = save_source("phi3", tmp_path)
    ids = tiny_ids(4, 16, seed=3)
    one = stream_neuron_scores(folder, ids, "taylor-entropy", batch_size=1)
    all_four = stream_neuron_scores(folder, ids, "taylor-entropy", batch_size=4)
    for a, b in zip(one.scores, all_four.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)


def test_progress_covers_both_passes(tmp_path):
    folder = save_source("gpt2", tmp_path)
    seen = []
    stream_neuron_scores(folder, tiny_ids(2, 12), "taylor-ce", progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(m.startswith("forward") for _, m in seen) and any(m.startswith("backward") for _, m in seen)


@pytest.mark.parametrize("kwargs, match", [
    ({"criterion": "fisher"}, "criterion must be one of"),
    ({"criterion": "taylor-ce", "input_ids": torch.zeros(2, 1, dtype=torch.long)}, "T >= 2"),
    ({"criterion": "taylor-entropy", "input_ids": torch.zeros(4)}, r"\[N, T\]"),
    ({"criterion": "taylor-entropy", "batch_size": 0}, "batch_size"),
])
def test_bad_input_is_a_user_error(kwargs, match, tmp_path):
    folder = save_source("llama", tmp_path)
    kwargs = {"input_ids": tiny_ids(2, 8), **kwargs}
    with pytest.raises(EntroDropError, match=match):
        stream_neuron_scores(folder, kwargs.pop("input_ids"), kwargs.pop("criterion"), **kwargs)
