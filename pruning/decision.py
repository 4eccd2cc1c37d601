"""What is pruned and why: the `Decision` every export, manifest, view and CLI command reads.

Pure logic on a `Profile` and a `StagePlan` (and, for `ppl_greedy`, a `GreedyResult`); no
model. Every criterion becomes the same object: per-block scores, a full order of the
prunable blocks, and the prune set at each K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.profile import Profile
from analysis.settings import SCORES, Granularity
from pruning.greedy import GreedyResult
from pruning.ranking import (
    GREEDY,
    REVERSE,
    SPAN,
    Criterion,
    RankingError,
    best_span,
    check_criterion,
    prune_order,
    prune_set,
    random_scores,
    random_seed,
    reverse_scores,
    validate_k,
)
from pruning.rankstring import order_to_rank_string
from pruning.stages import StagePlan, max_k

SPAN_AT_ATTN = (
    "at attn, angular_span takes spans of one attention sub-block, so its order is the "
    "angular one: removing several attention sub-blocks keeps the MLPs between them, and "
    "the distance between the residual stream before and after such a span does not "
    "measure what the removal takes out")


@dataclass(frozen=True)
class Decision:
    """One criterion's pruning order under one stage plan, and its first k blocks."""

    granularity: Granularity
    criterion: Criterion
    k: int
    """The budget: how many blocks are pruned."""
    plan: StagePlan
    """S_start, the stage policy, and which blocks may be pruned."""
    scores: tuple[float, ...]
    """The criterion's score of every block 0..L-1 (NaN where unknown); lower is pruned first."""
    order: tuple[int, ...]
    """Every prunable block, first-pruned first. For criteria whose prune sets are not
    nested (angular_span) it is the order at this k: the k pruned blocks, then the rest by
    score."""
    blocks: tuple[int, ...]
    """The first k blocks of `order`: the ones pruned, in pruning order."""
    sets: tuple[tuple[int, ...], ...] | None = None
    """The prune set at each K = 0..max_k when the sets are not the first K blocks of one
    order (angular_span); None otherwise."""
    limit: int | None = None
    """The largest K the criterion decides (None: every prunable block). angular_span
    stops at the longest span a profile holds, ppl_greedy at the steps it ran."""
    details: dict = field(default_factory=dict)
    """What made the order besides the profile: the seed (random), the span and its
    distance (angular_span), the search's figures (ppl_greedy). JSON-safe."""

    @property
    def s_start(self) -> int:
        return self.plan.s_start

    @property
    def policy(self) -> str:
        return self.plan.policy

    @property
    def max_k(self) -> int:
        """The largest budget this criterion decides, never all L blocks (stages.max_k)."""
        own = len(self.order) if self.limit is None else self.limit
        return min(own, max_k(self.plan))

    def rank_string(self) -> str:
        """The research code's rank string: position i holds the RANK of layer i."""
        return order_to_rank_string(list(self.order), self.plan.num_layers)

    def prune_set_at(self, k: int) -> list[int]:
        """The blocks this criterion prunes at budget k, in pruning order."""
        k = validate_k(k, max_k(self.plan), _K_LIMIT)
        k = validate_k(k, self.max_k, f"the largest K that {self.criterion} decides")
        if self.sets is not None:
            return list(self.sets[k])
        return prune_set(list(self.order), k)

    def prune_sets(self) -> dict[int, list[int]]:
        """{K: prune set} for K = 0..max_k: what quality curves evaluate."""
        return {k: self.prune_set_at(k) for k in range(self.max_k + 1)}

    def with_k(self, k: int) -> Decision:
        """The same criterion at another budget (validated against the plan)."""
        blocks = self.prune_set_at(k)
        order = self.order
        if self.sets is not None:
            order = _set_first(blocks, self.scores, self.plan)
        return Decision(self.granularity, self.criterion, k, self.plan, self.scores,
                        tuple(order), tuple(blocks), self.sets, self.limit,
                        _span_details(self, blocks) if self.sets is not None else self.details)

    def to_json(self) -> dict:
        out = {"granularity": self.granularity, "criterion": self.criterion, "k": self.k,
               "order": list(self.order), "blocks": list(self.blocks),
               "s_start": self.plan.s_start, "policy": self.plan.policy}
        if self.details:
            out["criterion_details"] = self.details
        return out


