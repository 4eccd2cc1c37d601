"""builtin:random and builtin:selfgen."""

from __future__ import annotations

import pytest
import torch

from analysis.calibration import CalibrationError, load_calibration
from tests.analysis.calibration.support import settings
from tests.tiny_models import tiny_model


def test_random_source_is_seeded_and_avoids_special_tokens(tok):
    a = load_calibration(settings("builtin:random", n=8, t=50), tok)
    b = load_calibration(settings("builtin:random", n=8, t=50), tok)
    c = load_calibration(settings("builtin:random", n=8, t=50, seed=7), tok)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert int(a.input_ids.min()) >= 4 and int(a.input_ids.max()) < 100
    _, held = load_calibration(settings("builtin:random", n=8, t=50), tok, held_out=3)
    assert held.input_ids.shape == (3, 50) and not torch.equal(held.input_ids, a.input_ids[:3])


def test_selfgen_needs_a_model(tok):
    with pytest.raises(CalibrationError, match="no model was given"):
        load_calibration(settings("builtin:selfgen"), tok)


def test_selfgen_generates_seeded_text_with_the_model(tok):
    model = tiny_model("llama").train()
    s = settings("builtin:selfgen", n=9, t=5)
    a = load_calibration(s, tok, model=model)
    assert model.training  # the caller's mode is restored
    again, held = load_calibration(s, tok, model=model.eval(), held_out=2)
    other = load_calibration(settings("builtin:selfgen", n=9, t=5, seed=3), tok, model=model)
    assert a.input_ids.shape == (9, 5) and a.fingerprint() == again.fingerprint()
    assert a.fingerprint() != other.fingerprint()
    assert int(a.input_ids.min()) >= 4 and int(a.input_ids.max()) < 100
    assert a.recipe["mode"] == "generated" and held.input_ids.shape == (2, 5)
    assert not torch.equal(held.input_ids, a.input_ids[:2])
