"""Every failure shows a specific st.error and the app stays usable."""

from __future__ import annotations


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _load_failing_model(ui, source: str, field: str, value: str):
    """Ask the Model page to load `value` from `source`; returns the app and its errors."""
    at = ui.start("model")
    at.radio(key="model_source").set_value(source).run()
    at.text_input(key=field).set_value(value).run()
    at.button(key="load_model").click().run()
    assert not at.exception
    return at, _errors(at)


def test_missing_local_model_gives_error_and_app_stays_usable(ui):
    at, (error,) = _load_failing_model(ui, "local", "model_path", "/nonexistent/tiny-model")
    assert "Loading the model failed" in error and "does not exist" in error
    # Still usable: another page renders without errors.
    at.switch_page("views/calibration.py").run()
    ui.assert_clean(at)


def test_hub_id_offline_says_what_to_do(ui):
    _, (error,) = _load_failing_model(ui, "hub", "hub_id", "no-such-org/no-such-model")
    assert "not available offline" in error and "demo:smollm2-135m" in error


def test_folder_without_config_gives_error(ui, tmp_path):
    _, errors = _load_failing_model(ui, "local", "model_path", str(tmp_path))
    assert "no config.json" in errors[0]


def test_loading_the_tiny_model_shows_its_figures(ui):
    at = ui.start("model")
    at.button(key="load_model").click().run()
    ui.assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers (L)"] == "6"
    assert metrics["Architecture"] == "LlamaForCausalLM"


def _upload(ui, name: str, data: bytes, mime: str, seed: int, text_column: str = ""):
    at = ui.start("model")
    at.button(key="load_model").click().run()  # the upload is read with the model's tokenizer
    at.switch_page("views/calibration.py").run()
    ui.set_calibration(at, seed=seed)
    at.text_input(key="cal_text_column").set_value(text_column).run()
    at.file_uploader(key="cal_upload").set_value((name, data, mime)).run()
    return at


def test_csv_without_text_column_gives_error(ui):
    at = _upload(ui, "table.csv", b"a,b\n1,2\n3,4\n", "text/csv", seed=21)
    assert not at.exception
    (error,) = _errors(at)
    assert "no text column found" in error and "'a', 'b'" in error
    # Refused means not added: the next analysis runs on the sources that work.
    assert not any("table.csv" in s for s in at.session_state["cal_sources"])
    assert not any("table.csv" in s for s in at.session_state["cal_uploaded"])
    at.button(key="run_analysis").click().run()
    assert not at.exception
    specs = [c.spec for c in at.session_state["analysis"].request.calibrations]
    assert specs == ["builtin:random"]


def test_csv_with_named_text_column_is_accepted(ui):
    rows = "\n".join(f'{i},"the law of the state and the court {i}"' for i in range(50))
    at = _upload(ui, "ok.csv", f"id,body\n{rows}\n".encode(), "text/csv", seed=22,
                 text_column="body")
    assert not at.exception
    assert not _errors(at)
    assert any("is usable" in s.value and "`body`" in s.value for s in at.success)
    assert any(s.endswith("ok.csv") for s in at.session_state["cal_sources"])


def test_oversized_upload_is_refused(ui, monkeypatch):
    monkeypatch.setenv("ENTRODROP_UPLOAD_MAX_MB", "0.001")  # about 1 KB
    at = ui.start("calibration")
    at.file_uploader(key="cal_upload").set_value(
        ("big.txt", b"word " * 1000, "text/plain")).run()
    assert not at.exception
    (error,) = _errors(at)
    assert "Upload refused" in error and "upload limit" in error
    assert not any(s.endswith("big.txt") for s in at.session_state["cal_sources"])


def test_too_few_tokens_for_n_x_t_gives_error(ui, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("the law of the state")
    at = ui.start("calibration")
    ui.set_calibration(at, seed=23)
    at.text_input(key="cal_path_input").input(str(small)).run()
    at.multiselect(key="cal_sources").set_value([str(small)]).run()
    at.button(key="run_analysis").click().run()
    assert not at.exception
    assert any("too little text" in e for e in _errors(at))


def test_invalid_estimator_settings_give_error(ui):
    at = ui.start("calibration")
    ui.set_calibration(at, seed=24, seqlen=8)
    at.number_input(key="est_knn_k").set_value(20).run()  # k must be < T - skip_first = 7
    assert not at.exception
    assert any("knn_k=20" in e for e in _errors(at))
    at.button(key="run_analysis").click().run()
    assert "analysis" not in at.session_state


def test_export_path_traversal_is_refused(ui, tmp_path, monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.analysed(seed=25)
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/export.py").run()
    outside = tmp_path / "outside"
    for name in ("../outside", "a/../../outside", str(outside), "/etc/entrodrop-test", "  "):
        at.text_input(key="export_name").set_value(name).run()
        at.button(key="run_export").click().run()
        assert not at.exception
        (error,) = _errors(at)
        assert "Exporting failed" in error, name
    assert not outside.exists()
    assert not root.exists() or not any(root.iterdir())


def test_out_of_memory_is_reported_with_advice(ui, monkeypatch):
    from entrodrop import service

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(service, "analyze", boom)
    at = ui.start("calibration")
    ui.set_calibration(at, seed=26)
    at.button(key="run_analysis").click().run()
    assert not at.exception
    (error,) = _errors(at)
    assert "Out of memory" in error and "batch size" in error


def test_a_bug_shows_one_line_and_its_traceback_goes_to_the_log(ui, monkeypatch, app_dirs):
    from entrodrop import service

    def bug(loaded):
        raise KeyError("no such field")

    monkeypatch.setattr(service, "model_summary", bug)  # outside any guard of the page
    at = ui.start("model")
    at.button(key="load_model").click().run()
    assert not at.exception
    (error,) = _errors(at)
    log = app_dirs["cache"] / "logs" / "app-errors.log"
    assert error == ("Internal error: Drawing the Model page failed with KeyError: "
                     f"'no such field'. The full traceback is in `{log}`")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "no such field" in text
    # The rest of the app is unaffected.
    at.switch_page("views/calibration.py").run()
    ui.assert_clean(at)
