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
                "s_start", "k", "pruned_blocks", "prune_order", "scores"):
        assert key in m, key
    assert m["pruned_blocks"] == view.pruned and m["scores"] == view.scores
    # ... plus the comparison with the baseline and the measured figures.
    assert m["baseline_pruned"] == view.baseline_pruned
    assert m["measured"] == measured
