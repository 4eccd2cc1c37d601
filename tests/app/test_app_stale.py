"""No result is shown under settings that did not make it: the analysis after a failed model
load, the side-by-side text and the export after K changes, progress bars after a failure;
and controls that cannot lead to a failure (K range, uploads, export names, keep amount)."""

from __future__ import annotations

from tests.app.conftest import NUM_LAYERS


def _texts(at) -> str:
    return "\n".join(str(e.value) for e in (*at.markdown, *at.caption, *at.info, *at.warning))


def _fail_load(at, path="/nonexistent/tiny-model"):
    at.switch_page("views/model.py").run()
    at.radio(key="model_source").set_value("local").run()
    at.text_input(key="model_path").set_value(path).run()
    at.button(key="load_model").click().run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_failed_load_marks_every_analysis_page_stale_and_blocks_model_work(ui, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(tmp_path / "exports"))
    at = ui.analysed(seed=51)
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/export.py").run()
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    assert at.success
    _fail_load(at)
    # The sidebar names the failure, not "not loaded yet".
    sidebar = "\n".join(str(e.value) for e in (*at.sidebar.caption, *at.sidebar.warning))
    assert "load failed" in sidebar and "not loaded yet" not in sidebar
    assert "This model did not load" in sidebar and "Stale analysis" in sidebar
    for page in ("dynamics", "heatmap", "prune_list", "budget", "export"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        banner = [w.value for w in at.warning if "Stale: these results" in w.value]
        assert banner, page
        assert "model " in banner[0] and "/nonexistent/tiny-model" in banner[0], banner
    # Export and every model run are off, with the reason, instead of failing.
    assert at.button(key="run_export").disabled
    assert "Export is off while the analysis is stale" in _texts(at)
    # The export was of the analysed model: not shown as a success under another one.
    assert not at.success
    assert any("made for other settings" in i.value and "/nonexistent/tiny-model" in i.value
               for i in at.info)
    at.switch_page("views/budget.py").run()
    assert at.button(key="run_budget").disabled and at.button(key="run_generate").disabled
    # Back to the analysed model: the results are current again.
    at.switch_page("views/model.py").run()
    at.text_input(key="model_path").set_value(at.session_state["analysis"].request.model.spec)
    at.run()
    at.switch_page("views/export.py").run()
    assert not any("Stale" in w.value for w in at.warning)
    assert not at.button(key="run_export").disabled


def test_a_failed_run_leaves_no_progress_bar_behind(ui):
    at = ui.start("model")
    at.radio(key="model_source").set_value("local").run()
    at.text_input(key="model_path").set_value("/nonexistent/model").run()
    at.switch_page("views/calibration.py").run()
    ui.set_calibration(at, seed=52)
    at.button(key="run_analysis").click().run()
    assert any("Running the analysis failed" in e.value for e in at.error)
    assert len(at.get("progress")) == 0


def test_side_by_side_text_is_withdrawn_when_k_changes_or_generating_fails(ui):
    at = ui.analysed(seed=53)
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/budget.py").run()
    at.number_input(key="gen_tokens").set_value(3).run()
    at.button(key="run_generate").click().run()
    ui.assert_clean(at)
    blocks = at.session_state["_view"].blocks
    assert f"**Pruned** (blocks {blocks}, K = 1)" in _texts(at)
    at.slider(key="k").set_value(2).run()
    texts = _texts(at)
    assert "**Pruned** (blocks" not in texts
    assert "generated for other settings" in texts and "K 1 → 2" in texts
    # Generate again, then a failing run: no earlier text stays under the error.
    at.button(key="run_generate").click().run()
    assert "K = 2)" in _texts(at)
    at.checkbox(key="gen_chat").check().run()  # the tiny tokenizer has no chat template
    at.button(key="run_generate").click().run()
    assert any("Generating failed" in e.value for e in at.error)
    assert "**Pruned** (blocks" not in _texts(at)
    assert "generation" not in at.session_state


def test_export_result_and_name_follow_k(ui, tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(tmp_path / "exports"))
    at = ui.analysed(seed=54)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/export.py").run()
    name = at.text_input(key="export_name").value
    assert name.endswith("-attn-knn-k2")
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    assert any(name in s.value for s in at.success)
    at.slider(key="k").set_value(0).run()
    # No green box for K = 2 under K = 0; the name follows K.
    assert not at.success
    assert any("made for other settings" in i.value and "K 2 → 0" in i.value for i in at.info)
    assert at.text_input(key="export_name").value.endswith("-k0")
    assert at.button(key="run_export").disabled
    # A name the user typed is kept when K moves.
    at.slider(key="k").set_value(1).run()
    at.text_input(key="export_name").set_value("my-export").run()
    at.slider(key="k").set_value(3).run()
    assert at.text_input(key="export_name").value == "my-export"


def test_k_never_reaches_every_block_at_the_s_start_and_last_block_extremes(ui):
    at = ui.analysed(seed=55)
    at.switch_page("views/dynamics.py").run()
    at.slider(key="s_start").set_value(0).run()
    at.checkbox(key="allow_last").check().run()
    assert at.session_state["_view"].plan.prunable == tuple(range(NUM_LAYERS))
    assert at.slider(key="k").max == NUM_LAYERS - 1
    at.slider(key="k").set_value(NUM_LAYERS - 1).run()
    ui.assert_clean(at)
    at.switch_page("views/budget.py").run()
    ui.assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Blocks pruned"] == f"{NUM_LAYERS - 1} attn"
    # The other extreme: S_start at the last block leaves nothing to prune, and says so.
    at.switch_page("views/dynamics.py").run()
    at.checkbox(key="allow_last").uncheck().run()
    at.slider(key="s_start").set_value(NUM_LAYERS - 1).run()
    assert not at.exception
    assert [s for s in at.slider if s.key == "k"] == []
    assert any("No block can be pruned" in w.value for w in at.sidebar.warning)


def test_a_typed_path_that_is_not_calibration_data_is_not_added(ui, tmp_path):
    at = ui.start("calibration")
    at.text_input(key="cal_path_input").set_value(str(tmp_path / "missing.txt")).run()
    assert any("File refused" in e.value for e in at.error)
    assert str(tmp_path / "missing.txt") not in at.session_state["cal_sources"]
    good = tmp_path / "notes.txt"
    good.write_text("the court and the state\n\nthe law of the land\n")
    at.text_input(key="cal_path_input").set_value(str(good)).run()
    assert str(good) in at.session_state["cal_sources"]
    assert not at.error


def test_width_keep_amount_is_a_fraction_of_neurons_with_the_paper_ratio_as_option(ui):
    at = ui.start("calibration")
    ui.set_calibration(at, seed=56)
    at.switch_page("views/width.py").run()
    at.multiselect(key="width_criteria").set_value(["taylor-entropy"]).run()
    at.number_input(key="width_samples").set_value(2).run()
    at.button(key="run_width_scores").click().run()
    ui.assert_clean(at)
    assert at.radio(key="width_scale").value == "fraction"
    at.slider(key="width_fraction").set_value(0.25).run()
    captions = "\n".join(c.value for c in at.caption)
    assert "Keeps 16 of 64 neurons per layer (25 % kept)" in captions
    assert at.text_input(key="width_export_name").value == "width-taylor-entropy-keep0.25-n16"
    at.radio(key="width_scale").set_value("paper").run()
    at.slider(key="width_ratio").set_value(1.5).run()
    captions = "\n".join(c.value for c in at.caption)
    assert "Keeps 48 of 64" in captions and "int() truncates" in captions
    assert at.text_input(key="width_export_name").value == "width-taylor-entropy-r1.50-n48"
