"""What every command shares: argument groups, settings builders, the progress bar, JSON
output, and how errors are reported.

The error contract: a user error (`service.USER_ERRORS`, or this module's `CLIError`) prints
`entrodrop <command>: error: <one line>` and exits 2; running out of memory is a user error
too (it says what to make smaller). Anything else is a bug: it prints
`entrodrop <command>: internal error: <one line>; the full traceback is in <log>` and exits
1, with the traceback saved under `cache/logs/`. No path prints a raw traceback.

Nothing here imports a command module (`analyze`, `blocks`, `width`); they import this.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import get_args

from analysis.errors import EntroDropError
from analysis.models import DEMO_MODELS
from analysis.paths import (
    PathError,
    atomic_write_text,
    cache_dir,
    check_output_file,
    remove_stale_temp_files,
)
from analysis.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BINS,
    DEFAULT_CALIBRATION,
    DEFAULT_KNN_K,
    DEFAULT_MODEL,
    DEFAULT_RENYI_ALPHA,
    DEFAULT_SEED,
    DEFAULT_SKIP_FIRST,
    DEVICES,
    DTYPES,
    ESTIMATORS,
    GRANULARITIES,
    LOAD_MODES,
    AnalysisRequest,
    CalibrationSettings,
    EstimatorSettings,
    Granularity,
    ModelSettings,
    default_samples,
    default_seqlen,
)
from entrodrop import service
from pruning.gguf_export import EXPORT_FORMATS, GGUF_FILE, GGUF_TYPES, run_snippets
from pruning.ranking import CRITERIA, Criterion, RankingError, check_criterion
from pruning.stages import STAGE_POLICIES
from pruning.width import KeepMode

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130

# The block-pruning defaults of the CLI (the dashboard starts from its own view state).
DEFAULT_GRANULARITY: Granularity = "attn"
DEFAULT_CRITERION: Criterion = "knn"
DEFAULT_K = 4
DEFAULT_GREEDY_WINDOWS = 8
"""Calibration windows a perplexity-greedy search selects on: each of its C(C+1)/2 variant
passes runs over all of them."""
KEEP_MODES: tuple[KeepMode, ...] = get_args(KeepMode)
DEFAULT_KEEP_MODE: KeepMode = "per_layer"
"""Width pruning keeps int(ratio * hidden_size) neurons per layer (SPEC, official code)."""


class CLIError(EntroDropError):
    """A user error found by the CLI itself (an option it parses): one line, exit code 2."""


USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, *service.USER_ERRORS)


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A one-line progress bar on stderr (off with --quiet or ENTRODROP_PROGRESS=0)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or os.environ.get("ENTRODROP_PROGRESS") == "0"
        self.last = ""

    def __call__(self, frac: float, msg: str) -> None:
        if self.quiet:
            return
        width = 30
        filled = int(max(0.0, min(1.0, frac)) * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% {msg}"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line[:120].ljust(len(self.last)))
        elif line != self.last:
            sys.stderr.write(line + "\n")
        self.last = line[:120]
        sys.stderr.flush()

    def done(self) -> None:
        if not self.quiet and sys.stderr.isatty() and self.last:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------- arguments


def add_model_args(p: argparse.ArgumentParser) -> None:
    demos = ", ".join(f"demo:{name}" for name in DEMO_MODELS)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"{demos}, a model folder, a .gguf file or a hub id")
    p.add_argument("--device", default=ModelSettings.device, choices=DEVICES)
    p.add_argument("--dtype", default=ModelSettings.dtype, choices=DTYPES)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own Python code (off by default)")
    p.add_argument("--device-map-auto", action="store_true",
                   help="spread a model larger than one GPU with accelerate")
    p.add_argument("--load", default=ModelSettings.load, choices=LOAD_MODES,
                   help="memory: the whole model; stream: one decoder layer at a time, for "
                        "models larger than memory; auto (default): stream only when the "
                        "weights do not fit in free memory")


def add_calibration_args(p: argparse.ArgumentParser, multiple: bool) -> None:
    if multiple:
        p.add_argument("--calibration", action="append", default=None,
                       help="builtin:licenses|pydocs|selfgen|random, preset:c4|wikitext2|law|medicine, "
                            "or a .txt/.jsonl/.csv/.parquet/.npy file; repeat for several sets")
    else:
        p.add_argument("--calibration", default=DEFAULT_CALIBRATION)
    p.add_argument("--samples", type=int, default=None,
                   help=f"N windows (default {default_samples(False)} CPU / "
                        f"{default_samples(True)} GPU)")
    p.add_argument("--seqlen", type=int, default=None,
                   help=f"T tokens per window (default {default_seqlen(False)} CPU / "
                        f"{default_seqlen(True)} GPU)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--text-column", default=None)


def add_batch_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)


def add_estimator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", type=int, default=DEFAULT_BINS)
    p.add_argument("--knn-k", type=int, default=DEFAULT_KNN_K,
                   help="the neighbour of the knn estimator (not the pruning budget --k)")
    p.add_argument("--renyi-alpha", type=float, default=DEFAULT_RENYI_ALPHA)
    p.add_argument("--skip-first", type=int, default=DEFAULT_SKIP_FIRST,
                   help="positions left out of the statistics (attention sink); 0 = research code")
    add_batch_size_arg(p)
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write cache/profiles")


def criterion_arg(text: str) -> Criterion:
    """argparse type of --criterion: any criterion name, random:<seed> included."""
    try:
        return check_criterion(text)
    except RankingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_greedy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--greedy-windows", type=int, default=DEFAULT_GREEDY_WINDOWS,
                   help="calibration windows the ppl_greedy search selects on (the first N "
                        "of --calibration; held-out windows stay unseen)")
    p.add_argument("--greedy-steps", type=int, default=None,
                   help="blocks the ppl_greedy search removes (default: every prunable block; "
                        "a search of S steps over C blocks costs sum C-s passes)")


def add_decision_args(p: argparse.ArgumentParser, with_k: bool = True) -> None:
    p.add_argument("--granularity", choices=GRANULARITIES, default=DEFAULT_GRANULARITY)
    p.add_argument("--criterion", type=criterion_arg, default=DEFAULT_CRITERION,
                   metavar="CRITERION",
                   help=f"what orders the blocks: {', '.join(CRITERIA)} or random:<seed> "
                        "(ppl_greedy runs a perplexity-greedy search on the model)")
    if with_k:
        p.add_argument("--k", type=int, default=DEFAULT_K, help="number of blocks to prune")
    p.add_argument("--policy", choices=STAGE_POLICIES, default=None,
                   help="auto: S_start = argmin of the entropy curve over the first half; "
                        "reference: freeze blocks 0, 1 and L-1 (research code); "
                        "manual: --s-start (implied by --s-start)")
    p.add_argument("--s-start", type=int, default=None, help="first prunable layer (0-based)")
    p.add_argument("--allow-last", action="store_true", help="allow pruning the last block")
    p.add_argument("--stage-estimator", choices=ESTIMATORS,
                   default=service.DEFAULT_STAGE_ESTIMATOR,
                   help="whose entropy curve sets the automatic S_start")


# --------------------------------------------------------------------------- settings


def add_format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=EXPORT_FORMATS, default="hf",
                   help="hf: a Hugging Face folder; gguf: one GGUF file for llama.cpp")
    p.add_argument("--gguf-type", dest="gguf_type", choices=GGUF_TYPES, default="f16",
                   help="storage of the weight matrices in a GGUF export (norms stay f32)")


def format_note(a: argparse.Namespace, out: Path) -> str:
    """What to run after an export: for a GGUF one, llama.cpp's command line."""
    if a.format != "gguf":
        return ""
    return f"; run it with: {run_snippets(str(Path(out) / GGUF_FILE))['llama-cli']}"


