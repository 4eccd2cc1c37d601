"""Perplexity-greedy block order (after SLEB, Song et al., 2024): remove, one block at a
time, the block whose removal raises the perplexity of selection windows least.

The search is model-agnostic: it asks an `evaluate` callback for the perplexity of a batch
of candidate prune sets, so the same loop runs on a model in memory (one
`evaluate_quality` pass per step, the unpruned reference shared by every candidate) or on
a streamed one. Step s evaluates the C - s candidates that remain, so a full order of C
blocks costs C (C + 1) / 2 variant passes: `greedy_cost` says how many before it runs, and
the progress callback gives a time estimate from the passes done so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pruning.ranking import RankingError, block_list, validate_k

Evaluate = Callable[[Mapping[str, list[int]], Callable[[float], None]], Mapping[str, float]]
"""evaluate({name: blocks}, step_progress) -> {name: perplexity}; step_progress(f) reports
the fraction f of this call done."""
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class GreedyResult:
    """What a perplexity-greedy search found, and on what."""

    granularity: str
    candidates: tuple[int, ...]
    """The blocks it could remove (the plan's prunable blocks), ascending."""
    order: tuple[int, ...]
    """The blocks removed, first removed first (length `steps`)."""
    perplexity: tuple[float, ...]
    """Perplexity of the selection windows after each step (with order[:s+1] removed)."""
    base_perplexity: float
    """Perplexity of the unpruned model on the same windows."""
    windows: tuple[int, int]
    """(N, T) of the selection windows."""
    variant_passes: int
    seconds: float

    @property
    def steps(self) -> int:
        return len(self.order)

    def scores(self, num_layers: int) -> list[float]:
        """Per-block scores for `pruning.ranking.prune_order`: the step at which a block was
        removed; NaN (ranked last) for blocks the search did not reach."""
        out = [math.nan] * num_layers
        for step, block in enumerate(self.order):
            out[block] = float(step)
        return out

    def to_json(self) -> dict:
        return {"granularity": self.granularity, "candidates": list(self.candidates),
                "order": list(self.order),
                "perplexity": [p if math.isfinite(p) else None for p in self.perplexity],
                "base_perplexity": self.base_perplexity if math.isfinite(self.base_perplexity) else None,
                "windows": list(self.windows), "variant_passes": self.variant_passes,
                "seconds": self.seconds}


def greedy_cost(candidates: int, steps: int) -> int:
    """Variant passes over the selection windows that `steps` greedy steps cost."""
    return sum(candidates - s for s in range(steps))


def greedy_order(evaluate: Evaluate, granularity: str, candidates: Sequence[int], *,
                 steps: int | None = None, base_perplexity: float = math.nan,
                 windows: tuple[int, int] = (0, 0),
                 progress: Progress | None = None) -> GreedyResult:
    """Greedy removal order over `candidates`, `steps` blocks long (default: all).

    At step s, with R the blocks removed so far, every remaining block b is scored by the
    perplexity of the model with R + {b} removed; the lowest wins (ties to the smallest
    block index; a non-finite perplexity counts as +inf). `progress(fraction, message)`
    gets the step, the block chosen and an estimate of the time left, measured from the
    passes done so far (each pass costs about the same: the same windows, one model).
    """
    pool = sorted(block_list(candidates, "candidates"))
    steps = len(pool) if steps is None else validate_k(steps, len(pool), "the number of candidates")
    if not steps:
        raise RankingError("perplexity-greedy needs at least one step and one prunable block")
    total = greedy_cost(len(pool), steps)
    removed: list[int] = []
    ppl: list[float] = []
    done = 0
    started = time.perf_counter()

    def report(fraction: float, message: str) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - started
        left = elapsed / fraction * (1 - fraction) if fraction > 0 else math.nan
        eta = f"about {left:.0f} s left" if math.isfinite(left) else "estimating time"
        progress(min(fraction, 1.0), f"{message}; {eta}")

    report(0.0, f"perplexity-greedy: {steps} steps, {total} variant passes")
    for step in range(steps):
        remaining = [b for b in pool if b not in removed]
        sets = {f"{granularity}:{','.join(map(str, sorted([*removed, b])))}": [*removed, b]
                for b in remaining}
        n = len(sets)

        def within(f: float, done=done, n=n, step=step) -> None:
            report((done + f * n) / max(total, 1), f"step {step + 1}/{steps}")

        result = evaluate(sets, within)
        scored = []
        for (name, _), b in zip(sets.items(), remaining, strict=True):
            value = float(result[name])
            scored.append((value if math.isfinite(value) else math.inf, b))
        value, chosen = min(scored)
        removed.append(chosen)
        ppl.append(value)
        done += n
        report(done / max(total, 1),
               f"step {step + 1}/{steps}: removed {granularity} block {chosen} "
               f"(perplexity {value:.3f})")
    return GreedyResult(granularity, tuple(pool), tuple(removed), tuple(ppl),
                        float(base_perplexity), tuple(windows), total,
                        time.perf_counter() - started)
