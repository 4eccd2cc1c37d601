"""Stage 1 / Stage 2 split and the set of blocks that may be pruned.

Pure decision logic on plain lists: no model, cheap enough to rerun on every UI change.
Layer indices are 0-based; a model with L decoder layers has blocks 0..L-1 and an entropy
curve H(Z_j) with L+1 points, j = 0..L (Z_0 is the embedding output).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from analysis.errors import EntroDropError
from analysis.profile import auto_s_start_of

StagePolicy = Literal["auto", "reference", "manual"]
"""auto: S_start from the entropy curve; reference: the research code's fixed frozen blocks
0, 1 and L-1; manual: the user's S_start."""
STAGE_POLICIES: tuple[StagePolicy, ...] = ("auto", "reference", "manual")

# The research code freezes these blocks (plus the last one) and detects nothing.
REFERENCE_FROZEN_HEAD = 2


class StageError(EntroDropError):
    """Invalid input to the stage planner; the message says what was wrong and what to do."""


def auto_s_start(curve: Sequence[float]) -> int:
    """Automatic S_start: j* = argmin_j H(Z_j) over the first half of the depth.

    `curve` holds H(Z_j) for j = 0..L (length L+1, L >= 1). The searched indices are
    j = 0, 1, ..., floor(L/2), both ends included; points in the second half are ignored,
    so a low value near the output cannot move the boundary. Layers 0..j*-1 form Stage 1
    and layer j* is the first block that may be pruned (0 <= j* <= floor(L/2) <= L-1).

    Ties go to the smallest j. Non-finite values (NaN, +-inf) are skipped. If no searched
    value is finite the curve is unusable and StageError is raised rather than silently
    returning 0 (which would make every block prunable).
    """
    values = _float_list(curve, "entropy curve")
    num_layers = len(values) - 1
    if num_layers < 1:
        raise StageError(
            f"entropy curve needs at least 2 points (H(Z_0)..H(Z_L) with L >= 1); got {len(values)}"
        )
    last = num_layers // 2
    best_j = auto_s_start_of(values)
    if best_j is None:
        raise StageError(
            f"entropy curve has no finite value in j=0..{last}; rerun the analysis or "
            "use the 'manual' or 'reference' stage policy"
        )
    return best_j


@dataclass(frozen=True)
class StagePlan:
    """Which blocks a pruning run may touch, and how that was chosen."""

    num_layers: int
    """L, the number of decoder layers (blocks 0..L-1 at either granularity)."""
    s_start: int
    """First Stage-2 block; blocks 0..s_start-1 are Stage 1 and never pruned."""
    prunable: tuple[int, ...]
    """Blocks a budget k may take, ascending."""
    policy: StagePolicy
    """How s_start was chosen."""
    allow_last: bool
    """Whether block L-1 may be pruned (always False under the 'reference' policy)."""

    @property
    def frozen(self) -> tuple[int, ...]:
        """Blocks never pruned, ascending: Stage 1, and the last block unless allowed. Derived
        from `prunable`, so the two always split 0..num_layers-1 between them."""
        return tuple(b for b in range(self.num_layers) if b not in self.prunable)


def plan_stages(
    num_layers: int,
    *,
    policy: StagePolicy = "auto",
    curve: Sequence[float] | None = None,
    s_start: int | None = None,
    allow_last: bool = False,
) -> StagePlan:
    """Split blocks 0..num_layers-1 into frozen and prunable ones.

    - `auto`: s_start = auto_s_start(curve); `curve` (length num_layers+1) is required.
    - `manual`: `s_start` is required, 0 <= s_start <= num_layers-1.
    - `reference`: the research code's fixed rule: blocks 0, 1 and L-1 are frozen, s_start
      is reported as 2 (min(2, L) for models with fewer than 2 layers). The last block is
      always frozen here, whatever `allow_last` says, so the plan reproduces the research
      code exactly; the returned plan records allow_last=False.

    `s_start` may only be given with policy='manual' (StageError otherwise, so a stale slider
    value is never mistaken for the applied boundary). `curve` may be given with any policy
    and is length-checked, but only `auto` uses it. Under `auto`/`manual` the last block is
    frozen unless `allow_last`.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise StageError(f"num_layers must be a positive integer; got {num_layers!r}")
    if policy not in STAGE_POLICIES:
        raise StageError(f"stage policy must be one of {', '.join(STAGE_POLICIES)}; got {policy!r}")
    if curve is not None and len(curve) != num_layers + 1:
        raise StageError(
            f"entropy curve must have num_layers + 1 = {num_layers + 1} points "
            f"(H(Z_0)..H(Z_L)); got {len(curve)}"
        )
    if s_start is not None and policy != "manual":
        raise StageError(
            f"s_start is only used with policy='manual'; got s_start={s_start!r} with "
            f"policy={policy!r} (pass s_start=None, or choose 'manual')"
        )

    if policy == "auto":
        if curve is None:
            raise StageError("policy='auto' needs the entropy curve (curve=...)")
        start = auto_s_start(curve)
    elif policy == "manual":
        if s_start is None:
            raise StageError("policy='manual' needs s_start (the first block that may be pruned)")
        start = _index(s_start, "s_start")
        if not 0 <= start <= num_layers - 1:
            raise StageError(
                f"s_start must be between 0 and {num_layers - 1} (num_layers - 1); got {start}"
            )
    else:
        start = min(REFERENCE_FROZEN_HEAD, num_layers)
        allow_last = False

    allow_last = bool(allow_last)
    last = num_layers - 1
    prunable = tuple(b for b in range(start, num_layers) if allow_last or b != last)
    return StagePlan(num_layers=num_layers, s_start=start, prunable=prunable, policy=policy,
                     allow_last=allow_last)


def max_k(plan: StagePlan) -> int:
    """Largest pruning budget K the plan allows: the number of prunable blocks, but never
    all L blocks (with S_start = 0 and the last block allowed every block is prunable, and a
    model with no block left cannot be counted, run or exported)."""
    return min(len(plan.prunable), max(plan.num_layers - 1, 0))


def _index(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise StageError(f"{name} must be an integer; got {value!r}")
    try:
        return operator.index(value)  # accepts numpy integers, rejects floats
    except TypeError:
        raise StageError(f"{name} must be an integer; got {value!r}") from None


def _float_list(values: Sequence[float], name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise StageError(f"{name} must be a sequence of numbers; got {values!r:.200}") from None
