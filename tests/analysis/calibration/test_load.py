"""load_calibration as a whole: N and T, held-out counts, recipes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.calibration import CalibrationError, load_calibration, load_held_out
from analysis.settings import CalibrationSettings, SettingsError
from tests.analysis.calibration.support import settings


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


def test_bad_held_out_count(tok, docs_file):
    with pytest.raises(CalibrationError, match="non-negative"):
        load_calibration(settings(docs_file[0]), tok, held_out=-1)
    with pytest.raises(CalibrationError, match=">= 1"):
        load_held_out(settings(docs_file[0]), tok, 0)


def test_recipes_are_json_safe(tok, docs_file, tmp_path):
    np.save(tmp_path / "ids.npy", np.full((2, 5), 7))
    cals = [load_calibration(settings(docs_file[0]), tok),
            load_calibration(settings("builtin:random"), tok),
            load_calibration(settings(tmp_path / "ids.npy"), tok)]
    for cal in cals:
        recipe = json.loads(json.dumps(cal.recipe))
        assert recipe["spec"] == cal.spec and recipe["seed"] == 2024
        assert len(recipe["source_fingerprint"]) == 64