def criterion_scores(profile: Profile, granularity: Granularity, criterion: Criterion, *,
                     greedy: GreedyResult | None = None) -> list[float]:
    """Per-block scores (length L, lower pruned first) of any criterion. angular_span's
    per-block score is the one-block angular distance (its spans are in `decide`; at attn
    a span is one attention sub-block, see SPAN_AT_ATTN)."""
    criterion = check_criterion(criterion)
    L = profile.num_layers
    if criterion in SCORES:
        return profile.scores(granularity, criterion)
    if criterion == SPAN:
        return profile.scores(granularity, "angular")
    if criterion == REVERSE:
        return reverse_scores(L)
    if criterion == GREEDY:
        if greedy is None:
            raise RankingError(
                "ppl_greedy needs the model: run the perplexity-greedy search first "
                "(service.greedy_search; CLI: --criteria ppl_greedy on evaluate/prune-list)")
        if greedy.granularity != granularity:
            raise RankingError(
                f"the perplexity-greedy search ran on {greedy.granularity} blocks, not "
                f"{granularity}; run it for {granularity}")
        return greedy.scores(L)
    return random_scores(L, random_seed(criterion))


_K_LIMIT = "the prunable blocks; at least one block always stays"


def decide(profile: Profile, granularity: Granularity, criterion: Criterion, k: int,
           plan: StagePlan, *, greedy: GreedyResult | None = None) -> Decision:
    """Rank the plan's prunable blocks by `criterion` and prune the first k (for
    angular_span: the best span of k layers)."""
    k = validate_k(k, max_k(plan), _K_LIMIT)
    scores = criterion_scores(profile, granularity, criterion, greedy=greedy)
    order = prune_order(scores, plan)
    details: dict = {}
    if criterion == GREEDY:
        if tuple(greedy.candidates) != tuple(plan.prunable):
            raise RankingError(
                f"the perplexity-greedy search ran over blocks {list(greedy.candidates)}, but "
                f"this stage plan may prune {list(plan.prunable)}; run it for this plan")
        details = {"search": greedy.to_json()}
        d = Decision(granularity, criterion, 0, plan, tuple(scores), tuple(order), (),
                     limit=greedy.steps, details=details)
        return d.with_k(k)
    if criterion == SPAN and granularity != "layer":
        return Decision(granularity, criterion, k, plan, tuple(scores), tuple(order),
                        tuple(prune_set(order, k)), details={"note": SPAN_AT_ATTN})
    if criterion == SPAN:
        sets: list[tuple[int, ...]] = []
        for n in range(min(len(plan.prunable), len(profile.angular_spans)) + 1):
            span = best_span(profile.span_distances(n), plan, n) if n else ()
            if span is None:
                break
            sets.append(span)
        d = Decision(granularity, criterion, 0, plan, tuple(scores), tuple(order), (),
                     sets=tuple(sets), limit=len(sets) - 1,
                     details={"span_distances": [
                         [v if math.isfinite(v) else None for v in profile.span_distances(n)]
                         for n in range(1, len(sets))]})
        if k > d.max_k:
            raise RankingError(
                f"angular_span decides K up to {d.max_k}: the profile holds spans of at most "
                f"{len(profile.angular_spans)} layers and the plan has {len(plan.prunable)} "
                f"prunable blocks; got K = {k}")
        return d.with_k(k)
    seed = random_seed(criterion)
    if seed is not None:
        details = {"seed": seed, "generator": "numpy.random.default_rng(seed).permutation(L)"}
    return Decision(granularity, criterion, k, plan, tuple(scores), tuple(order),
                    tuple(prune_set(order, k)), details=details)


def _set_first(blocks: list[int], scores, plan: StagePlan) -> list[int]:
    rest = [b for b in prune_order(scores, plan) if b not in blocks]
    return [*blocks, *rest]


def _span_details(d: Decision, blocks: list[int]) -> dict:
    """Where the span at this k starts and its distance; the full table stays in `details`
    only once (under span_distances)."""
    table = d.details.get("span_distances", [])
    out = {"span_distances": table}
    if blocks:
        n, start = len(blocks), min(blocks)
        out.update(span_start=start, span_length=n, span_distance=table[n - 1][start])
    return out
