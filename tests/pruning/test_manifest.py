import json

from pruning.decision import decide
from pruning.manifest import RANK_STRING_NOTE, block_manifest, width_manifest
from pruning.stages import plan_stages
from tests.profiles import make_profile

L = 6


def test_block_manifest_records_source_decision_baseline_and_measurements():
    profile = make_profile(L, delta_h={"layer": {"knn": [0.5, 0.4, 0.3, 0.1, 0.2, 0.0]}},
                           cosine={"layer": [0.9, 0.8, 0.1, 0.6, 0.5, 0.4]}, spec="demo:x")
    plan = plan_stages(L, policy="manual", s_start=2)  # prunable 2, 3, 4
    chosen = decide(profile, "layer", "knn", 2, plan)
    baseline = decide(profile, "layer", "cosine", 2, plan)
    m = block_manifest(profile, chosen, baseline, {"speed": {"prefill_ratio": 1.2}})
    assert m["method"] == "block" and m["source_model"] == "demo:x"
    assert m["source_identity"] == "id-demo:x" and m["calibration"] == profile.calibration
    assert m["estimator_settings"] == profile.settings
    assert (m["granularity"], m["criterion"], m["k"], m["s_start"]) == ("layer", "knn", 2, 2)
    assert m["blocks"] == [3, 4] and m["order"] == [3, 4, 2]
    assert m["scores"] == [0.5, 0.4, 0.3, 0.1, 0.2, 0.0]
    assert m["baseline"] == "cosine" and m["baseline_blocks"] == [2, 4]
    assert m["comparison"]["overlap"] == 1 and m["comparison"]["only_criterion"] == [3]
    assert m["frozen"] == [0, 1, 5] and m["rank_string_format"] == RANK_STRING_NOTE
    assert m["measured"] == {"speed": {"prefill_ratio": 1.2}}
    json.dumps(m, allow_nan=False)


def test_block_manifest_writes_unknown_scores_as_null():
    profile = make_profile(L, delta_h={"attn": {"knn": [0.5, None, 0.3, 0.1, 0.2, 0.0]}})
    plan = plan_stages(L, policy="manual", s_start=0)
    d = decide(profile, "attn", "knn", 1, plan)
    m = block_manifest(profile, d, decide(profile, "attn", "cosine", 1, plan))
    assert m["scores"][1] is None and m["measured"] == {}
    json.dumps(m, allow_nan=False)


def test_width_manifest_records_the_convention_and_kept_counts():
    m = width_manifest(source_model="demo:x", source_identity="id", calibration={"spec": "c"},
                       criterion="taylor-entropy", ratio=0.8, mode="per_layer",
                       layer_importance=[1.0, 2.5], kept_per_layer=[460, 460])
    assert m["method"] == "width" and m["ratio"] == 0.8 and m["mode"] == "per_layer"
    assert m["kept_per_layer"] == [460, 460] and m["layer_importance"] == [1.0, 2.5]
    assert m["measured"] == {}
