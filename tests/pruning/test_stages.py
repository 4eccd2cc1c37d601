import math

import numpy as np
import pytest

from pruning.stages import StageError, StagePlan, auto_s_start, max_k, plan_stages


def test_auto_s_start_two_stage_curve():
    # falls from j=0 to j=3, then rises: Stage 1 = layers 0..2, layer 3 first prunable
    curve = [10.0, 8.0, 6.5, 6.0, 6.2, 7.0, 8.0, 9.0, 10.0]
    assert auto_s_start(curve) == 3


def test_auto_s_start_ties_pick_smallest_j():
    assert auto_s_start([5.0, 3.0, 4.0, 3.0, 6.0, 7.0, 8.0]) == 1


def test_auto_s_start_ignores_second_half():
    # L = 8, searched j = 0..4; the global minimum at j = 5 must be ignored
    curve = [10.0, 9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 4.0]
    assert auto_s_start(curve) == 4
    # floor(L/2) is included: L = 9 searches j = 0..4, j = 5 excluded
    curve9 = [10.0, 9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert auto_s_start(curve9) == 4


def test_auto_s_start_minimum_at_zero_and_numpy_input():
    assert auto_s_start(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == 0


def test_auto_s_start_skips_non_finite():
    assert auto_s_start([math.nan, 5.0, -math.inf, 4.0, 9.0, 9.0, 9.0]) == 3
    # L = 4 searches j = 0..2; only j = 2 is finite there
    assert auto_s_start([math.nan, math.inf, 1.0, 0.5, 0.5]) == 2


def test_auto_s_start_errors():
    with pytest.raises(StageError, match="at least 2 points"):
        auto_s_start([1.0])
    with pytest.raises(StageError, match="sequence of numbers"):
        auto_s_start(["a", "b"])


def test_auto_s_start_all_non_finite_raises():
    with pytest.raises(StageError, match="no finite value in j=0..2"):
        auto_s_start([math.nan, math.inf, math.nan, 1.0, 1.0])


def test_plan_auto_freezes_stage1_and_last():
    curve = [10.0, 8.0, 6.0, 7.0, 8.0, 9.0, 10.0]  # L = 6, j* = 2
    plan = plan_stages(6, curve=curve)
    assert isinstance(plan, StagePlan)
    assert plan.policy == "auto"
    assert plan.s_start == 2
    assert plan.frozen == (0, 1, 5)
    assert plan.prunable == (2, 3, 4)
    assert max_k(plan) == 3


def test_plan_allow_last():
    curve = [10.0, 8.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    plan = plan_stages(6, curve=curve, allow_last=True)
    assert plan.allow_last is True
    assert plan.frozen == (0, 1)
    assert plan.prunable == (2, 3, 4, 5)


def test_plan_reference_freezes_0_1_and_last_always():
    plan = plan_stages(8, policy="reference")
    assert plan.s_start == 2
    assert plan.frozen == (0, 1, 7)
    assert plan.prunable == (2, 3, 4, 5, 6)
    # allow_last is ignored under the reference policy, and the plan says so
    plan2 = plan_stages(8, policy="reference", allow_last=True)
    assert plan2.frozen == (0, 1, 7)
    assert plan2.allow_last is False
    # a curve is accepted but does not move the boundary
    plan3 = plan_stages(4, policy="reference", curve=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert plan3.prunable == (2,)


def test_plan_reference_tiny_models():
    assert plan_stages(2, policy="reference").prunable == ()
    one = plan_stages(1, policy="reference")
    assert one.frozen == (0,) and one.s_start == 1 and max_k(one) == 0


def test_plan_manual_override():
    plan = plan_stages(6, policy="manual", s_start=4)
    assert plan.frozen == (0, 1, 2, 3, 5)
    assert plan.prunable == (4,)
    plan0 = plan_stages(6, policy="manual", s_start=np.int64(0), allow_last=True)
    assert plan0.prunable == (0, 1, 2, 3, 4, 5) and plan0.frozen == ()
    assert plan_stages(6, policy="manual", s_start=5).prunable == ()


@pytest.mark.parametrize("bad", [-1, 6, 100])
def test_plan_manual_out_of_range(bad):
    with pytest.raises(StageError, match=r"s_start must be between 0 and 5"):
        plan_stages(6, policy="manual", s_start=bad)


def test_plan_errors():
    with pytest.raises(StageError, match="needs s_start"):
        plan_stages(6, policy="manual")
    with pytest.raises(StageError, match="s_start must be an integer"):
        plan_stages(6, policy="manual", s_start=2.0)
    with pytest.raises(StageError, match="needs the entropy curve"):
        plan_stages(6, policy="auto")
    with pytest.raises(StageError, match="7 points"):
        plan_stages(6, curve=[1.0, 2.0, 3.0])
    with pytest.raises(StageError, match="only used with policy='manual'"):
        plan_stages(6, policy="auto", curve=[1.0] * 7, s_start=2)
    with pytest.raises(StageError, match="stage policy must be one of"):
        plan_stages(6, policy="fancy")
    with pytest.raises(StageError, match="num_layers"):
        plan_stages(0, policy="reference")
    # the error is a ValueError, so generic handlers catch it
    assert issubclass(StageError, ValueError)


def test_max_k_always_leaves_one_block():
    everything = plan_stages(6, policy="manual", s_start=0, allow_last=True)
    assert everything.prunable == (0, 1, 2, 3, 4, 5)
    assert max_k(everything) == 5
    assert max_k(plan_stages(6, policy="manual", s_start=1, allow_last=True)) == 5
    assert max_k(plan_stages(6, policy="manual", s_start=0)) == 5
    assert max_k(plan_stages(6, policy="manual", s_start=2)) == 3
