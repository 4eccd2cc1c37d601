"""The dashboard's non-Streamlit glue (entrodrop/dashboard.py), chart builders and report."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest

from app import charts, report
from entrodrop import dashboard as db


def _profile(num_layers: int = 6) -> dict:
    """A hand-made profile with the service's layout and known scores."""
    curve = [10.0, 8.0, 7.0, 7.5, 8.0, 9.0, 9.5][: num_layers + 1]
    knn = [0.5, 0.1, 0.4, 0.2, 0.3, 0.05][:num_layers]
    cosine = [0.9, 0.3, 0.2, 0.1, 0.4, 0.05][:num_layers]
    blocks = {"delta_h": {"bucket": knn, "knn": knn, "renyi": knn}, "cosine": cosine}
    return {
        "model": {"spec": "tiny", "identity": "id", "num_layers": num_layers},
        "calibration": {"spec": "builtin:random", "fingerprint": "fp", "samples": 2,
                        "seqlen": 8},
        "settings": {"bins": 20, "knn_k": 5, "renyi_alpha": 4.0, "skip_first": 1},
        "entropy_curve": {"bucket": curve, "knn": curve, "renyi": curve},
        "blocks": {"layer": blocks, "attn": blocks},
        "s_start": {"bucket": 2, "knn": 2, "renyi": 2},
        "sink": {"max_norm": [[100.0] + [5.0] * 7 for _ in range(num_layers + 1)]},
        "warnings": [],
    }


def _view(k: int = 2, **kw):
    settings = dict(granularity="attn", criterion="knn", policy="auto", s_start=None,
                    allow_last=False, k=k)
    settings.update(kw)
    return db.build_view(_profile(), **settings)


# ---------------------------------------------------------------------------- start-up


def test_startup_spec_prefers_argument_then_env_then_demo():
    assert db.startup_model_spec(["--model", "/m"], {"ENTRODROP_MODEL": "/e"}) == "/m"
    assert db.startup_model_spec(["-x", "--other", "1"], {"ENTRODROP_MODEL": "/e"}) == "/e"
    assert db.startup_model_spec([], {}) == "demo:smollm2-135m"
    # No prefix matching: pytest's or streamlit's own options never pass for --model.
    assert db.startup_model_spec(["--mod", "/x"], {}) == "demo:smollm2-135m"


def test_model_source_of(tmp_path):
    assert db.model_source_of("demo:gemma3-270m") == "demo"
    assert db.model_source_of(str(tmp_path)) == "local"
    assert db.model_source_of("missing/file.gguf") == "local"
    assert db.model_source_of("HuggingFaceTB/SmolLM2-135M") == "hub"


# ---------------------------------------------------------------------------- export paths


