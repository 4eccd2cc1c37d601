"""Small, valid profile records for tests that need a Profile without running a model."""

from __future__ import annotations

from analysis.profile import SCHEMA_VERSION, Profile
from analysis.settings import ESTIMATORS


def profile_json(num_layers: int, *, curve=None, delta_h=None, cosine=None, angular=None,
                 spans=None, spec="tiny", calibration_spec="builtin:licenses") -> dict:
    """A complete profile record. `curve` maps estimator -> L+1 values, `delta_h` maps
    granularity -> estimator -> L values, `cosine` maps granularity -> L values; anything
    not given is a ramp, so every field is present and of the right length. `angular` maps
    granularity -> L values (default: the cosine); `spans` is the [n-1][l] angular span
    table (default: n times the layer blocks' angular at l, for n = 1..min(L, 16))."""
    ramp = [float(i) for i in range(num_layers)]
    curve = {e: list(map(float, (curve or {}).get(e, range(num_layers + 1)))) for e in ESTIMATORS}
    blocks = {}
    for g in ("layer", "attn"):
        given = (delta_h or {}).get(g, {})
        blocks[g] = {"delta_h": {e: [None if v is None else float(v) for v in given.get(e, ramp)]
                                 for e in ESTIMATORS},
                     "cosine": [float(v) for v in (cosine or {}).get(g, ramp)]}
        blocks[g]["angular"] = [float(v) for v in (angular or {}).get(g, blocks[g]["cosine"])]
    if spans is None:
        one = blocks["layer"]["angular"]
        spans = [[n * one[s] for s in range(num_layers - n + 1)]
                 for n in range(1, min(num_layers, 16) + 1)]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"spec": spec, "architecture": "LlamaForCausalLM", "identity": "id-" + spec,
                  "dtype": "float32", "device": "cpu", "num_layers": num_layers},
        "calibration": {"spec": calibration_spec, "samples": 4, "seqlen": 16, "seed": 2024,
                        "fingerprint": "fp", "recipe": {"seed": 2024}},
        "settings": {"bins": 20, "knn_k": 25, "renyi_alpha": 4.0, "skip_first": 1},
        "entropy_curve": curve,
        "attn_entropy": {e: ramp for e in ESTIMATORS},
        "blocks": blocks,
        "angular_spans": spans,
        "s_start": {e: 0 for e in ESTIMATORS},
        "sink": {"max_norm": [[1.0] * 4 for _ in range(2 * num_layers + 1)]},
        "nonfinite_blocks": {"layer": [], "attn": []},
        "warnings": [],
        "seconds": 0.5,
    }


def make_profile(num_layers: int, **kw) -> Profile:
    return Profile.from_json(profile_json(num_layers, **kw))
