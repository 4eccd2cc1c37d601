"""Calibration files: formats, pre-tokenized ids and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.calibration import (
    CalibrationError,
    load_calibration,
    load_held_out,
    source_fingerprint,
)
from tests.analysis.calibration.support import assert_windows_from, settings, words


def test_txt_documents_split_at_form_feeds_and_double_blank_lines(tok, tmp_path):
    a, b, c, d = (words(i, 200) for i in range(4))
    path = tmp_path / "t.txt"
    path.write_text(f"{a}\n\n{b}\n\n\n{c}\f{d}\r\n", encoding="utf-8")
    cal = load_calibration(settings(path, n=8, t=30), tok)
    assert cal.recipe["documents"] == 3  # a and b share a document: one blank line
    assert cal.recipe["format"] == "txt" and len(cal.recipe["file_sha256"]) == 64
    one = tmp_path / "one.txt"
    one.write_text(f"{a}\n\n{b}", encoding="utf-8")
    assert load_calibration(settings(one, n=2, t=30), tok).recipe["documents"] == 1


def test_jsonl_with_a_named_column(tok, tmp_path):
    texts = [words(i, 150) for i in range(4)]
    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps({"id": i, "passage": t}) + "\n"
                            for i, t in enumerate(texts)), encoding="utf-8")
    cal = load_calibration(settings(path, column="passage"), tok)
    assert cal.recipe["text_column"] == "passage" and cal.recipe["documents"] == 4
    assert_windows_from(cal, tok, texts)


def test_csv_with_a_guessed_column(tok, tmp_path):
    texts = [words(i, 150) + ', "quoted", and more' for i in range(3)]
    path = tmp_path / "d.csv"
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "content"])
        writer.writerows([[f"t{i}", t] for i, t in enumerate(texts)])
    cal = load_calibration(settings(path), tok)
    assert cal.recipe["text_column"] == "content" and cal.recipe["documents"] == 3
    assert_windows_from(cal, tok, texts)


def test_parquet_with_a_guessed_column(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [words(i, 150) for i in range(3)]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "body": texts}), path)
    cal = load_calibration(settings(path), tok)
    assert cal.recipe["text_column"] == "body" and cal.recipe["format"] == "parquet"
    assert_windows_from(cal, tok, texts)


def test_pretokenized_npy_is_used_as_is(tok, tmp_path):
    ids = np.random.default_rng(0).integers(0, 100, size=(5, 33)).astype(np.int32)
    path = tmp_path / "ids.npy"
    np.save(path, ids)
    cal = load_calibration(settings(path, n=32, t=128), tok)  # N and T come from the file
    assert torch.equal(cal.input_ids, torch.from_numpy(ids).long())
    assert cal.recipe["mode"] == "pretokenized"
    assert (cal.recipe["samples"], cal.recipe["seqlen"]) == (5, 33)


def test_pretokenized_jsonl_is_used_as_is(tok, tmp_path):
    rows = [[4 + (i * 7 + j) % 90 for j in range(12)] for i in range(3)]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in rows), encoding="utf-8")
    cal = load_calibration(settings(path), tok)
    assert cal.input_ids.tolist() == rows and cal.recipe["mode"] == "pretokenized"


def test_pretokenized_errors(tok, tmp_path):
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text('{"input_ids": [5, 6, 7]}\n{"input_ids": [5, 6]}\n', encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"ragged \(line 1 has 3 ids, line 2 has 2\)"):
        load_calibration(settings(ragged), tok)
    big = tmp_path / "big.npy"
    np.save(big, np.array([[5, 6, 7], [8, 9, 100]]))
    with pytest.raises(CalibrationError, match=r"from 5 to 100, outside .* \[0, 100\)"):
        load_calibration(settings(big), tok)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.arange(10))
    with pytest.raises(CalibrationError, match=r"shape \(10,\); expected integer"):
        load_calibration(settings(flat), tok)
    floats = tmp_path / "floats.npy"
    np.save(floats, np.ones((2, 4), dtype=np.float32))
    with pytest.raises(CalibrationError, match="float32 array"):
        load_calibration(settings(floats), tok)


def test_held_out_of_pretokenized_points_to_split(tok, tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(40, dtype=np.int64).reshape(4, 10) % 90 + 4)
    with pytest.raises(CalibrationError, match="Calibration.split"):
        load_held_out(settings(path), tok, 2)


@pytest.mark.parametrize(
    "name, content, column, pattern",
    [
        ("empty.txt", b"", None, "is empty"),
        ("blank.txt", b"  \n\n \t\n", None, "only whitespace"),
        ("bin.txt", b"abc\x00\x01\x02def", None, "binary file"),
        ("latin.txt", "caf\u00e9 ol\u00e9".encode("latin-1"), None,
         r"not UTF-8 text: byte 0xe9 at offset 3"),
        ("u16.txt", "hello".encode("utf-16"), None, "UTF-16"),
        ("data.docx", b"hello", None, r"unsupported calibration file type '\.docx'"),
        ("nocol.jsonl", b'{"title": "a", "n": 1}\n', None,
         r"no text column found among 'title', 'n'"),
        ("wrongcol.csv", b"title,body\na,b\n", "passage",
         r"no column 'passage'; its columns are: 'title', 'body'"),
        ("badjson.jsonl", b'{"text": "a"}\n{oops\n', None, "line 2: not valid JSON"),
        ("list.jsonl", b'["a", "b"]\n', None, "expected a JSON object"),
        ("notext.jsonl", b'{"text": ""}\n{"text": null}\n', None, "no non-empty text"),
        ("nums.jsonl", b'{"text": 5}\n', None, "'text' is int, not text"),
        ("bad.parquet", b"not parquet at all", None, "not a readable Parquet file"),
        ("bad.npy", b"not numpy", None, "not a readable .npy array"),
    ],
)
def test_bad_files_give_specific_messages(tok, tmp_path, name, content, column, pattern):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CalibrationError, match=pattern):
        load_calibration(settings(path, column=column), tok)


def test_missing_file_folder_and_size_limit(tok, tmp_path):
    with pytest.raises(CalibrationError, match="calibration file not found: .*nope.txt"):
        load_calibration(settings(tmp_path / "nope.txt"), tok)
    with pytest.raises(CalibrationError, match="is a folder"):
        load_calibration(settings(tmp_path), tok)
    path = tmp_path / "big.txt"
    path.write_text(words(1, 500), encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"over the 0\.0 MB limit"):
        load_calibration(settings(path), tok, max_bytes=100)
    with pytest.raises(CalibrationError, match="over the"):
        source_fingerprint(settings(path), max_bytes=100)
