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


def test_criteria_lists_expand_random_and_all_and_refuse_unknown_names():
    from pruning.ranking import CRITERIA, expand_criteria
    assert expand_criteria("knn, random,cosine,knn") == [
        "knn", "random:0", "random:1", "random:2", "cosine"]
    assert expand_criteria(["random:42", "reverse"]) == ["random:42", "reverse"]
    assert expand_criteria("all") == list(CRITERIA)
    with pytest.raises(RankingError, match="criterion must be one of .*ppl_greedy.*got 'kn'"):
        expand_criteria("kn")
    with pytest.raises(RankingError, match="random:<seed>.*got 'random:x'"):
        expand_criteria("random:x")
    with pytest.raises(RankingError, match="empty"):
        expand_criteria(" , ")


def test_reverse_scores_put_the_last_prunable_block_first():
    from pruning.ranking import reverse_scores
    plan = plan_stages(8, policy="manual", s_start=2)  # prunable 2..6
    assert prune_order(reverse_scores(8), plan) == [6, 5, 4, 3, 2]


def test_random_orders_depend_on_the_seed_only_and_cover_the_prunable_blocks():
    from pruning.ranking import random_scores
    plan = plan_stages(12, policy="manual", s_start=1)
    orders = {s: prune_order(random_scores(12, s), plan) for s in (0, 1, 2)}
    assert all(sorted(o) == list(plan.prunable) for o in orders.values())
    assert orders[0] == prune_order(random_scores(12, 0), plan)
    assert len({tuple(o) for o in orders.values()}) == 3
    # numpy's PCG64 stream is fixed across platforms: the same seed, the same permutation.
    assert random_scores(5, 0) == [float(v) for v in np.random.default_rng(0).permutation(5)]


def test_best_span_takes_the_smallest_distance_among_spans_inside_the_prunable_blocks():
    from pruning.ranking import best_span
    plan = plan_stages(6, policy="manual", s_start=1)  # prunable 1..4
    # n = 2: spans start at l = 0..4; l = 0 and l = 4 leave the prunable blocks.
    distances = [0.0, 0.5, 0.3, float("nan"), 0.1]
    assert best_span(distances, plan, 2) == (2, 3)
    assert best_span([0.2, 0.2, 0.2, 0.9, 0.9], plan, 2) == (1, 2)  # tie: smallest l
    assert best_span([0.1, 0.2], plan, 5) is None
    assert best_span([], plan, 0) == ()