def test_export_dir_stays_inside_the_root(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    assert db.resolve_export_dir("model-k4", root) == root / "model-k4"
    assert db.resolve_export_dir(" runs/model-k4 ", root) == root / "runs" / "model-k4"
    assert db.resolve_export_dir(str(root / "abs"), root) == root / "abs"
    for bad in ("", "   ", "..", "../x", "a/../../x", "a/..", str(tmp_path / "x"), "/etc",
                str(root)):
        with pytest.raises(db.ExportPathError):
            db.resolve_export_dir(bad, root)


def test_export_dir_refuses_a_symlink_out_of_the_root(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(db.ExportPathError, match="outside the export root"):
        db.resolve_export_dir("link/escaped", root)


def test_export_root_from_env(tmp_path):
    assert db.export_root({"ENTRODROP_EXPORT_ROOT": str(tmp_path)}) == tmp_path.resolve()
    assert db.export_root({}).name == "exports"


# ---------------------------------------------------------------------------- uploads


def test_save_upload_checks_type_size_and_content(tmp_path):
    path = db.save_upload("my notes.txt", b"hello", max_bytes=100, folder=tmp_path)
    assert path.read_bytes() == b"hello" and path.name == "my_notes.txt"
    again = db.save_upload("my notes.txt", b"hello, changed", max_bytes=100, folder=tmp_path)
    assert again != path  # new content, new spec (and so a new cache key)
    with pytest.raises(db.UploadError, match="not a supported"):
        db.save_upload("x.exe", b"data", max_bytes=100, folder=tmp_path)
    with pytest.raises(db.UploadError, match="empty"):
        db.save_upload("x.txt", b"", max_bytes=100, folder=tmp_path)
    with pytest.raises(db.UploadError, match="upload limit"):
        db.save_upload("x.csv", b"x" * 101, max_bytes=100, folder=tmp_path)
    with pytest.raises(db.UploadError):
        db.save_upload("../../x.txt.sh", b"x", max_bytes=100, folder=tmp_path)
    assert db.save_upload("../../evil.txt", b"x", max_bytes=100,
                          folder=tmp_path).parent.parent == tmp_path


def test_upload_limit_from_env():
    assert db.upload_limit_bytes({"ENTRODROP_UPLOAD_MAX_MB": "2"}) == 2 * 2**20
    assert db.upload_limit_bytes({}) == db.DEFAULT_UPLOAD_MAX_MB * 2**20


# ---------------------------------------------------------------------------- prune view


def test_view_ranks_stage_two_by_score_and_compares_with_cosine():
    view = _view(k=2)
    assert view.plan.s_start == 2 and view.plan.prunable == (2, 3, 4)
    assert view.order == [3, 4, 2]  # knn dH 0.2, 0.3, 0.4
    assert view.baseline_order == [3, 2, 4]  # cosine 0.1, 0.2, 0.4
    assert view.pruned == [3, 4] and view.baseline_pruned == [3, 2]
    assert view.comparison.overlap == 1
    assert view.comparison.jaccard == pytest.approx(1 / 3)
    assert view.rank_string() == "3,4,2,0,1,5"


def test_view_rejects_k_beyond_the_prunable_blocks():
    with pytest.raises(ValueError, match="k must be between 0 and 3"):
        _view(k=4)


def test_manual_and_reference_policies():
    assert _view(k=0, policy="manual", s_start=4).plan.prunable == (4,)
    assert _view(k=0, policy="reference").plan.frozen == (0, 1, 5)
    assert _view(k=0, allow_last=True).plan.prunable == (2, 3, 4, 5)


def test_ranking_rows_mark_pruned_and_shared_blocks():
    rows = db.ranking_rows(_view(k=2))
    assert [(r["block"], r["baseline_block"]) for r in rows] == [(3, 3), (4, 2), (2, 4)]
    assert [r["pruned"] for r in rows] == [True, True, False]
    assert [r["in_both_sets"] for r in rows] == [True, False, False]
    assert rows[0]["same_block"] and not rows[1]["same_block"]


def test_csv_and_json_downloads():
    view = _view(k=2)
    table = list(csv.DictReader(io.StringIO(db.rows_to_csv(db.block_rows(view)))))
    assert [r["block"] for r in table] == [str(b) for b in range(6)]
    assert [r["stage"] for r in table] == ["stage 1", "stage 1", "prunable", "prunable",
                                           "prunable", "frozen"]
    assert table[3]["knn_pruned"] == "True" and table[2]["knn_pruned"] == "False"
    record = db.view_to_json(view, _profile())
    json.dumps(record)
    assert record["pruned"] == [3, 4] and record["rank_string"] == "3,4,2,0,1,5"
    assert "RANK of layer i" in record["rank_string_format"]


def test_calibration_matrix_and_robustness():
    runs = [_profile(), _profile()]
    runs[1]["blocks"]["attn"]["delta_h"]["knn"] = [0.5, 0.1, 0.1, 0.9, 0.3, 0.0]
    views = db.views_for_runs(runs, granularity="attn", criterion="knn", policy="auto",
                              s_start=None, allow_last=False, k=2)
    norm = db.calibration_matrix(runs, granularity="attn", criterion="knn",
                                 mode="normalised", views=views)
    # Only the candidates 2..4 are scaled; Stage-1 and frozen blocks stay blank.
    assert [norm[0][b] is None for b in range(6)] == [True, True, False, False, False, True]
    assert min(norm[0][2:5]) == 0.0 and max(norm[0][2:5]) == 1.0
    assert norm[0].index(0.0) == views[0].order[0]
    ranks = db.calibration_matrix(runs, granularity="attn", criterion="knn", mode="rank",
                                  views=views)
    assert ranks[0] == [None, None, 2, 0, 1, None]
    agree = db.robustness(runs, views)
    assert agree["picked_by_all"] == [4]
    assert agree["jaccard"][0][1] == pytest.approx(1 / 3)


def test_budget_ks_thin_but_keep_the_ends():
    assert db.budget_ks(0) == [0]
    assert db.budget_ks(4) == [0, 1, 2, 3, 4]
    ks = db.budget_ks(28)
    assert ks[0] == 0 and ks[-1] == 28 and len(ks) <= 9 and ks == sorted(set(ks))


def test_describe_error():
    assert "Out of memory" in db.describe_error(RuntimeError("CUDA out of memory."))
    assert "Out of memory" in db.describe_error(MemoryError())
    assert db.describe_error(db.ExportPathError("bad name")) == "bad name"
    assert db.describe_error(RuntimeError("some bug")) is None
    assert db.describe_error(KeyError("x")) is None


def test_kept_overlap():
    assert db.kept_overlap([[0, 1, 2]], [[1, 2, 3]]) == [0.5]


# ---------------------------------------------------------------------------- charts, report


def test_entropy_curve_marks_stage_one_and_s_start():
    fig = charts.entropy_curve_figure(_profile()["entropy_curve"], ["knn"], 2)
    shapes = fig.to_dict()["layout"]["shapes"]
    assert any(s["type"] == "rect" and s["x1"] == 2 for s in shapes)  # Stage 1 shaded
    assert any(s["type"] == "line" and s["x0"] == 2 for s in shapes)  # S_start marked
    assert list(fig.data[0].customdata) == list(range(7))


def test_delta_h_bars_highlight_the_pruned_blocks():
    view = _view(k=2)
    fig = charts.delta_h_figure({"attn": view.scores}, {"attn": view.pruned}, "knn",
                                view.plan.s_start, view.plan.frozen)
    colours = list(fig.data[0].marker.color)
    assert [i for i, c in enumerate(colours) if c == charts.PRUNED] == [3, 4]
    assert colours[0] == charts.STAGE1 and colours[5] == charts.FROZEN


def test_sink_figure_uses_log_norms():
    fig = charts.sink_figure(_profile()["sink"]["max_norm"], skip_first=1)
    assert fig.data[0].z[0][0] == pytest.approx(2.0)
    assert math.isclose(fig.data[0].z[0][1], math.log10(5.0))


def test_report_is_one_self_contained_html_file():
    runs = [_profile(), _profile()]
    snap = {"analysis": {"runs": runs, "request": {"model": {"spec": "tiny"}},
                         "messages": ["hello"]},
            "run_index": 0,
            "view_settings": {"granularity": "attn", "criterion": "knn", "policy": "auto",
                              "s_start": 0, "allow_last": False, "k": 2},
            "curve_estimators": ["knn"],
            "budget": {"rows": [{"criterion": "knn", "k": 0, "perplexity": 5.0, "kl": 0.0,
                                 "top1": 1.0}]},
            "width": None}
    text = report.build_html(snap)
    assert text.startswith("<!DOCTYPE html>")
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing fetched: no CDN
    assert text.count("Plotly.newPlot") == 6  # curve, dH, sink, heatmap, agreement, quality
    assert len(text) > 1_000_000  # plotly.js itself is inline
    assert "3,4,2,0,1,5" in text and "RANK of layer i" in text
    assert "<h2>Robustness</h2>" in text


def test_report_without_analysis():
    text = report.build_html({"analysis": None, "view_settings": {}})
    assert "No analysis has been run yet" in text


def test_taylor_layer_sums_as_a_block_criterion():
    view = _view(k=2, granularity="layer")
    # Candidates are 2, 3, 4 (Stage 1 = 0, 1; last block frozen); 4 and 2 are least important.
    totals = {"taylor-entropy": [9.0, 9.0, 1.0, 5.0, 0.5, 0.1]}
    (row,) = db.taylor_block_rows(totals, view)
    assert row["criterion"] == "taylor-entropy (layer sum)"
    assert row["pruned"] == [2, 4]
    assert row[f"overlap with {view.criterion}"] == len(set(row["pruned"]) & set(view.pruned))
    assert row[f"Jaccard with {view.baseline}"] == pytest.approx(
        len({2, 4} & set(view.baseline_pruned)) / len({2, 4} | set(view.baseline_pruned)))


def test_export_manifest_matches_the_cli_record_and_carries_measured_figures():
    view = _view(k=2)
    budget = {"rows": [{"criterion": "knn", "k": 2, "perplexity": 9.0},
                       {"criterion": "knn", "k": 3, "perplexity": 12.0}]}
    speed = {"key": "s1", "prefill_ratio": 1.3}
    measured = db.measured_figures(view, budget, speed, "s1")
    assert measured == {"quality_at_k": [budget["rows"][0]], "speed": {"prefill_ratio": 1.3}}
    assert db.measured_figures(view, budget, speed, "other") == {"quality_at_k": [budget["rows"][0]]}
    m = db.export_manifest(view, _profile(), measured)
    # The same fields the CLI export writes (service.manifest_for) ...
    for key in ("source_model", "calibration", "estimator_settings", "granularity", "criterion",
                "s_start", "k", "pruned_blocks", "prune_order", "scores"):
        assert key in m, key
    assert m["pruned_blocks"] == view.pruned and m["scores"] == view.scores
    # ... plus the app's comparison and its measured figures.
    assert m["baseline_pruned"] == view.baseline_pruned
    assert m["measured_in_app"] == measured
