"""The research code's rank string: position i holds the RANK of layer i.

It is NOT a list of layer ids. For the pruning order [2, 0, 1] (layer 2 pruned first), the
rank string is "1,2,0": layer 0 has rank 1, layer 1 rank 2, layer 2 rank 0.

Format: comma-separated, 0-based integer ranks, one per layer 0..L-1 (spaces around items
and one pair of surrounding square brackets are tolerated when reading). The research code
ranks every layer, so the string always covers all L layers: the prunable blocks take ranks
0..len(order)-1 in pruning order, then the blocks not in the order (the frozen ones) take
the remaining ranks in ascending layer index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from analysis.errors import EntroDropError
from pruning.ranking import RankingError, block_list

_INT = re.compile(r"[+-]?[0-9]+")


class RankStringError(EntroDropError):
    """A malformed rank string or order; the message says what was wrong."""


def order_to_rank_string(order: Sequence[int], num_layers: int) -> str:
    """Write a pruning order (layer ids, first-pruned first) as a rank string over all layers.

    rank[layer] = position of `layer` in order + [layers not in order, ascending].
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise RankStringError(f"num_layers must be a positive integer; got {num_layers!r}")
    try:
        ids = block_list(order, "order")
    except RankingError as err:
        raise RankStringError(str(err)) from None
    outside = [b for b in ids if b >= num_layers]
    if outside:
        raise RankStringError(
            f"order holds layer(s) {outside} outside 0..{num_layers - 1} (num_layers={num_layers})"
        )
    in_order = set(ids)
    full = ids + [b for b in range(num_layers) if b not in in_order]
    ranks = [0] * num_layers
    for rank, layer in enumerate(full):
        ranks[layer] = rank
    return ",".join(str(r) for r in ranks)


def rank_string_to_order(s: str, num_layers: int | None = None) -> list[int]:
    """Read a rank string and return the full order of all L layers (layer ids, rank 0 first).

    The result covers every layer, frozen ones included (they sit at the tail when the string
    was written by order_to_rank_string); keep only plan.prunable to get a pruning order.
    If `num_layers` is given, the string must have exactly that many ranks. The ranks must be
    a permutation of 0..L-1.
    """
    if not isinstance(s, str):
        raise RankStringError(f"rank string must be a str; got {type(s).__name__}")
    text = s.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if not text:
        raise RankStringError("rank string is empty; expected comma-separated ranks like '1,2,0'")
    ranks: list[int] = []
    for pos, item in enumerate(text.split(",")):
        item = item.strip()
        if not _INT.fullmatch(item):
            raise RankStringError(
                f"rank string item {pos} is {item!r}, not an integer; expected comma-separated "
                "0-based ranks like '1,2,0'"
            )
        ranks.append(int(item))
    n = len(ranks)
    if num_layers is not None and n != num_layers:
        raise RankStringError(
            f"rank string has {n} ranks but the model has {num_layers} layers; "
            "it must hold one rank per layer"
        )
    if sorted(ranks) != list(range(n)):
        missing = sorted(set(range(n)) - set(ranks))
        extra = sorted({r for r in ranks if not 0 <= r < n or ranks.count(r) > 1})
        raise RankStringError(
            f"rank string is not a permutation of 0..{n - 1}: missing {missing}, "
            f"repeated or out of range {extra}"
        )
    order = [0] * n
    for layer, rank in enumerate(ranks):
        order[rank] = layer
    return order
