"""Pruning order of the Stage-2 blocks and the first-K prune set.

Pure decision logic on plain lists / numpy arrays: no model.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from analysis.errors import EntroDropError
from analysis.settings import SCORES, Score
from pruning.stages import StagePlan

Criterion = Score
"""What orders the blocks for pruning. Today every criterion is a score a profile holds:
an estimator's delta_h (bucket, knn, renyi) or the cosine importance."""
CRITERIA: tuple[Criterion, ...] = SCORES
BASELINE: Criterion = "cosine"
"""The criterion every other is compared with (ShortGPT for layers, LLMDrop for attn)."""


class RankingError(EntroDropError):
    """Invalid scores, profile or budget; the message says what was wrong and what to do."""


def prune_order(scores: Sequence[float], plan: StagePlan) -> list[int]:
    """Full pruning order of the plan's prunable blocks, first-pruned first.

    `scores` has one value per block (length plan.num_layers; frozen blocks' values are
    ignored). Blocks are sorted by ascending score, ties broken by ascending block index.
    This holds for dH (entropy criteria) and for cosine importance alike. Non-finite scores
    (NaN, +inf, -inf) mean the score is unknown, so those blocks go after all finite ones,
    among themselves by block index.
    """
    if len(scores) != plan.num_layers:
        raise RankingError(
            f"scores must have one value per block (num_layers = {plan.num_layers}); "
            f"got {len(scores)}"
        )
    try:
        values = [float(v) for v in scores]
    except (TypeError, ValueError):
        raise RankingError("scores must be numbers") from None

    def key(block: int) -> tuple[bool, float, int]:
        v = values[block]
        finite = math.isfinite(v)
        return (not finite, v if finite else 0.0, block)

    return sorted(plan.prunable, key=key)


def prune_set(order: Sequence[int], k: int) -> list[int]:
    """The first k blocks of `order` (0 <= k <= len(order)), in pruning order."""
    blocks = block_list(order, "order")
    k = validate_k(k, len(blocks), "the number of prunable blocks")
    return blocks[:k]


def validate_k(k: object, limit: int, what: str) -> int:
    """Return k as an int if it is an integer in 0..limit; `what` names the limit in errors."""
    if isinstance(k, bool):
        raise RankingError(f"k must be an integer; got {k!r}")
    try:
        k = operator.index(k)  # accepts numpy integers, rejects floats
    except TypeError:
        raise RankingError(f"k must be an integer; got {k!r}") from None
    if not 0 <= k <= limit:
        raise RankingError(f"k must be between 0 and {limit} ({what}); got {k}")
    return k


def block_list(blocks: Sequence[int], name: str) -> list[int]:
    """Validate a sequence of distinct non-negative block indices and return it as ints."""
    out: list[int] = []
    for b in blocks:
        if isinstance(b, bool):
            raise RankingError(f"{name} must hold block indices (integers); got {b!r}")
        try:
            i = operator.index(b)
        except TypeError:
            raise RankingError(f"{name} must hold block indices (integers); got {b!r}") from None
        if i < 0:
            raise RankingError(f"{name} holds a negative block index: {i}")
        out.append(i)
    if len(set(out)) != len(out):
        dupes = sorted({b for b in out if out.count(b) > 1})
        raise RankingError(f"{name} repeats block(s) {dupes}; each block may appear once")
    return out
