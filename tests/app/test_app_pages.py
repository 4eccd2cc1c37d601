"""Every page renders, the analysis produces charts, and the pruning controls re-rank."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.logic.prune_view import build_view

NUM_LAYERS = 6  # the tiny model of conftest.py

PAGES = ["model", "calibration", "dynamics", "heatmap", "prune_list", "budget", "export",
         "width"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_before_any_analysis(ui, page, app_env):
    at = ui.start(page)
    ui.assert_clean(at)
    assert at.title[0].value  # the page itself ran, not only the sidebar
    assert at.session_state["model_spec"] == app_env["ENTRODROP_MODEL"]
    if page in ("dynamics", "heatmap", "prune_list", "budget", "export"):
        assert any("Calibration page" in i.value for i in at.info)


def test_analysis_then_every_page_renders(ui):
    at = ui.analysed(seed=11)
    profile = at.session_state["analysis"].runs[0]
    assert profile.num_layers == NUM_LAYERS
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        ui.assert_clean(at)
        assert at.title[0].value


def test_dynamics_page_draws_curve_bars_and_sink_map(ui):
    at = ui.analysed(seed=12)
    at.switch_page("views/dynamics.py").run()
    ui.assert_clean(at)
    ((_, curve, values),) = ui.vega_charts(at)
    bars, sink = ui.charts(at)
    # One row per estimator, each with the L+1 points H(Z_0)..H(Z_L).
    assert len(curve["vconcat"]) == 3
    points = [(v["estimator"], v["j"]) for v in values]
    assert points == [(e, j) for e in ("bucket", "knn", "renyi") for j in range(NUM_LAYERS + 1)]
    # dH bars at both granularities, one bar per block.
    assert [t["name"] for t in bars["data"]] == ["layer", "attn"]
    assert all(len(t["y"]) == NUM_LAYERS for t in bars["data"])
    # Sink heatmap: one row per residual point, one column per position.
    assert len(sink["data"][-1]["z"]) == NUM_LAYERS + 1
    assert len(sink["data"][-1]["z"][0]) == 32
    assert any("What you are seeing" in e.label for e in at.expander)


def test_moving_k_changes_the_highlighted_prune_list(ui):
    at = ui.analysed(seed=13)
    at.switch_page("views/prune_list.py").run()
    profile = at.session_state["analysis"].runs[0]
    slider = at.slider(key="k")
    view = at.session_state["_view"]
    assert slider.max == view.max_k == len(view.plan.prunable)

    seen = {}
    for k in (1, 3):
        at.slider(key="k").set_value(k).run()
        ui.assert_clean(at)
        expected = build_view(profile, granularity="attn", criterion="knn", policy="auto",
                              s_start=None, allow_last=False, k=k)
        line = next(m.value for m in at.markdown if m.value.startswith("**Pruned at K"))
        assert line.startswith(f"**Pruned at K = {k}**")
        assert line.endswith(", ".join(map(str, sorted(expected.blocks))))
        table = at.dataframe[0].value
        assert list(table["pruned"]) == [r < k for r in range(len(table))]
        assert list(table["knn block"]) == expected.order
        seen[k] = line
    assert seen[1] != seen[3]
    assert at.session_state["analysis"].from_cache == [False]  # no model rerun


def test_granularity_and_criterion_rerank_from_the_cached_profile(ui):
    at = ui.analysed(seed=14)
    at.switch_page("views/prune_list.py").run()
    at.slider(key="k").set_value(2).run()
    profile = at.session_state["analysis"].runs[0]
    at.selectbox(key="granularity").set_value("layer").run()
    at.selectbox(key="criterion").set_value("bucket").run()
    ui.assert_clean(at)
    view = at.session_state["_view"]
    expected = build_view(profile, granularity="layer", criterion="bucket", policy="auto",
                          s_start=None, allow_last=False, k=2)
    assert view.order == expected.order and view.blocks == expected.blocks
    assert list(at.dataframe[0].value["bucket block"]) == expected.order
    downloads = {b.key for b in at.get("download_button")}
    assert {"download_csv", "download_json", "download_rank_string"} <= downloads
    assert expected.rank_string() in [c.value for c in at.code]


def test_s_start_slider_switches_to_manual_and_bounds_k(ui):
    at = ui.analysed(seed=15)
    at.switch_page("views/dynamics.py").run()
    at.slider(key="s_start").set_value(4).run()
    ui.assert_clean(at)
    assert at.session_state["stage_policy"] == "manual"
    view = at.session_state["_view"]
    assert view.plan.s_start == 4
    assert view.plan.prunable == (4,)  # 0..3 Stage 1, block 5 (the last) frozen
    assert at.slider(key="k").max == 1
    # The curve chart is drawn anew with its boundary at the new S_start.
    ((chart_id, curve, _),) = ui.vega_charts(at)
    assert "curve_chart_4" in chart_id
    rect = next(ly for ly in curve["vconcat"][0]["layer"] if ly["mark"]["type"] == "rect")
    assert ": 4," in next(t["calculate"] for t in rect["transform"] if t.get("as") == "edge")

    at.button(key="s_start_auto").click().run()
    assert at.session_state["stage_policy"] == "auto"
    profile = at.session_state["analysis"].runs[0]
    assert at.session_state["_view"].plan.s_start == profile.s_start["knn"]


def test_reference_policy_freezes_first_two_and_last(ui):
    at = ui.analysed(seed=16)
    at.radio(key="stage_policy").set_value("reference").run()
    ui.assert_clean(at)
    plan = at.session_state["_view"].plan
    assert plan.frozen == (0, 1, NUM_LAYERS - 1)
    assert at.slider(key="k").max == NUM_LAYERS - 3


def test_allow_last_makes_the_last_block_prunable(ui):
    at = ui.analysed(seed=17)
    before = at.slider(key="k").max
    at.checkbox(key="allow_last").check().run()
    assert NUM_LAYERS - 1 in at.session_state["_view"].plan.prunable
    # One more block is a candidate, but K never reaches all L blocks.
    assert at.slider(key="k").max == min(before + 1, NUM_LAYERS - 1)


def test_heatmap_outlines_prune_sets_and_shows_agreement(ui):
    at = ui.analysed(seed=18, sources=("builtin:random", "builtin:selfgen"))
    assert len(at.session_state["analysis"].runs) == 2
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/heatmap.py").run()
    ui.assert_clean(at)
    heat, agree = ui.charts(at)
    assert len(heat["data"][0]["z"]) == 2 and len(heat["data"][0]["z"][0]) == NUM_LAYERS
    assert len(heat["layout"]["shapes"]) == 4  # K = 2 outlined cells in each of 2 rows
    assert agree["data"][0]["z"][0][0] == 1.0
    at.radio(key="heatmap_mode").set_value("rank").run()
    ui.assert_clean(at)
    ranks = ui.charts(at)[0]["data"][0]["z"][0]
    view = at.session_state["_view"]
    assert [ranks[b] for b in view.order] == list(range(len(view.order)))


def test_unusable_curve_gives_error_in_sidebar_and_pages_stay_usable(ui):
    at = ui.analysed(seed=19)
    record = at.session_state["analysis"]
    broken = replace(record.runs[0], entropy_curve={e: [None] * (NUM_LAYERS + 1)
                                                     for e in ("bucket", "knn", "renyi")})
    at.session_state["analysis"] = replace(record, runs=[broken])
    at.switch_page("views/prune_list.py").run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert "Planning the stages failed" in error and "no finite value" in error
    assert any("cannot be applied" in w.value for w in at.warning)
    # The reference policy needs no curve, so the user can carry on.
    at.radio(key="stage_policy").set_value("reference").run()
    ui.assert_clean(at)
    assert at.session_state["_view"].plan.frozen == (0, 1, NUM_LAYERS - 1)


def test_every_profile_criterion_is_offered_and_ranks_renders_and_budgets(ui):
    from pruning.ranking import PROFILE_CRITERIA
    at = ui.analysed(seed=15)
    profile = at.session_state["analysis"].runs[0]
    at.switch_page("views/prune_list.py").run()
    assert list(at.selectbox(key="criterion").options) == [
        at.selectbox(key="criterion").format_func(c) for c in PROFILE_CRITERIA]
    at.selectbox(key="granularity").set_value("layer").run()
    for criterion in ("angular", "reverse", "random:1", "angular_span"):
        at.switch_page("views/prune_list.py").run()
        at.selectbox(key="criterion").set_value(criterion).run()
        ui.assert_clean(at)
        view = at.session_state["_view"]
        expected = build_view(profile, granularity="layer", criterion=criterion, policy="auto",
                              s_start=None, allow_last=False, k=view.k)
        assert view.criterion == criterion and view.order == expected.order
        for page in ("dynamics", "heatmap"):
            at.switch_page(f"views/{page}.py").run()
            ui.assert_clean(at)
    at.switch_page("views/budget.py").run()
    at.button(key="run_budget").click().run()
    ui.assert_clean(at)
    rows = at.session_state["budget_result"]["rows"]
    assert {r["criterion"] for r in rows} == {"angular_span", "cosine"}
