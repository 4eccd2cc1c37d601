"""Spec parsing and the list of selectable sources."""

from __future__ import annotations

import pytest

from analysis.calibration import BUILTINS, PRESETS, CalibrationError, list_sources, load_calibration
from tests.analysis.calibration.support import settings


def test_unknown_builtin_and_preset_list_the_choices(tok):
    with pytest.raises(CalibrationError, match="builtin:licenses, builtin:pydocs"):
        load_calibration(settings("builtin:wiki"), tok)
    with pytest.raises(CalibrationError, match="preset:c4, preset:wikitext2"):
        load_calibration(settings("preset:pile"), tok)
    with pytest.raises(CalibrationError, match="tokenizer is needed"):
        load_calibration(settings("builtin:random"), None)


def test_list_sources_names_every_builtin_and_preset():
    rows = list_sources()
    names = {r["name"] for r in rows}
    assert {f"builtin:{b}" for b in BUILTINS} | {f"preset:{p}" for p in PRESETS} <= names
    assert all(r["kind"] in ("builtin", "preset", "file") and r["description"] for r in rows)
    assert [r["name"] for r in rows if r["needs_model"]] == ["builtin:selfgen"]
