"""Windows from documents: the research sampler, the EOS stream, held-out windows."""

from __future__ import annotations

import json
import random

import pytest
import torch

from analysis.calibration import CalibrationError, load_calibration, load_held_out
from tests.analysis.calibration.support import encode, settings, words


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


@pytest.fixture
def big_txt(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n\n".join(words(100 + i, 400) for i in range(6)), encoding="utf-8")
    return path


def test_held_out_windows_never_overlap_ranking_windows(tok, big_txt):
    s = settings(big_txt, n=16, t=40)
    ranking, held = load_calibration(s, tok, held_out=12)
    assert held.input_ids.shape == (12, 40)
    assert held.recipe["role"] == "held_out" and ranking.recipe["role"] == "ranking"
    # Asking for held-out windows does not change the ranking windows.
    assert ranking.fingerprint() == load_calibration(s, tok).fingerprint()
    assert held.fingerprint() == load_held_out(s, tok, 12).fingerprint()
    # Positions: no held-out window overlaps a ranking window of the same document.
    for _, doc, start in held.recipe["windows"]:
        for _, rdoc, rstart in ranking.recipe["windows"]:
            assert doc != rdoc or start >= rstart + 40 or rstart >= start + 40
    # Content: no 12-token run of a held-out window occurs in any ranking window.
    grams = {tuple(row[i:i + 12]) for row in ranking.input_ids.tolist() for i in range(29)}
    assert not any(tuple(row[i:i + 12]) in grams
                   for row in held.input_ids.tolist() for i in range(29))


def test_held_out_without_room_is_a_clear_error(tok, tmp_path):
    path = tmp_path / "one.txt"
    path.write_text(words(7, 60), encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"held-out windows .* do not overlap"):
        load_held_out(settings(path, n=8, t=40), tok, 4)
