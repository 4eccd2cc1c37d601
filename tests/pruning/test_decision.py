import math

import pytest

from pruning.decision import decide
from pruning.ranking import RankingError
from pruning.rankstring import rank_string_to_order
from pruning.stages import max_k, plan_stages
from tests.profiles import make_profile

L = 6


def _profile():
    return make_profile(
        L, curve={"bucket": [9.0, 8.0, 7.0, 7.5, 8.0, 8.5, 9.0]},
        delta_h={"attn": {"knn": [0.5, None, 0.3, 0.1, 0.2, 0.0]}},
        cosine={"attn": [0.9, 0.8, 0.1, 0.6, 0.5, 0.4]})


def test_decide_orders_the_prunable_blocks_and_prunes_the_first_k():
    plan = plan_stages(L, policy="manual", s_start=1)  # prunable 1..4, null block 1 last
    d = decide(_profile(), "attn", "knn", 2, plan)
    assert d.order == (3, 4, 2, 1) and d.blocks == (3, 4)
    assert d.s_start == 1 and d.policy == "manual" and d.k == 2
    assert math.isnan(d.scores[1]) and d.scores[3] == 0.1


def test_decision_rank_string_round_trips_to_its_order():
    plan = plan_stages(L, policy="manual", s_start=1)
    d = decide(_profile(), "attn", "cosine", 1, plan)
    assert d.order == (2, 4, 3, 1) and d.blocks == (2,)
    assert rank_string_to_order(d.rank_string())[:len(d.order)] == list(d.order)


def test_with_k_keeps_the_order_and_checks_the_budget():
    plan = plan_stages(L, policy="manual", s_start=1)
    d = decide(_profile(), "attn", "knn", 0, plan)
    assert d.blocks == () and d.with_k(3).blocks == (3, 4, 2) and d.with_k(3).order == d.order
    with pytest.raises(RankingError, match="between 0 and 4"):
        d.with_k(5)


def test_decision_json_has_the_cli_keys():
    plan = plan_stages(L, policy="auto", curve=_profile().curve("bucket"))
    d = decide(_profile(), "attn", "knn", 1, plan)
    assert d.to_json() == {"granularity": "attn", "criterion": "knn", "k": 1,
                           "order": [3, 4, 2], "blocks": [3], "s_start": 2, "policy": "auto"}


def _span_profile():
    # L = 6; spans[n-1][l] = d(Z_l, Z_{l+n}). Single blocks: 2 is the closest; pairs: (3, 4);
    # triples: (1, 2, 3). The best sets are not nested.
    spans = [[0.9, 0.5, 0.1, 0.4, 0.3, 0.8],
             [0.9, 0.7, 0.6, 0.2, 0.9],
             [0.9, 0.3, 0.5, 0.8],
             [0.9, 0.9, 0.9],
             [0.9, 0.9],
             [0.9]]
    return make_profile(L, angular={"layer": spans[0], "attn": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]},
                        spans=spans)


def test_angular_span_prunes_the_best_span_of_k_layers_and_orders_the_rest_by_angular():
    plan = plan_stages(L, policy="manual", s_start=1)  # prunable 1..4
    p = _span_profile()
    d = decide(p, "layer", "angular_span", 2, plan)
    assert d.blocks == (3, 4) and d.order == (3, 4, 2, 1)  # then angular: 2 (0.1), 1 (0.5)
    assert d.details["span_start"] == 3 and d.details["span_distance"] == 0.2
    assert d.prune_sets() == {0: [], 1: [2], 2: [3, 4], 3: [1, 2, 3], 4: [1, 2, 3, 4]}
    assert d.with_k(3).blocks == (1, 2, 3) and d.with_k(3).order == (1, 2, 3, 4)
    assert decide(p, "layer", "angular", 2, plan).blocks == (2, 4)  # per block: 0.1, 0.3


def test_angular_span_at_attn_is_the_one_block_angular_order_and_says_why():
    plan = plan_stages(L, policy="manual", s_start=1)
    span = decide(_span_profile(), "attn", "angular_span", 2, plan)
    angular = decide(_span_profile(), "attn", "angular", 2, plan)
    assert span.order == angular.order == (4, 3, 2, 1) and span.blocks == (4, 3)
    assert "MLPs between them" in span.details["note"] and span.sets is None
    assert span.with_k(3).blocks == (4, 3, 2) and span.with_k(1).details == span.details


def test_angular_span_stops_at_the_longest_span_the_profile_holds():
    spans = [[0.1 * (start + 1) for start in range(L - n + 1)] for n in range(1, 3)]  # n = 1, 2 only
    p = make_profile(L, spans=spans)
    plan = plan_stages(L, policy="manual", s_start=1)
    d = decide(p, "layer", "angular_span", 2, plan)
    assert d.max_k == 2 and d.blocks == (1, 2)
    with pytest.raises(RankingError, match="angular_span decides K up to 2.*spans of at most 2"):
        decide(p, "layer", "angular_span", 3, plan)


def test_reverse_and_random_decisions_record_what_made_them():
    plan = plan_stages(L, policy="manual", s_start=1)
    assert decide(_profile(), "layer", "reverse", 2, plan).blocks == (4, 3)
    r = decide(_profile(), "attn", "random:7", 2, plan)
    assert r.details["seed"] == 7 and r.to_json()["criterion_details"]["seed"] == 7
    assert sorted(r.order) == [1, 2, 3, 4]
    assert r.order == decide(_profile(), "layer", "random:7", 0, plan).order  # seed only


def test_ppl_greedy_decides_from_its_search_and_only_for_the_plan_it_ran_on():
    from pruning.greedy import GreedyResult
    plan = plan_stages(L, policy="manual", s_start=1)
    search = GreedyResult("layer", (1, 2, 3, 4), (3, 1), (12.0, 15.0), 10.0, (4, 16), 7, 0.1)
    d = decide(_profile(), "layer", "ppl_greedy", 2, plan, greedy=search)
    assert d.blocks == (3, 1) and d.order[:2] == (3, 1) and d.max_k == 2
    assert d.details["search"]["perplexity"] == [12.0, 15.0]
    with pytest.raises(RankingError, match="needs the model"):
        decide(_profile(), "layer", "ppl_greedy", 1, plan)
    with pytest.raises(RankingError, match="between 0 and 2"):
        decide(_profile(), "layer", "ppl_greedy", 3, plan, greedy=search)
    with pytest.raises(RankingError, match="ran on layer blocks, not attn"):
        decide(_profile(), "attn", "ppl_greedy", 1, plan, greedy=search)
    with pytest.raises(RankingError, match="ran over blocks"):
        decide(_profile(), "layer", "ppl_greedy", 1, plan_stages(L, policy="manual", s_start=2),
               greedy=search)


def test_decide_refuses_pruning_every_block_even_when_all_are_prunable():
    plan = plan_stages(L, policy="manual", s_start=0, allow_last=True)
    assert len(plan.prunable) == L and max_k(plan) == L - 1
    d = decide(_profile(), "attn", "cosine", L - 1, plan)
    assert len(d.blocks) == L - 1
    with pytest.raises(RankingError, match="at least one block always stays"):
        decide(_profile(), "attn", "cosine", L, plan)
    with pytest.raises(RankingError, match="between 0 and 5"):
        d.with_k(L)
