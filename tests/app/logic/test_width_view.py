"""app/logic/width_view.py: summaries of neuron scores."""

from __future__ import annotations

from app.logic.width_view import kept_overlap


def test_kept_overlap():
    assert kept_overlap([[0, 1, 2]], [[1, 2, 3]]) == [0.5]
