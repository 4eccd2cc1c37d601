"""Calibration data: N token windows of T tokens each, from a named source.

A spec (`CalibrationSettings.spec`) names the source: `builtin:<name>`, `preset:<name>` or a
file path (`specs`). Built-in text (`builtin`), presets (`presets`) and files (`files`) give
documents, from which `sampling` cuts windows the way the research code does; `synthetic`
makes random and self-generated windows. `load_calibration` ties them together.

Held-out windows (`load_held_out`, `load_calibration(held_out=n)`) come from the same source
and never overlap a ranking window; `builtin:selfgen` and `builtin:random` draw fresh
sequences instead.
"""

from analysis.calibration.base import Calibration, CalibrationError, preview
from analysis.calibration.builtin import BUILTINS
from analysis.calibration.files import DEFAULT_MAX_BYTES
from analysis.calibration.load import load_calibration, load_held_out
from analysis.calibration.presets import PRESETS
from analysis.calibration.sources import source_fingerprint
from analysis.calibration.specs import list_sources

__all__ = [
    "BUILTINS", "Calibration", "CalibrationError", "DEFAULT_MAX_BYTES", "PRESETS",
    "list_sources", "load_calibration", "load_held_out", "preview", "source_fingerprint",
]
