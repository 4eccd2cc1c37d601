"""The chart controls of the dashboard: the orders chart on the Prune list page and the
Budget page's K values, axis scale and clipping, run in AppTest on the tiny model."""

from __future__ import annotations

from app.logic.runs import budget_ks
from entrodrop import service

NUM_LAYERS = 6


def _paths(spec: dict) -> dict[int, list[tuple[int, int]]]:
    """block -> [(column, rank)...] from the orders chart's gap-separated traces."""
    out = {}
    for trace in spec["data"]:
        run = []
        for x, y, t in zip(trace["x"], trace["y"], trace["text"], strict=True):
            if x is None:
                out[int(run[0][2])] = [(c, r) for c, r, _ in run]
                run = []
            else:
                run.append((x, y, t))
    return out


def test_prune_list_draws_the_orders_side_by_side_and_takes_more_criteria(ui):
    at = ui.analysed(seed=41)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/prune_list.py").run()
    ui.assert_clean(at)
    view = at.session_state["_view"]
    (orders,) = ui.charts(at)
    assert orders["layout"]["xaxis"]["ticktext"] == ["knn", "cosine"]
    # One line per ranked block, through its rank in each order.
    paths = _paths(orders)
    assert set(paths) == set(view.order)
    first = paths[view.order[0]]
    assert first == [(0, 0), (1, view.baseline_order.index(view.order[0]))]

    at.multiselect(key="order_criteria").set_value(["knn", "cosine", "bucket"]).run()
    ui.assert_clean(at)
    (orders,) = ui.charts(at)
    assert orders["layout"]["xaxis"]["ticktext"] == ["knn", "cosine", "bucket"]
    profile = at.session_state["analysis"].runs[0]
    bucket = service.decision(profile, view.granularity, "bucket", 2, view.plan).order
    paths = _paths(orders)
    for rank, block in enumerate(bucket):
        assert [c for c, _ in paths[block]] == [0, 1, 2]
        assert paths[block][2][1] == rank


def test_budget_uses_the_chosen_k_values_scale_and_clipping(ui):
    at = ui.analysed(seed=42)
    at.switch_page("views/budget.py").run()
    ui.assert_clean(at)
    limit = at.session_state["_view"].max_k
    assert at.multiselect(key="budget_ks").value == budget_ks(limit)
    at.multiselect(key="budget_ks").set_value([0, 2]).run()
    at.number_input(key="budget_held_out").set_value(2).run()
    at.button(key="run_budget").click().run()
    ui.assert_clean(at)
    rows = at.session_state["budget_result"]["rows"]
    assert sorted({r["k"] for r in rows}) == [0, 2]
    (quality,) = ui.charts(at)
    assert quality["layout"]["yaxis"]["type"] == "log"
    k = at.session_state["_view"].k
    assert any(a.get("text") == f"current K = {k}" for a in quality["layout"]["annotations"])

    at.radio(key="budget_scale").set_value("linear").run()
    at.checkbox(key="budget_clip").uncheck().run()
    ui.assert_clean(at)
    (quality,) = ui.charts(at)
    assert quality["layout"]["yaxis"].get("type") in (None, "linear")
    assert at.session_state["budget_result"]["rows"] == rows  # same curves, not recomputed


def test_budget_k_values_drop_those_a_new_s_start_makes_impossible(ui):
    at = ui.analysed(seed=43)
    at.switch_page("views/budget.py").run()
    at.multiselect(key="budget_ks").set_value([0, 1, 4]).run()
    at.radio(key="stage_policy").set_value("manual").run()
    at.session_state["s_start"] = 4  # one prunable block left: K is 0 or 1
    at.run()
    ui.assert_clean(at)
    assert at.session_state["_view"].max_k == 1
    assert at.multiselect(key="budget_ks").value == [0, 1]
    assert at.multiselect(key="budget_ks").options == ["0", "1"]
