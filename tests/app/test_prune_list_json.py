"""The Prune list page's JSON download and `entrodrop prune-list` write the same record for
the same settings (app/logic/prune_view.view_to_json, entrodrop.service.prune_list_record)."""

from __future__ import annotations

import json

import pytest

from app.logic.prune_view import view_to_json
from tests.entrodrop.cli.support import run_cli


@pytest.mark.parametrize("granularity, criterion", [("layer", "angular_span"),
                                                    ("attn", "random:1")])
def test_prune_list_json_of_the_app_holds_the_cli_record_with_its_criterion_details(
        ui, app_dirs, tiny_model_dir, granularity, criterion):
    at = ui.analysed(seed=61)
    at.selectbox(key="granularity").set_value(granularity).run()
    at.selectbox(key="criterion").set_value(criterion).run()
    at.slider(key="k").set_value(2).run()
    at.switch_page("views/prune_list.py").run()
    ui.assert_clean(at)
    ss = at.session_state
    record = ss["analysis"]
    # What the page's JSON button downloads: json.dumps(view_to_json(view, profile)).
    app = json.loads(json.dumps(view_to_json(ss["_view"], record.runs[int(ss["run_index"])])))

    cal = record.request.calibrations[0]
    est = record.request.estimators
    cli = run_cli(["--quiet", "prune-list", "--model", str(tiny_model_dir), "--device", "cpu",
                   "--calibration", cal.spec, "--samples", str(cal.samples),
                   "--seqlen", str(cal.seqlen), "--seed", str(cal.seed),
                   "--bins", str(est.bins), "--knn-k", str(est.knn_k),
                   "--renyi-alpha", str(est.renyi_alpha), "--skip-first", str(est.skip_first),
                   "--batch-size", str(est.batch_size), "--granularity", granularity,
                   "--criterion", criterion, "--k", "2", "--policy", ss["stage_policy"],
                   "--stage-estimator", ss["stage_estimator"]], app_dirs["cache"])
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    assert expected["criterion_details"] and expected["blocks"] == ss["_view"].blocks
    assert {key: app.get(key) for key in expected} == expected
    # The app adds what the CLI's caller already knows, and the baseline's choice.
    assert app["model"] == str(tiny_model_dir) and app["baseline"] == "cosine"
