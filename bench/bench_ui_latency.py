"""Benchmark: how long the dashboard takes to re-render when K moves.

Run: .venv/bin/python bench/bench_ui_latency.py [--model demo:smollm2-135m] [--repeats 15]

The analysis runs once first (or comes from cache/profiles). Then, in one AppTest session,
the K slider is moved back and forth on each page, and the time of each re-render
(`at.slider(key="k").set_value(k).run()`, the whole script: sidebar and page) is recorded.
Moving K must only re-rank the cached profile, never run the model. Target: median < 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

APP = ROOT / "app" / "streamlit_app.py"
TARGET_MS = 300.0
PAGES = ("prune_list", "dynamics", "heatmap", "budget", "export")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo:smollm2-135m")
    p.add_argument("--calibration", default="builtin:licenses")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--pages", nargs="+", default=list(PAGES), choices=PAGES)
    a = p.parse_args()

    from streamlit.testing.v1 import AppTest

    os.environ["ENTRODROP_MODEL"] = a.model
    at = AppTest.from_file(str(APP), default_timeout=1800).run()
    at.switch_page("views/calibration.py").run()
    at.multiselect(key="cal_sources").set_value([a.calibration])
    at.number_input(key="cal_samples").set_value(a.samples)
    at.number_input(key="cal_seqlen").set_value(a.seqlen)
    at.run()
    t0 = time.perf_counter()
    at.button(key="run_analysis").click().run()
    analysis_s = time.perf_counter() - t0
    _check(at)
    record = at.session_state["analysis"]
    limit = at.slider(key="k").max
    print(f"model {a.model}, {record.runs[0].num_layers} layers; analysis "
          f"{analysis_s:.1f} s (from cache: {record.from_cache}); K from 0 to {limit}")

    results = {}
    for page in a.pages:
        at.switch_page(f"views/{page}.py").run()
        _check(at)
        values = [1 + (i % max(limit, 1)) for i in range(a.repeats + 2)]
        times = []
        for i, k in enumerate(values):
            t0 = time.perf_counter()
            at.slider(key="k").set_value(min(k, limit)).run()
            elapsed = (time.perf_counter() - t0) * 1000.0
            _check(at)
            if i >= 2:  # the first moves warm the page's imports and caches
                times.append(elapsed)
        results[page] = {"median_ms": statistics.median(times), "max_ms": max(times),
                         "repeats": len(times)}
        status = "ok" if results[page]["median_ms"] < TARGET_MS else "SLOW"
        print(f"  {page:<12} median {results[page]['median_ms']:6.1f} ms   max "
              f"{results[page]['max_ms']:6.1f} ms   [{status}]")
    assert at.session_state["analysis"].key == record.key  # K never re-ran anything
    worst = max(r["median_ms"] for r in results.values())
    print(json.dumps({"bench": "ui_latency", "model": a.model, "target_ms": TARGET_MS,
                      "worst_median_ms": round(worst, 1),
                      "pages": {k: {m: round(v, 1) if isinstance(v, float) else v
                                    for m, v in r.items()} for k, r in results.items()}}))
    return 0


def _check(at) -> None:
    if at.exception or at.error:
        raise SystemExit(f"the app reported: {[e.value for e in (*at.exception, *at.error)]}")


if __name__ == "__main__":
    sys.exit(main())
