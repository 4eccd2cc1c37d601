"""Compare pruning orders: overlap at a budget K, Kendall tau, agreement across runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from pruning.decision import Decision
from pruning.ranking import RankingError, block_list, validate_k


@dataclass(frozen=True)
class Comparison:
    """Two pruning orders compared at budget k.

    A_k, B_k are the first k blocks of each order. only_a, only_b and common are sorted by
    block index (not by pruning order).
    """

    k: int
    overlap: int
    """|A_k ∩ B_k|."""
    jaccard: float
    """|A_k ∩ B_k| / |A_k ∪ B_k|; 1.0 when both sets are empty (k = 0)."""
    kendall_tau: float | None
    """Kendall tau of the two full orders over their common candidates (independent of k);
    None when they share fewer than 2 blocks."""
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    common: tuple[int, ...]


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two block sets; defined as 1.0 when both are empty."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def kendall_tau(order_a: Sequence[int], order_b: Sequence[int]) -> float | None:
    """Kendall tau between two orders, over the blocks present in both.

    Each order is restricted to the common blocks C (n = |C|); for every pair x, y in C the
    pair is concordant when both orders put x and y the same way round, discordant otherwise.
    tau = (concordant - discordant) / (n (n - 1) / 2). Orders are permutations, so there are
    no ties and tau-a equals tau-b. O(n^2), fine for n up to a few hundred. None if n < 2.
    """
    a = block_list(order_a, "order_a")
    b = block_list(order_b, "order_b")
    common = set(a) & set(b)
    pos_a = {blk: i for i, blk in enumerate(x for x in a if x in common)}
    pos_b = {blk: i for i, blk in enumerate(x for x in b if x in common)}
    items = sorted(common)
    n = len(items)
    if n < 2:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = items[i], items[j]
            same = (pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y])
            score += 1 if same else -1
    return score / (n * (n - 1) / 2)


def compare_orders(order_a: Sequence[int], order_b: Sequence[int], k: int) -> Comparison:
    """Compare two pruning orders at budget k (0 <= k <= min(len(order_a), len(order_b)))."""
    a = block_list(order_a, "order_a")
    b = block_list(order_b, "order_b")
    k = validate_k(k, min(len(a), len(b)), "the length of the shorter order")
    set_a, set_b = set(a[:k]), set(b[:k])
    return Comparison(
        k=k,
        overlap=len(set_a & set_b),
        jaccard=jaccard(list(set_a), list(set_b)),
        kendall_tau=kendall_tau(a, b),
        only_a=tuple(sorted(set_a - set_b)),
        only_b=tuple(sorted(set_b - set_a)),
        common=tuple(sorted(set_a & set_b)),
    )


class Agreement(TypedDict):
    """Agreement between named prune sets (e.g. one per calibration set)."""

    names: list[str]
    jaccard: list[list[float]]
    """jaccard[i][j] between sets names[i] and names[j]; symmetric, diagonal 1.0."""
    counts: dict[int, int]
    """block -> number of sets that pick it (only blocks picked at least once)."""
    picked_by_all: list[int]
    picked_by_majority: list[int]
    """Blocks picked by strictly more than half of the sets (with 2 sets: by both)."""


def agreement_matrix(sets: Mapping[str, Sequence[int]]) -> Agreement:
    """Pairwise Jaccard between named prune sets, plus the blocks picked by all / a majority.

    Names keep the mapping's order; block lists in the result are ascending.
    """
    if not sets:
        raise RankingError("agreement_matrix needs at least one named prune set")
    names = list(sets)
    blocks = {name: set(block_list(sets[name], f"prune set {name!r}")) for name in names}
    matrix = [[jaccard(list(blocks[p]), list(blocks[q])) for q in names] for p in names]
    counts: dict[int, int] = {}
    for chosen in blocks.values():
        for blk in chosen:
            counts[blk] = counts.get(blk, 0) + 1
    n = len(names)
    return Agreement(
        names=names,
        jaccard=matrix,
        counts=dict(sorted(counts.items())),
        picked_by_all=sorted(b for b, c in counts.items() if c == n),
        picked_by_majority=sorted(b for b, c in counts.items() if 2 * c > n),
    )


class CriteriaTable(TypedDict):
    """Every pair of criteria compared at one budget k (what `prune-list --criteria` prints)."""

    k: int
    criteria: list[str]
    prune_sets: dict[str, list[int]]
    """criterion -> its prune set at k, ascending."""
    overlap: list[list[int]]
    """overlap[i][j] = |A_k ∩ B_k| of criteria[i] and criteria[j]; the diagonal is k."""
    jaccard: list[list[float]]
    kendall_tau: list[list[float | None]]
    """Kendall tau of the two full orders (at k, for criteria whose order depends on k)."""


def criteria_table(decisions: Mapping[str, Decision], k: int) -> CriteriaTable:
    """Overlaps, Jaccard and Kendall tau at budget k between every two decisions (same
    granularity and plan), named by the mapping's keys. k must be one every criterion
    decides (angular_span and ppl_greedy may stop before the last prunable block)."""
    if not decisions:
        raise RankingError("criteria_table needs at least one decision")
    names = list(decisions)
    limit = min(d.max_k for d in decisions.values())
    k = validate_k(k, limit, "the largest K every criterion decides")
    at_k = {name: d.with_k(k) for name, d in decisions.items()}
    grid = [[compare_orders(list(at_k[a].order), list(at_k[b].order), k) for b in names]
            for a in names]
    return CriteriaTable(
        k=k, criteria=names,
        prune_sets={n: sorted(at_k[n].blocks) for n in names},
        overlap=[[c.overlap for c in row] for row in grid],
        jaccard=[[c.jaccard for c in row] for row in grid],
        kendall_tau=[[c.kendall_tau for c in row] for row in grid],
    )
