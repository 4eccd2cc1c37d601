import json
import math

import numpy as np
import pytest

from analysis.profile import SCHEMA_VERSION, Profile, ProfileFormatError, auto_s_start_of
from tests.profiles import make_profile, profile_json

L = 6


def _record():
    return profile_json(
        L,
        curve={"bucket": [9.0, 8.0, 7.0, 7.5, 8.0, 8.5, 9.0]},
        delta_h={"layer": {"bucket": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "knn": [6, 5, 4, 3, 2, 1]},
                 "attn": {"knn": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}},
        cosine={"layer": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]},
    )


def test_scores_reads_the_right_entries():
    p = Profile.from_json(_record())
    assert p.scores("layer", "bucket") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert p.scores("layer", "knn") == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert p.scores("layer", "cosine") == [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    got = p.scores("attn", "knn")
    assert got == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and all(type(v) is float for v in got)


def test_null_scores_and_curve_points_read_as_nan():
    record = _record()
    record["blocks"]["attn"]["delta_h"]["renyi"][2] = None
    record["entropy_curve"]["knn"][0] = None
    p = Profile.from_json(record)
    assert math.isnan(p.scores("attn", "renyi")[2]) and p.to_json()["blocks"]["attn"]["delta_h"]["renyi"][2] is None
    assert math.isnan(p.curve("knn")[0]) and p.curve("knn")[1] == 1.0


def test_from_json_names_what_is_missing():
    record = _record()
    del record["blocks"]["layer"]["delta_h"]["renyi"]
    with pytest.raises(ProfileFormatError, match=r"'renyi'.*rerun the analysis"):
        Profile.from_json(record)
    record = _record()
    del record["blocks"]["attn"]
    with pytest.raises(ProfileFormatError, match=r"'attn'"):
        Profile.from_json(record)
    with pytest.raises(ProfileFormatError, match="schema None"):
        Profile.from_json({})
    with pytest.raises(ProfileFormatError, match="must be a JSON object"):
        Profile.from_json([1, 2])


def test_from_json_rejects_wrong_lengths_and_types():
    record = _record()
    record["blocks"]["layer"]["cosine"] = [0.1, 0.2]
    with pytest.raises(ProfileFormatError, match="expected 6 values, got 2"):
        Profile.from_json(record)
    record = _record()
    record["entropy_curve"]["bucket"] = ["a"] * (L + 1)
    with pytest.raises(ProfileFormatError, match="malformed"):
        Profile.from_json(record)


def test_from_json_rejects_another_schema_version():
    record = _record()
    record["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ProfileFormatError, match=f"schema {SCHEMA_VERSION + 1}.*rerun"):
        Profile.from_json(record)


def test_json_round_trip_is_exact_and_plain_json():
    p = make_profile(L, delta_h={"layer": {"knn": [None, 1.5, -2.0, 3.0, 0.0, 1e-9]}})
    text = json.dumps(p.to_json(), allow_nan=False)
    again = Profile.from_json(json.loads(text))
    assert again == p
    assert again.to_json() == p.to_json()


def test_scores_rejects_unknown_granularity_and_criterion():
    p = Profile.from_json(_record())
    with pytest.raises(ProfileFormatError, match="granularity must be one of"):
        p.scores("mlp", "bucket")
    with pytest.raises(ProfileFormatError, match="criterion must be one of"):
        p.scores("layer", "entropy")


@pytest.mark.parametrize("curve, expected", [
    ([9.0, 8.0, 7.0, 7.5, 8.0, 8.5, 9.0], 2),       # minimum inside the first half
    ([9.0, 8.0, 8.5, 9.0, 1.0, 0.5, 0.1], 1),       # lower points in the second half ignored
    ([None, math.nan, 5.0, 5.0, 1.0, 1.0, 1.0], 2),  # null/NaN skipped, ties to smallest j
    ([None, math.inf, None, 0.0, 0.0, 0.0, 0.0], 3),
    ([None, None, None, None, 0.0, 0.0, 0.0], None),
    ([1.0], None),
])
def test_auto_s_start_of_is_the_first_half_minimum(curve, expected):
    assert auto_s_start_of(curve) == expected


def test_angular_scores_and_spans_are_read_from_the_record():
    spans = [[0.1 * (n + 1) + 0.01 * i for i in range(L - n)] for n in range(L)]
    p = make_profile(L, angular={"layer": spans[0], "attn": [0.5] * L}, spans=spans)
    assert p.scores("layer", "angular") == spans[0]
    assert p.scores("attn", "angular") == [0.5] * L
    assert p.span_distances(3) == spans[2] and len(p.span_distances(L)) == 1
    with pytest.raises(ProfileFormatError, match=f"spans of 1..{L} layers; got n = {L + 1}"):
        p.span_distances(L + 1)


def test_a_schema_1_record_without_angular_distances_is_refused_with_a_reason():
    record = _record()
    record["schema_version"] = 1
    del record["angular_spans"]
    with pytest.raises(ProfileFormatError, match="schema 1 is not 2.*angular.*rerun"):
        Profile.from_json(record)


def test_cache_key_changes_with_the_schema_version(monkeypatch):
    from analysis import profile as profile_module
    parts = {"model": "m", "calibration": "c"}
    new = profile_module.profile_key(parts)
    monkeypatch.setattr(profile_module, "SCHEMA_VERSION", 1)
    assert profile_module.profile_key(parts) != new
