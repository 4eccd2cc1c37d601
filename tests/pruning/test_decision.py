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


def test_decide_refuses_pruning_every_block_even_when_all_are_prunable():
    plan = plan_stages(L, policy="manual", s_start=0, allow_last=True)
    assert len(plan.prunable) == L and max_k(plan) == L - 1
    d = decide(_profile(), "attn", "cosine", L - 1, plan)
    assert len(d.blocks) == L - 1
    with pytest.raises(RankingError, match="at least one block always stays"):
        decide(_profile(), "attn", "cosine", L, plan)
    with pytest.raises(RankingError, match="between 0 and 5"):
        d.with_k(L)
