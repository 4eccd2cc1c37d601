"""Standard benchmarks (lm-evaluation-harness) on pruned variants of a loaded model and on
exported folders, and recording them in an export's manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from analysis.settings import Granularity
from entrodrop.service.models import MODEL_LOCK, Model, Progress, whole_model
from pruning.benchmarks import (
    NOT_PRUNED,
    BenchmarkRun,
    BenchmarkSettings,
    Variant,
    benchmark_variants,
    evaluate_model,
    manifest_record,
    task_manager,
    variants_over_k,
)
from pruning.manifest import read_manifest, record_benchmarks

WHAT = "running lm-eval benchmarks"


def check_benchmark_tasks(settings: BenchmarkSettings) -> BenchmarkSettings:
    """Refuse bad settings and unknown task names before a model loads (reads no data)."""
    settings = settings.validate()
    task_manager(settings)
    return settings


def benchmark_over_k(loaded: Model, orders: Mapping[str, Sequence[int] | Mapping[int, Sequence[int]]],
                     granularity: Granularity, ks: Sequence[int],
                     settings: BenchmarkSettings, *, progress: Progress | None = None,
                     bars: bool = True) -> list[BenchmarkRun]:
    """Every criterion's first K blocks for every K, each scored on the in-memory model
    pruned in place (the unpruned model, K=0, once for all criteria)."""
    return benchmark(loaded, variants_over_k(orders, granularity, ks), settings,
                     progress=progress, bars=bars)


def benchmark(loaded: Model, variants: Sequence[Variant], settings: BenchmarkSettings, *,
              progress: Progress | None = None, bars: bool = True) -> list[BenchmarkRun]:
    """The given variants (any granularity, criterion and K) scored on the in-memory model;
    `bars`: the harness's own tqdm bars on stderr."""
    model = whole_model(loaded, WHAT)
    with MODEL_LOCK:
        return benchmark_variants(model.model, model.tokenizer, list(variants), settings,
                                  source=model.spec, progress=progress, bars=bars)


def benchmark_model(loaded: Model, settings: BenchmarkSettings, *,
                    progress: Progress | None = None, bars: bool = True) -> BenchmarkRun:
    """The model as loaded, labelled from its `entrodrop.json` when it is one of our
    exports (criterion, granularity, K and blocks are then those the export recorded)."""
    model = whole_model(loaded, WHAT)
    if progress is not None:
        progress(0.0, f"scoring {model.spec}")
    with MODEL_LOCK:
        scores = evaluate_model(model.model, model.tokenizer, settings, bars=bars)
    if progress is not None:
        progress(1.0, f"scored {model.spec}")
    return BenchmarkRun(variant=export_variant(model.source_path), source=model.spec,
                        settings=settings, scores=scores)


def export_variant(folder: str | Path) -> Variant:
    """What an export folder's manifest says was pruned (nothing for any other folder)."""
    record = read_manifest(folder)
    if not record or record.get("method") != "block":
        return Variant(None, NOT_PRUNED, 0)
    blocks = tuple(sorted(int(b) for b in record.get("blocks", record.get("pruned_blocks", []))))
    return Variant(record.get("granularity"), str(record.get("criterion")),
                   int(record.get("k", len(blocks))), blocks)


def record_in_export(folder: str | Path, runs: Sequence[BenchmarkRun]) -> Path:
    """Add the runs to the `benchmarks` record of an export's `entrodrop.json`."""
    return record_benchmarks(folder, manifest_record(runs))
