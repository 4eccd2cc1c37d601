import math

import numpy as np
import pytest

from pruning.ranking import RankingError, prune_order, prune_set
from pruning.stages import plan_stages
from tests.profiles import make_profile

L = 6


def _profile():
    return make_profile(
        L,
        curve={"bucket": [9.0, 8.0, 7.0, 7.5, 8.0, 8.5, 9.0]},
        delta_h={"layer": {"bucket": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "knn": [6, 5, 4, 3, 2, 1]},
                 "attn": {"knn": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}},
        cosine={"layer": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]},
    )


def test_prune_order_ascending_over_prunable_only():
    plan = plan_stages(L, policy="manual", s_start=2)  # prunable 2, 3, 4
    # block 0 has the lowest score but is frozen; block 5 (last) is frozen too
    scores = [-10.0, 0.0, 0.5, 0.1, 0.3, -5.0]
    assert prune_order(scores, plan) == [3, 4, 2]


def test_prune_order_ties_broken_by_index():
    plan = plan_stages(L, policy="manual", s_start=0, allow_last=True)
    scores = [0.2, 0.1, 0.2, 0.1, 0.0, 0.2]
    assert prune_order(scores, plan) == [4, 1, 3, 0, 2, 5]


def test_prune_order_cosine_is_ascending_importance():
    plan = plan_stages(L, policy="reference")  # prunable 2, 3, 4
    cosine = _profile().scores("layer", "cosine")
    # lowest importance first: block 4 (0.5), then 3 (0.6), then 2 (0.7)
    assert prune_order(cosine, plan) == [4, 3, 2]


def test_prune_order_non_finite_last():
    plan = plan_stages(L, policy="manual", s_start=0, allow_last=True)
    scores = np.array([math.nan, 3.0, -math.inf, 1.0, math.inf, 2.0])
    assert prune_order(scores, plan) == [3, 5, 1, 0, 2, 4]


def test_prune_order_length_mismatch():
    plan = plan_stages(L, policy="reference")
    with pytest.raises(RankingError, match="one value per block.*got 5"):
        prune_order([0.0] * 5, plan)


def test_prune_set_first_k_and_bounds():
    order = [4, 1, 3]
    assert prune_set(order, 0) == []
    assert prune_set(order, 2) == [4, 1]
    assert prune_set(order, np.int64(3)) == [4, 1, 3]
    with pytest.raises(RankingError, match=r"k must be between 0 and 3.*got 4"):
        prune_set(order, 4)
    with pytest.raises(RankingError, match=r"k must be between 0 and 3.*got -1"):
        prune_set(order, -1)
    with pytest.raises(RankingError, match="k must be an integer"):
        prune_set(order, 1.0)
    with pytest.raises(RankingError, match="k must be an integer"):
        prune_set(order, True)
    with pytest.raises(RankingError, match=r"repeats block\(s\) \[1\]"):
        prune_set([1, 2, 1], 1)


def test_end_to_end_from_profile():
    p = _profile()
    plan = plan_stages(L, curve=p.curve("bucket"))  # j* = 2
    order = prune_order(p.scores("layer", "knn"), plan)
    assert order == [4, 3, 2]
    assert prune_set(order, 2) == [4, 3]
