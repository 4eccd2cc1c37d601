"""Standard benchmarks through lm-evaluation-harness (the `lm-eval` package).

The harness runs on a model that is already in memory: each variant (a criterion's first K
blocks at one granularity) is pruned in place with `pruning.apply.pruned`, wrapped in the
harness's `HFLM` with `pretrained=<the model object>`, evaluated and restored, so no
variant is written to disk. An exported folder is evaluated the same way once it is loaded.

Tasks are named as the harness names them (`hellaswag`, `arc_easy`, ...) or defined by the
user as YAML files in a directory (`include_path`, the harness's `--include_path`), which is
how tasks over local data run offline (`dataset_path: json` with `data_files`). Every score
records the harness version, the task's version and a hash of the task's resolved config and
local data files, so two numbers are only compared when they measured the same thing.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import nn

from analysis.errors import EntroDropError
from analysis.settings import Granularity
from pruning.apply import check_granularity, pruned

HARNESS = "lm-eval"
"""The PyPI name of lm-evaluation-harness; its version is recorded with every score."""
DEFAULT_BATCH_SIZE = 8
BOOTSTRAP_ITERS = 1000
"""Resamples behind the stderr of metrics without a closed form (acc and acc_norm have one)."""
NOT_PRUNED = "unpruned"
"""The criterion recorded for a model run as it is (K=0, or a folder without a manifest)."""

Progress = Callable[[float, str], None]


class BenchmarkError(EntroDropError):
    """A benchmark request that cannot run; the message names the task and why."""


class TaskNotFound(BenchmarkError):
    """No task of that name in the harness or in the task directory."""


class TaskDataUnavailable(BenchmarkError):
    """A task's data set cannot be read: offline and not cached, or a missing local file."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to run: the same settings give the same scores on the same model."""

    tasks: tuple[str, ...]
    """Task (or group) names, as the harness or a YAML file in `include_path` names them."""
    include_path: str | None = None
    """A directory of the user's own YAML tasks (searched before the harness's own)."""
    limit: int | None = None
    """Evaluate only the first N documents of each task (None: all of them)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Requests per forward pass."""

    def validate(self) -> BenchmarkSettings:
        if isinstance(self.tasks, str) or not self.tasks:
            raise BenchmarkError("name at least one task, e.g. --tasks hellaswag,arc_easy")
        bad = [t for t in self.tasks if not isinstance(t, str) or not t.strip()]
        if bad:
            raise BenchmarkError(f"task names must be non-empty; got {list(self.tasks)!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise BenchmarkError(f"tasks are listed more than once: {list(self.tasks)!r}")
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise BenchmarkError(f"task directory {self.include_path} does not exist or is "
                                 "not a directory")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise BenchmarkError(f"limit must be a whole number of documents >= 1; got "
                                 f"{self.limit!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise BenchmarkError(f"batch size must be >= 1; got {self.batch_size!r}")
        return self

    def to_json(self) -> dict:
        return asdict(self) | {"tasks": list(self.tasks)}


@dataclass(frozen=True)
class Variant:
    """One model to score: the first `k` blocks of `criterion`'s order pruned."""

    granularity: Granularity | None
    """`layer` or `attn`; None when nothing is pruned here (K=0, or the model as loaded)."""
    criterion: str
    """The criterion whose order chose the blocks (`unpruned` for the model as it is)."""
    k: int
    blocks: tuple[int, ...] = ()
    """The pruned blocks, sorted; empty at K=0."""

    def model_key(self) -> tuple:
        """Variants with the same key are the same model, so they are scored once."""
        return ("as-is",) if not self.blocks else (self.granularity, self.blocks)


@dataclass(frozen=True)
class BenchmarkScore:
    """One metric of one task, as the harness reported it."""

    task: str
    metric: str
    """The metric name (`acc`, `acc_norm`, ...)."""
    value: float
    stderr: float | None
    """Standard error of `value` (None when the harness gives none)."""
    samples: int
    """Documents evaluated (after `limit`)."""
    filter: str = "none"
    """The harness's answer filter the metric was taken after (`none` for log-likelihoods)."""
    harness_version: str = ""
    task_version: str | None = None
    config_hash: str = ""
    """sha256 of the task's resolved config and the contents of its local data files."""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchmarkRun:
    """The scores of one variant: what was run, then what it scored."""

    variant: Variant
    source: str
    """The model spec or exported folder the variant was made from."""
    settings: BenchmarkSettings
    scores: tuple[BenchmarkScore, ...]

    def rows(self) -> list[dict]:
        """One flat row per score: granularity, criterion, k, blocks, task, metric, value..."""
        v = self.variant
        return [{"granularity": v.granularity, "criterion": v.criterion, "k": v.k,
                 "blocks": list(v.blocks), **s.to_json()} for s in self.scores]

    def to_json(self) -> dict:
        return {"source": self.source, "variant": asdict(self.variant) | {
                    "blocks": list(self.variant.blocks)},
                "settings": self.settings.to_json(),
                "scores": [s.to_json() for s in self.scores]}


def harness_version() -> str:
    return metadata.version(HARNESS)


def variants_over_k(orders: Mapping[str, Sequence[int] | Mapping[int, Sequence[int]]],
                    granularity: Granularity, ks: Iterable[int]) -> list[Variant]:
    """Every criterion's first K blocks for every K (or its prune set at K, for a criterion
    given as {K: blocks}, e.g. `Decision.prune_sets()` of angular_span); a K beyond an
    order's length is left out (as the quality curves do), K=0 is the unpruned model under
    every criterion."""
    granularity = check_granularity(granularity)
    ks = sorted(set(ks))
    if any(isinstance(k, bool) or k < 0 for k in ks):
        raise BenchmarkError(f"K values must be whole numbers >= 0; got {ks}")
    out = []
    for criterion, order in orders.items():
        sets = order if isinstance(order, Mapping) else {
            k: order[:k] for k in range(len(order) + 1)}
        out += [Variant(granularity, criterion, k, tuple(sorted(sets[k]))) for k in ks
                if k in sets]
    return out


# --------------------------------------------------------------------------- tasks


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None, with_defaults: bool, fingerprint: str | None):
    # Indexing the harness's own ~15k task files takes seconds; a directory of local tasks
    # alone is indexed at once, so the defaults are read only when a name needs them.
    # `fingerprint` (the directory's contents) is in the key so that a task added to the
    # directory while the dashboard runs is found.
    from lm_eval.tasks import TaskManager

    try:
        with _quiet_harness():
            return TaskManager(include_path=include_path, include_defaults=with_defaults)
    except Exception as e:  # a YAML file the harness cannot parse, an unreadable file
        raise BenchmarkError(f"cannot read the task directory {include_path}: "
                             f"{_one_line(e)}") from None


def task_manager(settings: BenchmarkSettings):
    """The harness's task index for `settings` (the built-in tasks only when needed)."""
    include = str(Path(settings.include_path).resolve()) if settings.include_path else None
    fingerprint = task_dir_fingerprint(include)
    if include is not None:
        local = _task_manager(include, False, fingerprint)
        if all(t in local.all_tasks for t in settings.tasks):
            return local
    manager = _task_manager(include, True, fingerprint)
    missing = [t for t in settings.tasks if t not in manager.all_tasks]
    if missing:
        name = missing[0]
        close = difflib.get_close_matches(name, manager.all_tasks, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        where = f" or in {settings.include_path}" if include else ""
        raise TaskNotFound(f"task {name!r} is not a task of lm-eval {harness_version()}"
                           f"{where}{hint}")
    return manager


def load_tasks(settings: BenchmarkSettings) -> tuple[Any, list]:
    """(task manager, built task objects), each task's data read once; a task whose data
    cannot be read is reported in one line that names it and says why."""
    settings = settings.validate()
    manager = task_manager(settings)
    built = []
    for name in settings.tasks:
        with _quiet_harness():
            try:
                loaded = manager.load([name])
            except Exception as e:  # the harness and `datasets` raise many kinds
                raise _task_error(name, e) from None
        # A group carries its tasks (and subgroups); a tag is a plain list of tasks.
        if name in loaded["groups"]:
            built.append(loaded["groups"][name])
        else:
            built.extend(loaded["tasks"].values())
    return manager, built


def _task_error(name: str, e: BaseException) -> BenchmarkError:
    chain = [e]
    while (chain[-1].__cause__ or chain[-1].__context__) and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    data_error = any(isinstance(c, (ConnectionError, FileNotFoundError))
                     or type(c).__name__ in _DATA_ERRORS for c in chain)
    if not data_error:
        return BenchmarkError(f"task {name!r} cannot be loaded: {_one_line(e)}")
    offline = (os.environ.get("HF_DATASETS_OFFLINE") == "1"
               or os.environ.get("HF_HUB_OFFLINE") == "1"
               or any("offline" in _one_line(c).lower() for c in chain))
    why = ("its data set is not available offline (not in the local datasets cache)"
           if offline else "its data set cannot be read")
    return TaskDataUnavailable(
        f"task {name!r}: {why} ({_one_line(e)}); run it once with the hub reachable, or "
        "define the task over local files in a task directory (--include-path)")


_DATA_ERRORS = {"OfflineModeIsEnabled", "DatasetNotFoundError", "DataFilesNotFoundError",
                "EmptyDatasetError", "LocalEntryNotFoundError"}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()).strip("\"'")
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


class _quiet_harness:
    """Keep the harness's info and warning chatter (one line per metric default it fills
    in) out of the CLI and the server log while a call runs; errors still show."""

    def __enter__(self):
        self._logger = logging.getLogger("lm_eval")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)


