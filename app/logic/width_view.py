"""Summaries of MLP-neuron importance scores for the Width pruning page."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def score_percentiles(scores: Sequence[torch.Tensor], qs: Sequence[float]) -> list[list[float]]:
    """Per layer, the given percentiles (0..100) of its neuron scores: layers x len(qs)."""
    q = torch.tensor([float(x) / 100.0 for x in qs], dtype=torch.float64)
    return [torch.quantile(s.double(), q).tolist() for s in scores]


def kept_overlap(keep_a: Sequence, keep_b: Sequence) -> list[float]:
    """Per layer, the Jaccard index of two kept-neuron sets."""
    out = []
    for a, b in zip(keep_a, keep_b, strict=True):
        sa, sb = set(int(i) for i in a), set(int(i) for i in b)
        union = sa | sb
        out.append(1.0 if not union else len(sa & sb) / len(union))
    return out