def model_settings(a: argparse.Namespace) -> ModelSettings:
    return ModelSettings(a.model, a.device, a.dtype, a.trust_remote_code,
                         a.device_map_auto, a.load).validate()


def calibration_settings(a: argparse.Namespace, spec: str) -> CalibrationSettings:
    return CalibrationSettings(spec, a.samples, a.seqlen, a.seed, a.text_column).validate()


def estimator_settings(a: argparse.Namespace) -> EstimatorSettings:
    return EstimatorSettings(a.bins, a.knn_k, a.renyi_alpha, a.skip_first,
                             a.batch_size).validate()


def analysis_request(a: argparse.Namespace, specs: Sequence[str]) -> AnalysisRequest:
    return service.analysis_request(model_settings(a),
                                    [calibration_settings(a, s) for s in specs],
                                    estimator_settings(a), use_cache=not a.no_cache)


def load(a: argparse.Namespace) -> service.Model:
    """The model of --model as --load decides: loaded whole (with a progress bar), or
    prepared for layer streaming (the estimate is printed either way)."""
    settings = model_settings(a)
    if not a.quiet:
        print(f"{settings.spec}: {service.load_plan(settings).describe()}", file=sys.stderr)
    progress = ProgressBar(a.quiet)
    loaded = service.load(settings, progress=progress)
    progress.done()
    return loaded


