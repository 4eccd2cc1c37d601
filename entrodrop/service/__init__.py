"""The one service layer that the CLI and the dashboard both call.

One function per operation; this is the only place that takes `MODEL_LOCK`. Callers build
settings (`analysis.settings`), get typed results back (`Profile`, `Decision`, dicts of
figures), and catch `USER_ERRORS` to show a one-line message.
"""

from __future__ import annotations

from analysis.errors import EntroDropError
from entrodrop.service.analysis import (
    AnalysisResult,
    analysis_request,
    analyze,
    cache_parts,
    calibration_sources,
    held_out_windows,
    preview_windows,
    profile_model,
    read_calibration_file,
    selection_windows,
)
from entrodrop.service.benchmarks import (
    benchmark,
    benchmark_model,
    benchmark_over_k,
    check_benchmark_tasks,
    export_variant,
    record_in_export,
)
from entrodrop.service.blocks import (
    DEFAULT_STAGE_ESTIMATOR,
    check_export_layout,
    check_export_target,
    decision,
    engine_speed,
    export_blocks,
    generate,
    greedy_estimate,
    greedy_search,
    model_figures,
    parameter_savings,
    prune_list_record,
    quality_of,
    quality_over_k,
    speed,
    stage_plan,
)
from entrodrop.service.models import (
    MODEL_LOCK,
    Model,
    ModelRegistry,
    Progress,
    StreamedModel,
    WholeModelNeeded,
    devices,
    load,
    load_plan,
    model_summary,
)
from entrodrop.service.validate import ModelShape, check_settings, model_shape
from entrodrop.service.width import (
    export_width,
    hidden_size,
    width_curves,
    width_keep,
    width_ratio_range,
    width_scores,
)

USER_ERRORS: tuple[type[BaseException], ...] = (
    EntroDropError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
)
"""Errors that mean the user asked for something impossible; each carries a message that
says what and what to do next. Anything else is a bug."""

__all__ = [
    "DEFAULT_STAGE_ESTIMATOR", "MODEL_LOCK", "prune_list_record", "benchmark", "benchmark_model",
    "benchmark_over_k", "check_benchmark_tasks", "export_variant", "record_in_export", "USER_ERRORS", "AnalysisResult", "Model",
    "ModelRegistry", "StreamedModel", "WholeModelNeeded",
    "ModelShape", "Progress", "analysis_request", "check_settings", "model_shape", "analyze", "cache_parts", "calibration_sources", "check_export_layout",
    "check_export_target",
    "decision", "devices", "engine_speed", "greedy_estimate", "greedy_search", "selection_windows", "export_blocks", "export_width", "generate", "held_out_windows",
    "hidden_size", "load", "load_plan", "model_figures", "model_summary", "parameter_savings", "preview_windows", "read_calibration_file",
    "profile_model", "quality_of", "quality_over_k", "speed", "stage_plan", "width_curves", "width_keep",
    "width_ratio_range", "width_scores",
]
