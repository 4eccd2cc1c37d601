"""Presets: the research code's corpora (`preset:c4|wikitext2|law|medicine`), through
`datasets` (hub or local cache). Offline without a cache they fail fast with
`CalibrationError`; an unreachable hub counts as offline, so nothing waits on retries.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from analysis.calibration.base import CalibrationError, Source

_HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Preset:
    repo_ids: tuple[str, ...]
    """Dataset ids tried in order (the first is canonical; later ones are old names)."""
    config: str | None
    split: str
    column: str
    description: str
    data_files: dict[str, str] | None = None
    research_pool: bool = False
    """Keep the research code's document pool: shuffle(seed=42), first 2N rows, drop
    empty ones, keep N."""


PRESETS: dict[str, Preset] = {
    "c4": Preset(("allenai/c4",), None, "train", "text",
                 "C4 English web text, training shard 00000",
                 data_files={"train": "en/c4-train.00000-of-01024.json.gz"}),
    "wikitext2": Preset(("Salesforce/wikitext", "wikitext"), "wikitext-2-raw-v1", "train",
                        "text", "WikiText-2 (raw), training split"),
    "law": Preset(("AdaptLLM/law_knowledge_prob",), None, "test", "text",
                  "Legal text (AdaptLLM law_knowledge_prob, test split)", research_pool=True),
    "medicine": Preset(("AdaptLLM/med_knowledge_prob",), "Medicine", "test", "exp",
                       "Medical explanations (AdaptLLM med_knowledge_prob, test split)",
                       research_pool=True),
}


def open_preset(name: str, samples: int) -> Source:
    preset = PRESETS[name]
    dataset = _load_preset_dataset(name, preset)
    info = {"dataset": preset.repo_ids[0], "dataset_config": preset.config,
            "dataset_split": preset.split, "text_column": preset.column,
            "dataset_fingerprint": str(getattr(dataset, "_fingerprint", "") or "")}
    if preset.column not in dataset.column_names:
        raise CalibrationError(f"preset:{name}: the dataset has no column {preset.column!r} "
                               f"(columns: {', '.join(dataset.column_names)})")
    if preset.research_pool:
        # The research code calibrates on the first N rows of the test split shuffled with
        # seed 42 (from the first 2N, with empty rows dropped).
        pool = dataset.shuffle(seed=42).select(range(min(2 * samples, len(dataset))))
        texts = [x for x in pool[preset.column] if x is not None][:samples]
        info["documents"] = len(texts)
        return Source("preset", name, info, documents=texts,
                       doc_names=[f"{name}#{i}" for i in range(len(texts))])
    info["documents"] = len(dataset)
    return Source("preset", name, info, documents=_DatasetColumn(dataset, preset.column),
                   doc_names=_IndexNames(name, len(dataset)))


class _DatasetColumn(Sequence):
    """Lazy access to one column, so a 350k-row shard is not copied into Python strings."""

    def __init__(self, dataset, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[int(i)][self.column]


class _IndexNames(Sequence):
    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return f"{self.prefix}#{int(i)}"


def _load_preset_dataset(name: str, preset: Preset):
    try:
        import datasets
        import datasets.config
    except ImportError:
        raise CalibrationError(
            f"preset:{name} needs the `datasets` package, which is not installed; use "
            "builtin:licenses, builtin:pydocs or a file"
        ) from None
    offline = _offline_requested() or bool(datasets.config.HF_HUB_OFFLINE)
    if not offline and not _hub_reachable():
        offline = True
    errors = []
    with _forced_offline(offline):
        for repo_id in preset.repo_ids:
            try:
                return datasets.load_dataset(repo_id, preset.config, split=preset.split,
                                             data_files=preset.data_files)
            except Exception as err:  # the library raises many types for "not there"
                errors.append(f"{repo_id}: {type(err).__name__}: {str(err)[:200]}")
    if offline:
        raise CalibrationError(
            f"preset:{name} ({preset.repo_ids[0]}) is not available offline: it is not in "
            "the local Hugging Face cache and the hub is not reachable (or offline mode is "
            "set). Use builtin:licenses or builtin:pydocs, or give a local file "
            f"(.txt, .jsonl, .csv, .parquet). Details: {'; '.join(errors)}"
        )
    raise CalibrationError(
        f"preset:{name} ({preset.repo_ids[0]}) could not be loaded: {'; '.join(errors)}. "
        "Use builtin:licenses, builtin:pydocs or a local file instead."
    )


def _offline_requested() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable() -> bool:
    """A TCP connect to the hub within a few seconds; DNS included, so it runs in a thread
    (name resolution ignores socket timeouts)."""
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:
        host = "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=_HUB_PROBE_TIMEOUT_S).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_HUB_PROBE_TIMEOUT_S + 0.5)
    return bool(result and result[0])


@contextlib.contextmanager
def _forced_offline(offline: bool) -> Iterator[None]:
    """Make `datasets` and `huggingface_hub` use the local cache only (no retries)."""
    if not offline:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
         constants.HF_HUB_OFFLINE) = saved
