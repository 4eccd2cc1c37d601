"""Calibration files: `.txt`, `.jsonl`, `.csv`, `.parquet` (text), or `.npy` / `.jsonl` with an
`input_ids` list per line (pre-tokenized, used as-is).

`.txt` files: a document ends at a form feed or at two or more consecutive blank lines;
a file without either is one document (single blank lines separate paragraphs, which
are usually shorter than a window).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import torch

from analysis.calibration.base import Calibration, CalibrationError, Source, vocab_size

DEFAULT_MAX_BYTES = 200_000_000
"""Largest calibration file read (200 MB); `max_bytes` overrides it."""

TEXT_EXTENSIONS = (".txt", ".jsonl", ".csv", ".parquet")
FILE_EXTENSIONS = TEXT_EXTENSIONS + (".npy",)
TEXT_COLUMN_GUESSES = ("text", "content", "document", "body")


def check_file(spec: str, max_bytes: int) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise CalibrationError(
            f"calibration file not found: {path} (resolved to {path.resolve()}). A "
            "calibration spec is builtin:<name>, preset:<name> or the path of an existing "
            f"{'/'.join(FILE_EXTENSIONS)} file."
        )
    if path.is_dir():
        raise CalibrationError(f"{path} is a folder; give one calibration file "
                               f"({'/'.join(FILE_EXTENSIONS)})")
    suffix = path.suffix.lower()
    if suffix not in FILE_EXTENSIONS:
        raise CalibrationError(
            f"unsupported calibration file type {suffix or '(no extension)'!r} for {path}; "
            f"supported: {', '.join(FILE_EXTENSIONS)}. Convert the text to .txt or .jsonl."
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise CalibrationError(
            f"{path} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit for "
            "calibration files. Calibration needs only N x T tokens: cut the file down, or "
            "raise max_bytes."
        )
    if size == 0:
        raise CalibrationError(f"calibration file {path} is empty (0 bytes); give a file "
                               "with text in it")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_file(spec: str, text_column: str | None, max_bytes: int) -> Source:
    path = check_file(spec, max_bytes)
    suffix = path.suffix.lower()
    info: dict[str, Any] = {"file": str(path.resolve()), "format": suffix.lstrip("."),
                            "file_sha256": file_sha256(path), "file_bytes": path.stat().st_size}
    if suffix == ".npy":
        return Source("file", path.name, info, input_ids=_read_npy(path))
    column = None
    if suffix == ".parquet":
        column, names, texts = _read_parquet(path, text_column)
    else:
        text = _decode_text(path)
        if suffix == ".txt":
            names, texts = _split_txt(path, text)
        elif suffix == ".csv":
            column, names, texts = _read_csv(path, text, text_column)
        else:
            rows = _parse_jsonl(path, text)
            if _is_pretokenized_jsonl(rows, text_column):
                info["text_column"] = "input_ids"
                return Source("file", path.name, info, input_ids=_jsonl_ids(path, rows))
            column, names, texts = _jsonl_texts(path, rows, text_column)
    info["text_column"] = column
    if not texts:
        raise CalibrationError(f"{path} holds no non-empty text documents; add text to it")
    info["documents"] = len(texts)
    return Source("file", path.name, info, documents=texts, doc_names=names)


def _decode_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CalibrationError(f"{path} is UTF-16 encoded; calibration files must be UTF-8. "
                               "Re-save it as UTF-8.")
    if b"\x00" in data[:8192]:
        raise CalibrationError(
            f"{path} looks like a binary file (it contains NUL bytes), not text. Give a "
            "UTF-8 text file, or a .npy array of token ids."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CalibrationError(
            f"{path} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} "
            "is not valid UTF-8. Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise CalibrationError(f"calibration file {path} contains only whitespace; give a "
                               "file with text in it")
    return text


_TXT_BREAK = re.compile(r"\f|\n(?:[ \t]*\n){2,}")


def _split_txt(path: Path, text: str) -> tuple[list[str], list[str]]:
    parts = [p.strip("\n") for p in _TXT_BREAK.split(text)]
    parts = [p for p in parts if p.strip()]
    return [f"{path.name}#{i}" for i in range(len(parts))], parts


def _pick_column(path: Path, columns: list[str], text_column: str | None) -> str:
    if text_column is not None:
        if text_column not in columns:
            raise CalibrationError(
                f"{path} has no column {text_column!r}; its columns are: "
                f"{', '.join(map(repr, columns)) or '(none)'}. Set text_column to one of them."
            )
        return text_column
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return guess
    raise CalibrationError(
        f"{path}: no text column found among {', '.join(map(repr, columns)) or '(none)'}; "
        f"looked for {', '.join(TEXT_COLUMN_GUESSES)}. Set text_column to the column that "
        "holds the text."
    )


def _collect_texts(path: Path, column: str, values: list) -> tuple[str, list[str], list[str]]:
    names, texts = [], []
    for i, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, str):
            raise CalibrationError(
                f"{path}: row {i + 1} of column {column!r} is {type(value).__name__}, not "
                "text. Point text_column at a column of strings."
            )
        if value.strip():
            names.append(f"{column}#{i}")
            texts.append(value.replace("\r\n", "\n"))
    return column, names, texts


def _read_csv(path: Path, text: str, text_column: str | None) -> tuple[str, list[str], list[str]]:
    csv.field_size_limit(2**31 - 1)  # documents are longer than csv's 128 KB default
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = list(reader.fieldnames or [])
        column = _pick_column(path, columns, text_column)
        values = [row.get(column) for row in reader]
    except csv.Error as err:
        raise CalibrationError(f"{path} is not a valid CSV file: {err}. Check the quoting, "
                               "or save the text as .txt or .jsonl.") from None
    return _collect_texts(path, column, values)


def _read_parquet(path: Path, text_column: str | None) -> tuple[str, list[str], list[str]]:
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
        columns = list(pfile.schema_arrow.names)
    except Exception as err:
        raise CalibrationError(f"{path} is not a readable Parquet file ({err}); re-export it, "
                               "or give .jsonl or .csv") from None
    column = _pick_column(path, columns, text_column)
    values = pfile.read(columns=[column]).column(column).to_pylist()
    return _collect_texts(path, column, values)


def _parse_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise CalibrationError(f"{path}, line {lineno}: not valid JSON ({err.msg}). "
                                   "Each line of a .jsonl file must be one JSON object.") from None
        if not isinstance(obj, dict):
            raise CalibrationError(f"{path}, line {lineno}: expected a JSON object such as "
                                   f'{{"text": "..."}}; got {type(obj).__name__}')
        rows.append((lineno, obj))
    if not rows:
        raise CalibrationError(f"{path} has no JSON lines; add one object per line")
    return rows


def _is_pretokenized_jsonl(rows: list[tuple[int, dict]], text_column: str | None) -> bool:
    return "input_ids" in rows[0][1] and text_column in (None, "input_ids")


def _jsonl_texts(path: Path, rows, text_column: str | None) -> tuple[str, list[str], list[str]]:
    columns = list(dict.fromkeys(k for _, obj in rows[:100] for k in obj))
    column = _pick_column(path, columns, text_column)
    names, texts = [], []
    for lineno, obj in rows:
        value = obj.get(column)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CalibrationError(f"{path}, line {lineno}: {column!r} is "
                                   f"{type(value).__name__}, not text")
        if value.strip():
            names.append(f"{column}#line{lineno}")
            texts.append(value.replace("\r\n", "\n"))
    return column, names, texts


def _jsonl_ids(path: Path, rows) -> torch.Tensor:
    ids: list[list[int]] = []
    for lineno, obj in rows:
        value = obj.get("input_ids")
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise CalibrationError(f"{path}, line {lineno}: input_ids must be a list of "
                                   "integers")
        if ids and len(value) != len(ids[0]):
            raise CalibrationError(
                f"{path}: pre-tokenized rows are ragged (line {rows[0][0]} has "
                f"{len(ids[0])} ids, line {lineno} has {len(value)}). Every row must have "
                "the same length T; cut or pad them before saving."
            )
        ids.append(value)
    return torch.tensor(ids, dtype=torch.long)


def _read_npy(path: Path) -> torch.Tensor:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        raise CalibrationError(f"{path} is not a readable .npy array ({err}); save token ids "
                               "with numpy.save(path, ids) as an integer [N, T] array") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise CalibrationError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; expected integer "
            "token ids of shape [N, T] (pre-tokenized windows)."
        )
    return torch.from_numpy(array.astype(np.int64))


def pretokenized_windows(source: Source, tokenizer, model, held_out: int, base: dict):
    ids = source.input_ids
    n, t = ids.shape
    if n < 1 or t < 2:
        raise CalibrationError(f"{source.info.get('file')}: pre-tokenized ids have shape "
                               f"[{n}, {t}]; need at least 1 row of at least 2 tokens")
    vocab = vocab_size(tokenizer, model)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise CalibrationError(
            f"{source.info.get('file')}: token ids range from {lo} to {hi}, outside this "
            f"tokenizer's vocabulary [0, {vocab}). The file was tokenized for another model; "
            "re-tokenize it, or give the text instead."
        )
    if held_out:
        raise CalibrationError(
            "a pre-tokenized file has no text beyond its rows, so no held-out windows can be "
            "drawn from it. Use Calibration.split(n) to hold out some of its rows, or give "
            "the held-out windows as a second file."
        )
    recipe = {**base, "mode": "pretokenized", "samples": int(n), "seqlen": int(t),
              "role": "ranking", "documents": int(n)}
    return Calibration(base["spec"], ids.clone(), recipe), None
