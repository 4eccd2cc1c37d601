"""bench/bench_browser_latency.py: the summary it reports (the browser run itself is the
benchmark, run by `make bench`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    # bench/ is not a package: import the script by path.
    spec = importlib.util.spec_from_file_location("bench_browser_latency",
                                                  ROOT / "bench" / "bench_browser_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_summary_reports_the_90th_percentile_of_the_presses():
    bench = _load()
    ms = [float(v) for v in range(100, 300, 10)]  # 20 presses: 100, 110, ..., 290 ms
    summary = bench._summary(ms)
    assert summary["p90_ms"] == 270.0  # the 18th of 20 sorted values
    assert summary["median_ms"] == 195.0 and summary["max_ms"] == 290.0
    assert summary["repeats"] == 20


def test_summary_of_one_slow_press_in_ten_keeps_it_out_of_the_p90():
    bench = _load()
    summary = bench._summary([50.0] * 9 + [900.0])
    assert summary["p90_ms"] == 50.0 and summary["max_ms"] == 900.0


def test_summary_p90_is_the_nearest_rank_for_any_count():
    bench = _load()
    # 25 presses: the 23rd value (ceil(22.5)), where rounding half to even would take the 22nd.
    assert bench._summary([float(v) for v in range(1, 26)])["p90_ms"] == 23.0
