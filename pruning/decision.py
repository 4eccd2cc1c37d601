"""What is pruned and why: the `Decision` every export, manifest, view and CLI command reads.

Pure logic on a `Profile` and a `StagePlan`; no model.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.profile import Profile
from analysis.settings import Granularity
from pruning.ranking import Criterion, prune_order, prune_set, validate_k
from pruning.rankstring import order_to_rank_string
from pruning.stages import StagePlan, max_k


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
    """Every prunable block, first-pruned first."""
    blocks: tuple[int, ...]
    """The first k blocks of `order`: the ones pruned, in pruning order."""

    @property
    def s_start(self) -> int:
        return self.plan.s_start

    @property
    def policy(self) -> str:
        return self.plan.policy

    def rank_string(self) -> str:
        """The research code's rank string: position i holds the RANK of layer i."""
        return order_to_rank_string(list(self.order), self.plan.num_layers)

    def with_k(self, k: int) -> Decision:
        """The same order at another budget (validated against the plan)."""
        order = list(self.order)
        k = validate_k(k, max_k(self.plan), _K_LIMIT)
        return Decision(self.granularity, self.criterion, k, self.plan, self.scores,
                        self.order, tuple(prune_set(order, k)))

    def to_json(self) -> dict:
        return {"granularity": self.granularity, "criterion": self.criterion, "k": self.k,
                "order": list(self.order), "blocks": list(self.blocks),
                "s_start": self.plan.s_start, "policy": self.plan.policy}


_K_LIMIT = "the prunable blocks; at least one block always stays"


def decide(profile: Profile, granularity: Granularity, criterion: Criterion, k: int,
           plan: StagePlan) -> Decision:
    """Rank the plan's prunable blocks by `criterion` and prune the first k."""
    k = validate_k(k, max_k(plan), _K_LIMIT)
    scores = profile.scores(granularity, criterion)
    order = prune_order(scores, plan)
    return Decision(granularity, criterion, k, plan, tuple(scores), tuple(order),
                    tuple(prune_set(order, k)))
