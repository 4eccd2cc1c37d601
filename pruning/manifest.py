"""The contents of `entrodrop.json`, the manifest every export carries.

One builder per kind of export (blocks, width), used by the service for the CLI and the
dashboard alike, so the same settings always write the same manifest. `pruning.export`
adds what the export itself did (layer counts, parameters) and writes the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from analysis.errors import EntroDropError
from analysis.paths import atomic_write_text
from analysis.profile import Profile
from pruning.compare import compare_orders
from pruning.decision import Decision
from pruning.export_target import MANIFEST_NAME

TOOL = "EntroDrop Studio"
RANK_STRING_NOTE = (
    "Rank string in the research code's format: position i holds the RANK of layer i "
    "(0 = pruned first). It is not a list of layer ids."
)


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [v if v == v and abs(v) != float("inf") else None for v in map(float, values)]


def block_manifest(profile: Profile, decision: Decision, baseline: Decision,
                   measured: Mapping | None = None, benchmarks: Mapping | None = None) -> dict:
    """What a block export records: where it came from (model, calibration recipe,
    estimator settings), the decision (criterion and what else made it: a random seed, the
    angular span, the perplexity-greedy search; s_start, k, blocks, full order, scores),
    the baseline criterion's choice at the same k and how the two agree, and any quality
    and speed figures measured for this prune set (`measured`, empty when none were), and
    the lm-eval scores of the pruned model (`benchmarks`, from
    `pruning.benchmarks.manifest_record`; the key is absent when none were run)."""
    c = compare_orders(list(decision.order), list(baseline.order), decision.k)
    record = {
        "tool": TOOL,
        "method": "block",
        "source_model": profile.spec,
        "source_identity": profile.model.get("identity"),
        "calibration": profile.calibration,
        "estimator_settings": profile.settings,
        "granularity": decision.granularity,
        "criterion": decision.criterion,
        "criterion_details": dict(decision.details),
        "policy": decision.policy,
        "s_start": decision.s_start,
        "allow_last": decision.plan.allow_last,
        "frozen": list(decision.plan.frozen),
        "k": decision.k,
        "blocks": list(decision.blocks),
        "order": list(decision.order),
        "scores": _finite_or_none(decision.scores),
        "rank_string": decision.rank_string(),
        "rank_string_format": RANK_STRING_NOTE,
        "baseline": baseline.criterion,
        "baseline_order": list(baseline.order),
        "baseline_blocks": list(baseline.blocks),
        "baseline_rank_string": baseline.rank_string(),
        "comparison": {"overlap": c.overlap, "jaccard": c.jaccard, "kendall_tau": c.kendall_tau,
                       "only_criterion": list(c.only_a), "only_baseline": list(c.only_b)},
        "measured": dict(measured or {}),
    }
    if benchmarks:
        record["benchmarks"] = dict(benchmarks)
    return record


def width_manifest(*, source_model: str, source_identity: str | None, calibration: Mapping,
                   criterion: str, ratio: float, mode: str, layer_importance: Sequence[float],
                   kept_per_layer: Sequence[int], measured: Mapping | None = None) -> dict:
    """What a width export records: source, calibration settings, the neuron criterion,
    the keep ratio and its convention (`mode`), each layer's summed importance and kept
    neuron count, and any figures measured for it."""
    return {
        "tool": TOOL,
        "method": "width",
        "source_model": source_model,
        "source_identity": source_identity,
        "calibration": dict(calibration),
        "criterion": criterion,
        "ratio": ratio,
        "mode": mode,
        "layer_importance": [float(v) for v in layer_importance],
        "kept_per_layer": [int(n) for n in kept_per_layer],
        "measured": dict(measured or {}),
    }


class ManifestError(EntroDropError):
    """An export's `entrodrop.json` is missing or unreadable where one is needed."""


def read_manifest(folder: str | Path) -> dict | None:
    """The `entrodrop.json` of an export folder; None for a folder that has none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{path} does not hold a JSON object")
    return record


def record_benchmarks(folder: str | Path, benchmarks: Mapping) -> Path:
    """Merge lm-eval scores (`pruning.benchmarks.manifest_record`) into an export's
    manifest, atomically: a run with the same settings replaces the earlier one, other
    runs are kept. Returns the manifest's path."""
    record = read_manifest(folder)
    if record is None:
        raise ManifestError(f"{folder} holds no {MANIFEST_NAME}: benchmarks are recorded only "
                            "in exports of this tool")
    new_runs = list(benchmarks.get("runs", []))
    replaced = {json.dumps(r.get("settings"), sort_keys=True) for r in new_runs}
    old = record.get("benchmarks") or {}
    kept = [r for r in old.get("runs", [])
            if json.dumps(r.get("settings"), sort_keys=True) not in replaced]
    record["benchmarks"] = {**dict(benchmarks), "runs": kept + new_runs}
    path = Path(folder) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
