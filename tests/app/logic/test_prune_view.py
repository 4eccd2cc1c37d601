"""app/logic/prune_view.py: a prune choice ranked from a cached profile, and its downloads."""

from __future__ import annotations

import csv
import io
import json

import pytest

from app.logic.prune_view import (
    block_rows,
    ranking_rows,
    rows_to_csv,
    taylor_block_rows,
    view_to_json,
)
from tests.app.sample import profile as _profile
from tests.app.sample import view as _view


def test_view_ranks_stage_two_by_score_and_compares_with_cosine():
    view = _view(k=2)
    assert view.plan.s_start == 2 and view.plan.prunable == (2, 3, 4)
    assert view.order == [3, 4, 2]  # knn dH 0.2, 0.3, 0.4
    assert view.baseline_order == [3, 2, 4]  # cosine 0.1, 0.2, 0.4
    assert view.blocks == [3, 4] and view.baseline_blocks == [3, 2]
    assert view.comparison.overlap == 1
    assert view.comparison.jaccard == pytest.approx(1 / 3)
    assert view.rank_string() == "3,4,2,0,1,5"


def test_view_rejects_k_beyond_the_prunable_blocks():
    with pytest.raises(ValueError, match="k must be between 0 and 3"):
        _view(k=4)


def test_manual_and_reference_policies():
    assert _view(k=0, policy="manual", s_start=4).plan.prunable == (4,)
    assert _view(k=0, policy="reference").plan.frozen == (0, 1, 5)
    assert _view(k=0, allow_last=True).plan.prunable == (2, 3, 4, 5)


def test_ranking_rows_mark_pruned_and_shared_blocks():
    rows = ranking_rows(_view(k=2))
    assert [(r["block"], r["baseline_block"]) for r in rows] == [(3, 3), (4, 2), (2, 4)]
    assert [r["pruned"] for r in rows] == [True, True, False]
    assert [r["in_both_sets"] for r in rows] == [True, False, False]
    assert rows[0]["same_block"] and not rows[1]["same_block"]


def test_csv_and_json_downloads():
    view = _view(k=2)
    table = list(csv.DictReader(io.StringIO(rows_to_csv(block_rows(view)))))
    assert [r["block"] for r in table] == [str(b) for b in range(6)]
    assert [r["stage"] for r in table] == ["stage 1", "stage 1", "prunable", "prunable",
                                           "prunable", "frozen"]
    assert table[3]["knn_pruned"] == "True" and table[2]["knn_pruned"] == "False"
    record = view_to_json(view, _profile())
    json.dumps(record)
    assert record["blocks"] == [3, 4]
    assert record["rank_string"] == "3,4,2,0,1,5"
    assert "RANK of layer i" in record["rank_string_format"]


def test_taylor_layer_sums_as_a_block_criterion():
    view = _view(k=2, granularity="layer")
    # Candidates are 2, 3, 4 (Stage 1 = 0, 1; last block frozen); 4 and 2 are least important.
    totals = {"taylor-entropy": [9.0, 9.0, 1.0, 5.0, 0.5, 0.1]}
    (row,) = taylor_block_rows(totals, view)
    assert row["criterion"] == "taylor-entropy (layer sum)"
    assert row["pruned"] == [2, 4]
    assert row[f"overlap with {view.criterion}"] == len(set(row["pruned"]) & set(view.blocks))
    assert row[f"Jaccard with {view.baseline}"] == pytest.approx(
        len({2, 4} & set(view.baseline_blocks)) / len({2, 4} | set(view.baseline_blocks)))
