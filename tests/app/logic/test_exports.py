"""app/logic/exports.py: the export folder, and the figures an export's manifest records."""

from __future__ import annotations

import pytest

from app.logic.exports import ExportPathError, export_root, measured_figures, resolve_export_dir
from pruning.manifest import block_manifest
from tests.app.sample import profile as _profile
from tests.app.sample import view as _view


def test_export_dir_stays_inside_the_root(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    assert resolve_export_dir("model-k4", root) == root / "model-k4"
    assert resolve_export_dir(" runs/model-k4 ", root) == root / "runs" / "model-k4"
    assert resolve_export_dir(str(root / "abs"), root) == root / "abs"
    for bad in ("", "   ", "..", "../x", "a/../../x", "a/..", str(tmp_path / "x"), "/etc",
                str(root)):
        with pytest.raises(ExportPathError):
            resolve_export_dir(bad, root)


def test_export_dir_refuses_a_symlink_out_of_the_root(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ExportPathError, match="outside the export root"):
        resolve_export_dir("link/escaped", root)


def test_export_root_from_env(tmp_path):
    assert export_root({"ENTRODROP_EXPORT_ROOT": str(tmp_path)}) == tmp_path.resolve()
    assert export_root({}).name == "exports"


def test_measured_figures_belong_to_the_prune_set_and_go_into_the_block_manifest():
    """The figures measured in the app for this K (and speed only if timed for this prune
    set) land in the manifest of the one builder the service uses for the CLI and the app.
    That the app's export really writes this manifest is checked in test_app_workflows."""
    view = _view(k=2)
    budget = {"rows": [{"criterion": "knn", "k": 2, "perplexity": 9.0},
                       {"criterion": "knn", "k": 3, "perplexity": 12.0}]}
    speed = {"key": "s1", "prefill_ratio": 1.3}
    measured = measured_figures(view, budget, speed, "s1")
    assert measured == {"quality_at_k": [budget["rows"][0]], "speed": {"prefill_ratio": 1.3}}
    assert measured_figures(view, budget, speed, "other") == {"quality_at_k": [budget["rows"][0]]}
    m = block_manifest(_profile(), view.decision, view.baseline_decision, measured)
    # The provenance and decision fields every block export records ...
    for key in ("source_model", "calibration", "estimator_settings", "granularity", "criterion",
                "s_start", "k", "blocks", "order", "scores"):
        assert key in m, key
    assert m["blocks"] == view.blocks and m["scores"] == view.scores
    # ... plus the comparison with the baseline and the measured figures.
    assert m["baseline_blocks"] == view.baseline_blocks
    assert m["measured"] == measured


def test_block_export_name_names_model_granularity_criterion_and_k():
    from app.logic.exports import block_export_name

    assert block_export_name("HuggingFaceTB/SmolLM2 135M", _view(k=3)) == "SmolLM2-135M-attn-knn-k3"
    assert block_export_name("demo:smollm2-135m", _view(k=0)) == "demo-smollm2-135m-attn-knn-k0"


def test_width_export_name_shows_the_amount_as_the_slider_does():
    from app.logic.exports import width_export_name

    assert width_export_name("taylor-ce", "paper", 1.5, 864) == "width-taylor-ce-r1.50-n864"
    assert width_export_name("taylor-ce", "fraction", 0.5, 768) == "width-taylor-ce-keep0.50-n768"


def test_export_name_follows_the_settings_until_the_user_types_one():
    from app.logic.exports import follow_suggestion

    assert follow_suggestion("", None, "m-k8") == "m-k8"  # first visit
    assert follow_suggestion("m-k8", "m-k8", "m-k0") == "m-k0"  # K changed: name follows
    assert follow_suggestion("mine", "m-k8", "m-k0") == "mine"  # typed: kept
    assert follow_suggestion("  ", "m-k8", "m-k0") == "  "  # a blank is refused on export
