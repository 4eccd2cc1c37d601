import numpy as np
import pytest
from scipy.stats import kendalltau as scipy_kendalltau

from pruning.compare import Comparison, agreement_matrix, compare_orders, jaccard, kendall_tau
from pruning.ranking import RankingError


def test_compare_hand_computed():
    a = [3, 5, 2, 7, 4]
    b = [5, 4, 3, 2, 7]
    c = compare_orders(a, b, 2)
    assert isinstance(c, Comparison)
    assert c.k == 2
    assert c.overlap == 1
    assert c.jaccard == pytest.approx(1 / 3)
    assert c.only_a == (3,) and c.only_b == (4,) and c.common == (5,)
    # 10 pairs over {2,3,4,5,7}: 6 concordant, 4 discordant -> (6 - 4) / 10
    assert c.kendall_tau == pytest.approx(0.2)
    full = compare_orders(a, b, 5)
    assert full.overlap == 5 and full.jaccard == 1.0 and full.only_a == () and full.only_b == ()
    assert full.common == (2, 3, 4, 5, 7)


def test_compare_sets_sorted_by_index_not_order():
    c = compare_orders([9, 1, 4, 2], [2, 3, 4, 1], 3)
    # A_3 = {9, 1, 4} in pruning order, reported ascending
    assert c.only_a == (1, 9) and c.only_b == (2, 3) and c.common == (4,)


def test_compare_different_candidates_tau_over_common():
    # common = {1, 2, 3}; restricted orders are 1,2,3 and 3,2,1 -> tau = -1
    c = compare_orders([1, 2, 3, 9], [3, 2, 8, 1], 2)
    assert c.kendall_tau == pytest.approx(-1.0)
    assert c.overlap == 1 and c.jaccard == pytest.approx(1 / 3)
    assert c.only_a == (1,) and c.only_b == (3,)


def test_compare_edge_cases():
    empty = compare_orders([4, 5, 6], [6, 5, 4], 0)
    assert empty.overlap == 0 and empty.jaccard == 1.0 and empty.common == ()
    assert empty.kendall_tau == pytest.approx(-1.0)
    same = compare_orders([4, 5, 6], [4, 5, 6], 1)
    assert same.kendall_tau == 1.0 and same.jaccard == 1.0
    assert compare_orders([1, 2], [2, 3], 1).kendall_tau is None  # one common block
    assert kendall_tau([], []) is None


def test_compare_k_bounds():
    with pytest.raises(RankingError, match=r"k must be between 0 and 2.*shorter order.*got 3"):
        compare_orders([1, 2, 3], [1, 2], 3)
    with pytest.raises(RankingError, match="k must be an integer"):
        compare_orders([1, 2, 3], [1, 2, 3], 1.5)
    with pytest.raises(RankingError, match=r"order_b repeats"):
        compare_orders([1, 2, 3], [1, 1, 3], 1)


@pytest.mark.parametrize("seed", range(8))
def test_kendall_tau_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    a = [int(x) for x in rng.permutation(n)]
    b = [int(x) for x in rng.permutation(n)]
    if seed % 2:  # partial overlap: drop some blocks from each and add foreign ones
        a = a[: n - 1] + [100]
        b = [101] + b[1:]
    common = sorted(set(a) & set(b))
    pos_a = [a.index(x) for x in common]
    pos_b = [b.index(x) for x in common]
    expected = scipy_kendalltau(pos_a, pos_b).statistic
    got = kendall_tau(a, b)
    if len(common) < 2:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


def test_jaccard():
    assert jaccard([], []) == 1.0
    assert jaccard([1], []) == 0.0
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)


def test_agreement_matrix_three_sets():
    got = agreement_matrix({"c4": [2, 3, 4], "wiki": [3, 4, 5], "law": [6, 3]})
    assert got["names"] == ["c4", "wiki", "law"]
    m = np.array(got["jaccard"])
    assert m == pytest.approx(np.array([[1.0, 0.5, 0.25], [0.5, 1.0, 0.25], [0.25, 0.25, 1.0]]))
    assert got["counts"] == {2: 1, 3: 3, 4: 2, 5: 1, 6: 1}
    assert got["picked_by_all"] == [3]
    assert got["picked_by_majority"] == [3, 4]


def test_agreement_matrix_majority_is_strict():
    got = agreement_matrix({"a": [1, 2], "b": [2, 3]})
    assert got["picked_by_majority"] == [2] and got["picked_by_all"] == [2]
    four = agreement_matrix({"a": [1], "b": [1], "c": [2], "d": [2, 1]})
    assert four["picked_by_majority"] == [1]  # 3 of 4; block 2 has only 2 of 4
    single = agreement_matrix({"only": [5, 4]})
    assert single["jaccard"] == [[1.0]] and single["picked_by_all"] == [4, 5]
    empty = agreement_matrix({"a": [], "b": []})
    assert empty["jaccard"] == [[1.0, 1.0], [1.0, 1.0]] and empty["picked_by_all"] == []


def test_agreement_matrix_errors():
    with pytest.raises(RankingError, match="at least one"):
        agreement_matrix({})
    with pytest.raises(RankingError, match="prune set 'x' repeats"):
        agreement_matrix({"x": [1, 1]})
    with pytest.raises(RankingError, match="negative"):
        agreement_matrix({"x": [-1]})


def test_criteria_table_compares_every_pair_of_criteria_at_k():
    from pruning.compare import criteria_table
    from pruning.decision import decide
    from pruning.stages import plan_stages
    from tests.profiles import make_profile

    plan = plan_stages(6, policy="manual", s_start=1)  # prunable 1..4
    p = make_profile(6, cosine={"layer": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]})
    ds = {c: decide(p, "layer", c, 0, plan) for c in ("cosine", "reverse", "angular_span")}
    t = criteria_table(ds, 2)
    assert t["prune_sets"] == {"cosine": [1, 2], "reverse": [3, 4], "angular_span": [1, 2]}
    assert t["overlap"] == [[2, 0, 2], [0, 2, 0], [2, 0, 2]]
    assert t["kendall_tau"][0][1] == -1.0 and t["kendall_tau"][0][0] == 1.0
    assert t["jaccard"][1][2] == 0.0
    with pytest.raises(RankingError, match="between 0 and 4"):
        criteria_table(ds, 5)