# --------------------------------------------------------------------------- output


def report_messages(result: service.AnalysisResult, quiet: bool) -> None:
    """Cache hits are news; warnings (bad cache entries, non-finite states) always show."""
    for msg in result.warnings if quiet else result.messages:
        print(msg, file=sys.stderr)


def check_json_out(path: str | None) -> None:
    """Refuse an --out file that cannot be written, before any work (nothing is created)."""
    if path:
        check_output_file(path, "--out")


def write_json(path: str, data: dict) -> None:
    """Write `data` to the file --out names, atomically (never a half-written file). The
    temporary file of a writer killed before its rename (tagged with its process id) is
    removed first, so a kill never leaves one in the user's folder for good."""
    out = check_output_file(path, "--out")
    remove_stale_temp_files(out.parent, out.name)
    try:
        atomic_write_text(out, json.dumps(data, indent=2))
    except OSError as err:
        raise PathError(f"cannot write --out {out}: {err.strerror or err}") from None


# --------------------------------------------------------------------------- running


def run_command(a: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the parsed command; every exception ends as one line on stderr and an exit code."""
    try:
        return a.func(a) or 0
    except USER_ERRORS as e:
        return fail(a.command, one_line(e))
    except KeyboardInterrupt:
        print(f"entrodrop {a.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if out_of_memory(e):
            return fail(a.command, "out of memory; use a smaller --batch-size or --samples")
        return internal_error(a.command, e, argv)


def fail(command: str, message: str) -> int:
    print(f"entrodrop {command}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def internal_error(command: str, e: BaseException, argv: Sequence[str]) -> int:
    """A bug: one line on stderr, the traceback in a log file the line names."""
    summary = f"{type(e).__name__}: {one_line(e)}" if str(e).strip() else type(e).__name__
    try:
        where = f"the full traceback is in {save_traceback(e, argv)}"
    except OSError as log_error:
        where = f"the traceback could not be saved ({one_line(log_error)})"
    print(f"entrodrop {command}: internal error: {summary}; {where}", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def save_traceback(e: BaseException, argv: Sequence[str]) -> Path:
    """Write the traceback of `e` to cache/logs/cli-<timestamp>-<pid>.log; returns the path."""
    now = datetime.now()
    path = cache_dir() / "logs" / f"cli-{now:%Y%m%d-%H%M%S-%f}-{os.getpid()}.log"
    header = (f"entrodrop {' '.join(map(str, argv))}\n"
              f"time: {now.isoformat(timespec='seconds')}\n"
              f"python: {platform.python_version()} on {platform.platform()}\n\n")
    atomic_write_text(path, header + "".join(traceback.format_exception(e)))
    return path


def out_of_memory(e: BaseException) -> bool:
    import torch

    # torch.OutOfMemoryError is the CUDA allocator's; MPS and others only say it in the text.
    return (isinstance(e, (MemoryError, torch.OutOfMemoryError))
            or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower()))


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def quiet_libraries() -> None:
    """The CLI draws its own progress; library bars and warnings would break one-line errors."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
