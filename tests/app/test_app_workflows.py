"""Budget, export and width pruning from the UI; sessions share models, not choices."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from pruning.manifest import block_manifest

NUM_LAYERS = 6


def test_budget_curves_are_computed_once_then_cached(ui):
    at = ui.analysed(seed=31)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/budget.py").run()
    ui.assert_clean(at)
    assert not ui.charts(at)  # nothing runs until the button is pressed
    at.number_input(key="budget_held_out").set_value(2).run()
    at.button(key="run_budget").click().run()
    ui.assert_clean(at)
    (quality,) = ui.charts(at)
    names = {t["name"] for t in quality["data"]}
    assert names == {"knn", "cosine"}
    rows = at.session_state["budget_result"]["rows"]
    view = at.session_state["_view"]
    assert {r["k"] for r in rows} == set(range(view.max_k + 1))
    unpruned = [r for r in rows if r["k"] == 0]
    assert all(r["kl"] == 0.0 and r["top1"] == 1.0 for r in unpruned)

    # Another session with the same profile and settings gets the curves without the button.
    other = ui.analysed(seed=31)
    other.slider(key="k").set_value(2).run()
    other.switch_page("views/budget.py").run()
    other.number_input(key="budget_held_out").set_value(2).run()
    assert other.session_state["budget_result"]["rows"] == rows
    assert len(ui.charts(other)) == 1


def test_budget_savings_speed_and_generation(ui):
    at = ui.analysed(seed=32)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/budget.py").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Blocks pruned"] == "2 attn"
    at.button(key="run_speed").click().run()
    ui.assert_clean(at)
    shown = {m.label: m.value for m in at.metric}
    # The absolute figures are on the page, not only in tooltips.
    assert shown["Prefill, pruned (transformers)"].endswith(" tokens/s")
    assert shown["Decode, pruned (transformers)"].endswith(" ms/token")
    speed = at.session_state["speed_result"]
    assert shown["Prefill, pruned (transformers)"] == f"{speed['prefill_tokens_per_s_pruned']:.0f} tokens/s"
    at.text_area(key="gen_prompt").set_value("the law of the state").run()
    at.number_input(key="gen_tokens").set_value(5).run()
    at.button(key="run_generate").click().run()
    ui.assert_clean(at)
    generation = at.session_state["generation"]
    assert set(generation) >= {"unpruned", "pruned"}
    assert generation["blocks"] == at.session_state["_view"].blocks


def test_export_writes_the_pruned_model(ui, tmp_path, monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.analysed(seed=33)
    at.selectbox(key="granularity").set_value("layer").run()
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/export.py").run()
    ui.assert_clean(at)
    at.text_input(key="export_name").set_value("tiny-k2").run()
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    folder = root / "tiny-k2"
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == NUM_LAYERS - 2
    manifest = json.loads((folder / "entrodrop.json").read_text())
    assert manifest["blocks"] == sorted(at.session_state["_view"].blocks)
    assert manifest["granularity"] == "layer"
    # The app wrote what the one manifest builder (the CLI's too) makes of this decision.
    view, profile = at.session_state["_view"], at.session_state["analysis"].runs[0]
    expected = json.loads(json.dumps(
        block_manifest(profile, view.decision, view.baseline_decision)))
    assert {key: manifest[key] for key in expected} == expected
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == f"{NUM_LAYERS - 2} of {NUM_LAYERS}"
    snippet = at.code[0].value
    assert str(folder) in snippet and "trust_remote_code" not in snippet

    # Exporting again to the same name without overwrite is refused with advice.
    at.button(key="run_export").click().run()
    assert not at.exception
    assert any("already exists" in e.value for e in at.error)


def test_width_page_scores_neurons_and_exports(ui, tmp_path, monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.start("calibration")
    ui.set_calibration(at, seed=34)
    at.switch_page("views/width.py").run()
    ui.assert_clean(at)
    at.multiselect(key="width_criteria").set_value(["taylor-entropy", "magnitude"]).run()
    at.number_input(key="width_samples").set_value(2).run()
    at.button(key="run_width_scores").click().run()
    ui.assert_clean(at)
    heat, overlap = ui.charts(at)
    assert len(heat["data"][0]["z"]) == NUM_LAYERS
    assert len(overlap["data"][0]["y"]) == NUM_LAYERS
    at.radio(key="width_scale").set_value("paper").run()  # the CLI's ratio x hidden size
    at.slider(key="width_ratio").set_value(1.0).run()  # keep 32 of 64 neurons
    assert any("Keeps 32 of 64" in c.value for c in at.caption)
    at.button(key="run_width_quality").click().run()
    ui.assert_clean(at)
    assert len(ui.charts(at)) == 3
    at.text_input(key="width_export_name").set_value("tiny-width").run()
    at.button(key="run_width_export").click().run()
    ui.assert_clean(at)
    config = json.loads((root / "tiny-width" / "config.json").read_text())
    assert config["intermediate_size"] == 32
    # The service's width manifest, as the CLI writes it: criterion, ratio, calibration.
    manifest = json.loads((root / "tiny-width" / "entrodrop.json").read_text())
    assert manifest["method"] == "width" and manifest["criterion"] == "taylor-entropy"
    assert manifest["ratio"] == 1.0 and manifest["mode"] == "per_layer"
    assert manifest["kept_per_layer"] == [32] * NUM_LAYERS
    assert len(manifest["layer_importance"]) == NUM_LAYERS
    assert (manifest["calibration"]["samples"], manifest["calibration"]["seed"]) == (2, 34)


def test_sessions_share_the_model_but_not_their_choices(ui):
    first = ui.analysed(seed=35)
    first.slider(key="k").set_value(3).run()
    first.selectbox(key="granularity").set_value("layer").run()

    second = ui.start("model")
    ui.assert_clean(second)
    # The model loaded by the first session's analysis is already there for the second.
    assert any("Loaded" in s.value for s in second.success)
    assert second.session_state["k"] == 0
    assert second.session_state["granularity"] == "attn"
    assert "analysis" not in second.session_state
    assert first.session_state["k"] == 3


def test_cached_analysis_appears_at_once_in_a_new_session(ui):
    ui.analysed(seed=36)
    at = ui.start("calibration")
    ui.set_calibration(at, seed=36)  # same request, no button press
    ui.assert_clean(at)
    record = at.session_state["analysis"]
    assert record.runs[0].calibration["seed"] == 36
    assert at.slider(key="k")  # the sidebar's pruning controls are there


def test_startup_model_from_the_command_line(monkeypatch, tiny_model_dir):
    monkeypatch.setattr("sys.argv", ["streamlit_app.py", "--model", str(tiny_model_dir)])
    monkeypatch.setenv("ENTRODROP_MODEL", "demo:gemma3-270m")
    app = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    assert at.session_state["model_spec"] == str(tiny_model_dir)
    assert at.session_state["model_source"] == "local"


def test_taylor_layer_sums_appear_on_the_prune_list(ui):
    at = ui.analysed(seed=37)
    at.switch_page("views/width.py").run()
    at.multiselect(key="width_criteria").set_value(["taylor-entropy"]).run()
    at.number_input(key="width_samples").set_value(2).run()
    at.button(key="run_width_scores").click().run()
    ui.assert_clean(at)
    at.selectbox(key="granularity").set_value("layer").run()
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/prune_list.py").run()
    ui.assert_clean(at)
    frames = [df.value for df in at.dataframe]
    taylor = [f for f in frames if "criterion" in f.columns]
    assert taylor and taylor[0]["criterion"].tolist() == ["taylor-entropy (layer sum)"]
    assert len(taylor[0]["pruned"].iloc[0]) == 2


def _manifest(folder):
    record = json.loads((folder / "entrodrop.json").read_text())
    record.pop("exported_at")  # the only field that depends on when, not what
    return record


def test_app_and_cli_exports_of_the_same_settings_write_equal_manifests(
        ui, tmp_path, monkeypatch, tiny_model_dir):
    from entrodrop.cli import main

    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    # Block export: the app at its defaults (attn, knn, auto S_start) with K=2 ...
    at = ui.analysed(seed=41)
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/export.py").run()
    at.text_input(key="export_name").set_value("app-blocks").run()
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    # ... and the CLI with the same settings.
    common = ["--model", str(tiny_model_dir), "--calibration", "builtin:random",
              "--samples", "4", "--seqlen", "32", "--seed", "41", "--knn-k", "5"]
    assert main(["--quiet", "export", *common, "--granularity", "attn", "--criterion", "knn",
                 "--k", "2", "--out", str(tmp_path / "cli-blocks")]) == 0
    app_blocks, cli_blocks = _manifest(root / "app-blocks"), _manifest(tmp_path / "cli-blocks")
    assert app_blocks["blocks"] and app_blocks["k"] == 2
    assert app_blocks == cli_blocks

    # Width export: taylor-entropy scores on 2 windows, ratio 1.0, in the app and the CLI.
    at = ui.start("calibration")
    ui.set_calibration(at, seed=42)
    at.switch_page("views/width.py").run()
    at.multiselect(key="width_criteria").set_value(["taylor-entropy"]).run()
    at.number_input(key="width_samples").set_value(2).run()
    at.button(key="run_width_scores").click().run()
    at.radio(key="width_scale").set_value("paper").run()
    at.slider(key="width_ratio").set_value(1.0).run()
    at.text_input(key="width_export_name").set_value("app-width").run()
    at.button(key="run_width_export").click().run()
    ui.assert_clean(at)
    width_args = ["--model", str(tiny_model_dir), "--calibration", "builtin:random",
                  "--samples", "2", "--seqlen", "32", "--seed", "42"]
    assert main(["--quiet", "width", *width_args, "--criterion", "taylor-entropy",
                 "--ratio", "1.0", "--out", str(tmp_path / "cli-width")]) == 0
    app_width, cli_width = _manifest(root / "app-width"), _manifest(tmp_path / "cli-width")
    assert app_width["method"] == "width" and app_width["kept_per_layer"] == [32] * NUM_LAYERS
    assert app_width == cli_width


def test_export_of_a_random_order_suggests_a_portable_name_and_records_its_seed(ui, tmp_path,
                                                                                monkeypatch):
    root = tmp_path / "exports"
    monkeypatch.setenv("ENTRODROP_EXPORT_ROOT", str(root))
    at = ui.analysed(seed=34)
    at.selectbox(key="granularity").set_value("layer").run()
    at.selectbox(key="criterion").set_value("random:1").run()
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/export.py").run()
    ui.assert_clean(at)
    name = at.text_input(key="export_name").value
    assert name.endswith("-layer-random-1-k1") and ":" not in name
    at.button(key="run_export").click().run()
    ui.assert_clean(at)
    manifest = json.loads((root / name / "entrodrop.json").read_text())
    assert manifest["criterion"] == "random:1"
    assert manifest["criterion_details"]["seed"] == 1
    assert manifest["blocks"] == list(at.session_state["_view"].blocks)