# --------------------------------------------------------------------------- hashing


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of a task's resolved config, without where its YAML happened to lie, and of
    the contents of every local data file it reads (so edited data changes the hash)."""
    clean = json.loads(json.dumps(config, sort_keys=True, default=str))
    meta = clean.get("metadata")
    if isinstance(meta, dict):
        meta.pop("config_source", None)
    h = hashlib.sha256(json.dumps(clean, sort_keys=True).encode())
    for path in sorted(_local_data_files(config)):
        h.update(path.name.encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()


def _local_data_files(config: Mapping[str, Any]) -> set[Path]:
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, Mapping) else None
    found: set[Path] = set()

    def walk(value):
        if isinstance(value, str):
            if Path(value).is_file():
                found.add(Path(value).resolve())
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(files)
    return found


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def task_dir_fingerprint(include_path: str | None) -> str | None:
    """A hash of every file under a task directory (YAML, data, helper code) and of the
    local data files its YAML names outside it: a cache key that changes with any edit."""
    if not include_path:
        return None
    root = Path(include_path)
    h = hashlib.sha256()
    outside: set[Path] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(file_sha256(path).encode())
        if path.suffix in (".yaml", ".yml"):
            outside |= {p for p in _paths_named_in(path) if root.resolve() not in p.parents}
    for path in sorted(outside):
        h.update(str(path).encode())
        h.update(file_sha256(path).encode())
    return h.hexdigest()


def _paths_named_in(yaml_file: Path) -> set[Path]:
    # A plain text scan: task YAML may hold `!function` tags that a safe YAML loader refuses.
    found = set()
    for line in yaml_file.read_text(encoding="utf-8", errors="replace").splitlines():
        for token in line.replace(":", " ").replace(",", " ").split():
            token = token.strip("\"'[]{}")
            if token.startswith("/") and Path(token).is_file():
                found.add(Path(token).resolve())
    return found


# --------------------------------------------------------------------------- running


def scores_of(results: Mapping[str, Any], version: str) -> tuple[BenchmarkScore, ...]:
    """The harness's result dict as typed scores (one per task, metric and filter)."""
    out = []
    configs = results.get("configs", {})
    versions = results.get("versions", {})
    counts = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        cfg = configs.get(task)
        n = counts.get(task, {}).get("effective")
        if n is None:  # a group: the sum over its tasks
            n = sum(counts.get(t, {}).get("effective", 0)
                    for t in results.get("group_subtasks", {}).get(task, []))
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(
                stderr) else None
            task_version = versions.get(task)
            out.append(BenchmarkScore(
                task=task, metric=metric, value=float(value), stderr=stderr, samples=int(n),
                filter=filt, harness_version=version,
                task_version=None if task_version is None else str(task_version),
                config_hash=config_hash(cfg) if cfg else ""))
    return tuple(out)


