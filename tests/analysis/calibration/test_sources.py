"""Source fingerprints."""

from __future__ import annotations

import pytest

from analysis.calibration import CalibrationError, source_fingerprint
from tests.analysis.calibration.support import settings


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
