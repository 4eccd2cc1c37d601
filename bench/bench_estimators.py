"""Micro-benchmark of the estimators on the demo model's shape (not a test).

Times each estimator on CPU input of shape [4, 127, 576] (batch of 4 windows of 128
tokens minus the attention sink, SmolLM2-135M hidden size) and prints ms per call; then
``entropies`` (all three at once, as the capture calls them) on one 8 MiB CPU stack of
[16, 127, 576] with a reused Workspace.

    python bench/bench_estimators.py [--threads THREADS] [--repeats R] [--dtype float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from analysis.estimators import (
    Workspace,
    bucket_entropy,
    cosine_importance,
    entropies,
    knn_entropy,
    nonfinite_count,
    renyi_entropy,
)

SHAPE = (4, 127, 576)


def _time_ms(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float]:
    """Median and minimum milliseconds per call, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per estimator")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(SHAPE, generator=gen).to(dtype)
    y = (x.float() + 0.1 * torch.randn(SHAPE, generator=gen)).to(dtype)
    stack = torch.randn((4 * SHAPE[0], *SHAPE[1:]), generator=gen).to(dtype)
    ws = Workspace()

    cases: dict[str, Callable[[], torch.Tensor]] = {
        "bucket (bins=20)": lambda: bucket_entropy(x, 20),
        "bucket (bins=80)": lambda: bucket_entropy(x, 80),
        "knn (knn_k=25)": lambda: knn_entropy(x, 25),
        "renyi (alpha=4)": lambda: renyi_entropy(x, 4.0),
        "cosine": lambda: cosine_importance(x, y),
        "nonfinite_count": lambda: nonfinite_count(x),
        "all three, x4 stack": lambda: entropies(stack, bins=20, knn_k=25, renyi_alpha=4.0, workspace=ws),
    }
    print(
        f"input {list(SHAPE)} {args.dtype} on cpu, {torch.get_num_threads()} threads, "
        f"{args.repeats} calls each"
    )
    print(f"{'estimator':<22}{'median ms':>12}{'min ms':>10}")
    for name, fn in cases.items():
        median, best = _time_ms(fn, args.repeats)
        print(f"{name:<22}{median:>12.2f}{best:>10.2f}")


if __name__ == "__main__":
    main()