@functools.lru_cache(maxsize=2)
def _lm_class(bars: bool):
    """The harness's HF wrapper; without `bars`, one whose request loops draw no tqdm bar
    (the harness hard-codes `disable_tqdm=False` in the calls it makes)."""
    from lm_eval.models.huggingface import HFLM

    if bars:
        return HFLM

    class QuietHFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


def evaluate_model(model: nn.Module, tokenizer, settings: BenchmarkSettings,
                   tasks: tuple[Any, list] | None = None, *,
                   bars: bool = True) -> tuple[BenchmarkScore, ...]:
    """Run the harness on `model` as it is now (pruned or not). `tasks` comes from
    `load_tasks(settings)`, so several variants read the data once; `bars`: the harness's
    own progress bars on stderr."""
    import lm_eval

    settings = settings.validate()
    manager, built = tasks if tasks is not None else load_tasks(settings)
    # The harness may give the tokenizer a pad token and flips its padding side while it
    # runs; the shared tokenizer of the dashboard must not change, so it gets a copy.
    with _quiet_harness():
        lm = _lm_class(bars)(pretrained=model, tokenizer=copy.deepcopy(tokenizer),
                  batch_size=settings.batch_size)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=list(built), task_manager=manager, limit=settings.limit,
            bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False)
    return scores_of(results, harness_version())


