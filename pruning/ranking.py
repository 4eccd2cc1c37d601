"""Pruning order of the Stage-2 blocks and the first-K prune set.

Pure decision logic on plain lists / numpy arrays: no model.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

from analysis.errors import EntroDropError
from analysis.settings import SCORES
from pruning.stages import StagePlan

Criterion = str
"""What orders the blocks for pruning, one of:
- a score a profile holds (`SCORES`): an estimator's delta_h (bucket, knn, renyi), the
  cosine importance, or `angular`, the angular distance of one block;
- `angular_span`: at budget K, the K consecutive layers whose angular distance between
  input and output is smallest (layer granularity only);
- `reverse`: the last prunable blocks first;
- `random:<seed>`: a random order (the control), seeded so that it can be repeated;
- `ppl_greedy`: remove, one at a time, the block whose removal raises the perplexity of
  selection windows least (needs the model; `pruning.greedy`).
Every criterion gives per-block scores (lower pruned first) and a prune set at each K, so
decisions, comparisons and quality curves treat them all the same way."""
SPAN: Criterion = "angular_span"
REVERSE: Criterion = "reverse"
GREEDY: Criterion = "ppl_greedy"
RANDOM_PREFIX = "random:"
RANDOM_SEEDS: tuple[int, ...] = (0, 1, 2)
"""The seeds `random` stands for in a list of criteria (three random controls)."""
PROFILE_CRITERIA: tuple[Criterion, ...] = (
    *SCORES, SPAN, REVERSE, *(f"{RANDOM_PREFIX}{seed}" for seed in RANDOM_SEEDS))
"""The criteria a profile decides on its own (no model needed): what the pages offer."""
CRITERIA: tuple[Criterion, ...] = (*PROFILE_CRITERIA, GREEDY)
"""Every named criterion (any `random:<seed>` is valid too)."""
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


def random_seed(criterion: str) -> int | None:
    """The seed of a `random:<seed>` criterion, None for any other criterion."""
    if not isinstance(criterion, str) or not criterion.startswith(RANDOM_PREFIX):
        return None
    text = criterion[len(RANDOM_PREFIX):]
    if not text.isdigit() or int(text) > 2**63 - 1:
        raise RankingError(
            f"a random criterion is random:<seed> with a seed of 0..2^63-1; got {criterion!r}")
    return int(text)


def check_criterion(criterion: object) -> Criterion:
    """Return `criterion` if it names a criterion; RankingError lists the valid names."""
    if isinstance(criterion, str) and (criterion in CRITERIA or random_seed(criterion) is not None):
        return criterion
    raise RankingError(
        f"criterion must be one of {', '.join(CRITERIA)} or random:<seed>; got {criterion!r}")


def expand_criteria(names: str | Sequence[str]) -> list[Criterion]:
    """A list of criteria from a comma-separated string or a sequence; `random` stands for
    random:0, random:1, random:2 (RANDOM_SEEDS) and `all` for every named criterion.
    Repeats are dropped, the first occurrence keeps its place."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[Criterion] = []
    for raw in items:
        name = str(raw).strip()
        if not name:
            continue
        if name == "random":
            expanded = [f"{RANDOM_PREFIX}{seed}" for seed in RANDOM_SEEDS]
        elif name == "all":
            expanded = list(CRITERIA)
        else:
            expanded = [check_criterion(name)]
        out.extend(c for c in expanded if c not in out)
    if not out:
        raise RankingError("the list of criteria is empty; give at least one, e.g. knn,cosine")
    return out


def reverse_scores(num_layers: int) -> list[float]:
    """Score -i for block i: ascending order puts the last block first."""
    return [float(-i) for i in range(num_layers)]


def random_scores(num_layers: int, seed: int) -> list[float]:
    """A random permutation of 0..L-1 as scores, the same for the same (L, seed) on every
    machine (numpy's PCG64 generator); the prunable blocks come out in a uniformly random
    order."""
    return [float(v) for v in np.random.default_rng(seed).permutation(num_layers)]


def best_span(distances: Sequence[float], plan: StagePlan, n: int) -> tuple[int, ...] | None:
    """The n consecutive prunable blocks l..l+n-1 whose span distance distances[l] is the
    smallest (ties to the smallest l; non-finite distances are skipped); () for n = 0 and
    None when no span of n prunable blocks has a finite distance."""
    if n == 0:
        return ()
    prunable = set(plan.prunable)
    best: int | None = None
    for start, d in enumerate(distances):
        if not all(b in prunable for b in range(start, start + n)):
            continue
        if math.isfinite(d) and (best is None or d < distances[best]):
            best = start
    return None if best is None else tuple(range(best, best + n))
