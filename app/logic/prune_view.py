"""One prune choice as the pages show it: the criterion's `Decision` next to the baseline's.

Built from a cached `Profile` through the service's `stage_plan` and `decision`, the same
calls the CLI makes, so no model runs and the UI and the CLI always rank alike.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from analysis.profile import Profile
from analysis.settings import Estimator, Granularity
from entrodrop import service
from pruning.compare import Comparison, compare_orders
from pruning.decision import Decision
from pruning.ranking import BASELINE, Criterion, prune_order, prune_set
from pruning.stages import StagePolicy, max_k


def _from_decision(field: str, *, baseline: bool = False, as_list: bool = False,
                   doc: str | None = None) -> property:
    """A read-only view attribute: `field` of the criterion's decision, or of the baseline's
    with `baseline`; sequences come as fresh lists (`as_list`) so callers cannot alter them."""
    def get(view: PruneView):
        value = getattr(view.baseline_decision if baseline else view.decision, field)
        return list(value) if as_list else value
    return property(get, doc=doc)


@dataclass(frozen=True)
class PruneView:
    """Everything the pages show about one choice of (granularity, criterion, S_start, K):
    the criterion's decision, the baseline's at the same plan and K, and how they agree.
    Both decisions share the plan and K; each list has a `baseline_` twin."""

    decision: Decision
    baseline_decision: Decision
    comparison: Comparison

    granularity = _from_decision("granularity")
    criterion = _from_decision("criterion")
    baseline = _from_decision("criterion", baseline=True, doc="The baseline's criterion.")
    plan = _from_decision("plan")
    k = _from_decision("k")
    scores = _from_decision("scores", as_list=True,
                            doc="The criterion's score of every block 0..L-1 (NaN where unknown).")
    baseline_scores = _from_decision("scores", baseline=True, as_list=True)
    order = _from_decision("order", as_list=True,
                           doc="Prunable blocks of the criterion, first-pruned first.")
    baseline_order = _from_decision("order", baseline=True, as_list=True)
    blocks = _from_decision("blocks", as_list=True,
                            doc="The first k blocks of `order`, in pruning order.")
    baseline_blocks = _from_decision("blocks", baseline=True, as_list=True)

    @property
    def max_k(self) -> int:
        return max_k(self.plan)

    def rank_string(self, baseline: bool = False) -> str:
        return (self.baseline_decision if baseline else self.decision).rank_string()


def build_view(profile: Profile, *, granularity: Granularity, criterion: Criterion,
               policy: StagePolicy, s_start: int | None, allow_last: bool, k: int,
               baseline: Criterion = BASELINE,
               stage_estimator: Estimator = service.DEFAULT_STAGE_ESTIMATOR) -> PruneView:
    """Rankings of a cached profile: no model is run. K must fit the plan."""
    plan = service.stage_plan(profile, policy=policy, s_start=s_start, allow_last=allow_last,
                              stage_estimator=stage_estimator)
    chosen = service.decision(profile, granularity, criterion, k, plan)
    base = service.decision(profile, granularity, baseline, k, plan)
    return PruneView(chosen, base, compare_orders(list(chosen.order), list(base.order), k))


def block_stage(view: PruneView, block: int) -> str:
    if block < view.plan.s_start:
        return "stage 1"
    return "prunable" if block in view.plan.prunable else "frozen"


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def ranking_rows(view: PruneView) -> list[dict]:
    """Side-by-side ranked lists: row r holds the r-th block of each order (rank 0 first)."""
    both = set(view.blocks) & set(view.baseline_blocks)
    rows = []
    for rank, (a, b) in enumerate(zip(view.order, view.baseline_order, strict=True)):
        rows.append({
            "rank": rank,
            "block": a,
            "score": _finite(view.scores[a]),
            "pruned": rank < view.k,
            "baseline_block": b,
            "baseline_score": _finite(view.baseline_scores[b]),
            "baseline_pruned": rank < view.k,
            "same_block": a == b,
            "in_both_sets": rank < view.k and a in both,
            "baseline_in_both_sets": rank < view.k and b in both,
        })
    return rows


def block_rows(view: PruneView) -> list[dict]:
    """One row per block 0..L-1, for CSV export."""
    rank_a = {b: r for r, b in enumerate(view.order)}
    rank_b = {b: r for r, b in enumerate(view.baseline_order)}
    rows = []
    for block in range(view.plan.num_layers):
        rows.append({
            "block": block,
            "stage": block_stage(view, block),
            f"{view.criterion}_score": _finite(view.scores[block]),
            f"{view.criterion}_rank": rank_a.get(block),
            f"{view.criterion}_pruned": block in view.blocks,
            f"{view.baseline}_score": _finite(view.baseline_scores[block]),
            f"{view.baseline}_rank": rank_b.get(block),
            f"{view.baseline}_pruned": block in view.baseline_blocks,
        })
    return rows


def rows_to_csv(rows: Sequence[Mapping]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def view_to_json(view: PruneView, profile: Profile) -> dict:
    """The prune list as a JSON record: first the criterion's record exactly as the CLI's
    `prune-list` prints it for the same settings (`service.prune_list_record`, with its
    criterion details), then what the CLI's caller already knows (model, calibration,
    estimator settings, allow_last, frozen blocks) and the baseline's choice at the same
    plan and K, with how the two agree."""
    c = view.comparison
    return {
        **service.prune_list_record(view.decision),
        "model": profile.spec,
        "calibration": profile.calibration.get("spec"),
        "settings": profile.settings,
        "allow_last": view.plan.allow_last,
        "frozen": list(view.plan.frozen),
        "baseline": view.baseline,
        "baseline_order": view.baseline_order,
        "baseline_blocks": view.baseline_blocks,
        "baseline_rank_string": view.rank_string(baseline=True),
        "comparison": {"overlap": c.overlap, "jaccard": c.jaccard, "kendall_tau": c.kendall_tau,
                       "only_criterion": list(c.only_a), "only_baseline": list(c.only_b)},
    }


def taylor_block_rows(layer_totals: Mapping[str, Sequence[float]], view: PruneView) -> list[dict]:
    """The per-layer sum of neuron importance as a block criterion (least important layer
    pruned first), under the view's stage plan, compared at K with the view's two orders."""
    rows = []
    for criterion, totals in layer_totals.items():
        order = prune_order([float(v) for v in totals], view.plan)
        pruned = prune_set(order, view.k)
        row = {"criterion": f"{criterion} (layer sum)", "pruned": sorted(pruned)}
        for name, other in ((view.criterion, view.order), (view.baseline, view.baseline_order)):
            c = compare_orders(order, other, view.k)
            row[f"overlap with {name}"] = c.overlap
            row[f"Jaccard with {name}"] = c.jaccard
            row[f"Kendall tau with {name}"] = c.kendall_tau
        rows.append(row)
    return rows


def block_list(blocks: Iterable[int]) -> str:
    """Blocks as the pages write them: ascending, comma-separated, 'none' for no block."""
    return ", ".join(map(str, sorted(blocks))) or "none"