def benchmark_variants(model: nn.Module, tokenizer, variants: Sequence[Variant],
                       settings: BenchmarkSettings, *, source: str,
                       progress: Progress | None = None,
                       bars: bool = True) -> list[BenchmarkRun]:
    """Score every variant of `model`, pruning it in place for each and restoring it after
    (also on error). Variants that are the same model (every K=0) are scored once."""
    settings = settings.validate()
    tasks = load_tasks(settings)
    unique: dict[tuple, Variant] = {}
    for v in variants:
        unique.setdefault(v.model_key(), v)
    scored: dict[tuple, tuple[BenchmarkScore, ...]] = {}
    for i, (key, v) in enumerate(unique.items()):
        if progress is not None:
            what = "unpruned" if not v.blocks else f"{v.granularity} blocks {list(v.blocks)}"
            progress(i / len(unique), f"variant {i + 1} of {len(unique)}: {what}")
        context = pruned(model, v.granularity, v.blocks) if v.blocks else nullcontext()
        with context:
            scored[key] = evaluate_model(model, tokenizer, settings, tasks, bars=bars)
    if progress is not None:
        progress(1.0, f"scored {len(unique)} variants")
    return [BenchmarkRun(variant=v, source=source, settings=settings,
                         scores=scored[v.model_key()]) for v in variants]


def accuracy_rows(runs: Iterable[BenchmarkRun]) -> list[dict]:
    """Every score of every run as one flat row (the CLI table, the chart, the JSON)."""
    return [row for run in runs for row in run.rows()]


def manifest_record(runs: Sequence[BenchmarkRun]) -> dict:
    """What an export's `entrodrop.json` records under `benchmarks`: the harness and its
    version, the settings and every score with its task version and config hash."""
    return {"harness": HARNESS, "harness_version": harness_version(),
            "runs": [r.to_json() for r in runs]}
