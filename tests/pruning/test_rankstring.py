import numpy as np
import pytest

from pruning.ranking import prune_order
from pruning.rankstring import RankStringError, order_to_rank_string, rank_string_to_order
from pruning.stages import plan_stages


def test_rank_string_is_ranks_not_ids():
    # layer 2 is pruned first (rank 0), then layer 0 (rank 1), then layer 1 (rank 2)
    s = order_to_rank_string([2, 0, 1], 3)
    assert s == "1,2,0"
    assert s != ",".join(map(str, [2, 0, 1]))
    assert rank_string_to_order("1,2,0") == [2, 0, 1]
    # reading an id list as a rank string gives a different order
    assert rank_string_to_order("2,0,1") == [1, 2, 0]


def test_frozen_blocks_ranked_after_prunable_in_index_order():
    # L = 6, reference plan: frozen 0, 1, 5; prunable order [4, 2, 3]
    s = order_to_rank_string([4, 2, 3], 6)
    assert s == "3,4,1,2,0,5"
    assert rank_string_to_order(s, 6) == [4, 2, 3, 0, 1, 5]


@pytest.mark.parametrize("seed", range(5))
def test_round_trip(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    order = [int(x) for x in rng.permutation(n)]
    s = order_to_rank_string(order, n)
    assert rank_string_to_order(s, n) == order


def test_round_trip_through_a_plan():
    plan = plan_stages(8, policy="reference")
    scores = [0.0, 0.0, 5.0, 1.0, 4.0, 2.0, 3.0, 0.0]
    order = prune_order(scores, plan)
    assert order == [3, 5, 6, 4, 2]
    full = rank_string_to_order(order_to_rank_string(order, 8), 8)
    assert [b for b in full if b in plan.prunable] == order
    assert full[len(order) :] == [0, 1, 7]


def test_reader_tolerates_spaces_and_brackets():
    assert rank_string_to_order(" [1, 2 ,0] ") == [2, 0, 1]


@pytest.mark.parametrize(
    "text, num_layers, message",
    [
        ("", None, "empty"),
        ("[]", None, "empty"),
        ("1,,0", None, "item 1 is ''"),
        ("0,1.5,2", None, r"item 1 is '1.5', not an integer"),
        ("0,a,2", None, "not an integer"),
        ("0,1,1", None, r"not a permutation of 0..2: missing \[2\]"),
        ("1,2,3", None, r"missing \[0\].*out of range \[3\]"),
        ("0,-1", None, "not a permutation"),
        ("1,0,2", 4, "3 ranks but the model has 4 layers"),
    ],
)
def test_reader_rejects_malformed(text, num_layers, message):
    with pytest.raises(RankStringError, match=message):
        rank_string_to_order(text, num_layers)


def test_reader_rejects_non_str():
    with pytest.raises(RankStringError, match="must be a str"):
        rank_string_to_order([1, 0])


def test_writer_errors():
    with pytest.raises(RankStringError, match=r"outside 0..2"):
        order_to_rank_string([0, 3], 3)
    with pytest.raises(RankStringError, match="repeats"):
        order_to_rank_string([1, 1], 3)
    with pytest.raises(RankStringError, match="num_layers"):
        order_to_rank_string([0], 0)
    assert issubclass(RankStringError, ValueError)
