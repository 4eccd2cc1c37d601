"""The windows themselves: fingerprints, split rows, previews."""

from __future__ import annotations

import pytest
import torch

from analysis.calibration import Calibration, CalibrationError, load_calibration, preview
from tests.analysis.calibration.support import settings


def test_calibration_fingerprint_depends_on_tokens_and_shape():
    ids = torch.arange(12).reshape(3, 4)
    a = Calibration("x", ids.clone(), {})
    assert a.fingerprint() == Calibration("y", ids.clone(), {"other": 1}).fingerprint()
    assert a.fingerprint() != Calibration("x", ids.reshape(4, 3).clone(), {}).fingerprint()
    assert a.fingerprint() != Calibration("x", ids + 1, {}).fingerprint()
    with pytest.raises(CalibrationError, match="2-D int64"):
        Calibration("x", ids.float(), {})


def test_split_keeps_rows_in_order(tok, docs_file):
    cal = load_calibration(settings(docs_file[0], n=6), tok)
    first, last = cal.split(2)
    assert first.input_ids.shape[0] == 4 and last.input_ids.shape[0] == 2
    assert torch.equal(torch.cat([first.input_ids, last.input_ids]), cal.input_ids)
    assert last.recipe["role"] == "held_out" and last.recipe["windows"] == cal.recipe["windows"][4:]
    for bad in (0, 6, -1):
        with pytest.raises(CalibrationError, match="0 < n_held_out < N"):
            cal.split(bad)


def test_preview_decodes_and_truncates(tok, docs_file):
    path, texts = docs_file
    cal = load_calibration(settings(path, n=4, t=60), tok)
    shown = preview(cal, tok, n=2, chars=25)
    assert len(shown) == 2 and all(len(s) == 26 and s.endswith("…") for s in shown)
    full = preview(cal, tok, n=1, chars=1000)[0]
    assert any(full.replace("<s>", "") in t for t in texts)
