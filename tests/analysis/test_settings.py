"""Defaults defined once in analysis.settings and read by every layer."""

from __future__ import annotations

import inspect

from analysis.settings import SPEED_PROMPT_LEN, speed_prompt_len
from entrodrop import service
from pruning.llamacpp import measure_gguf_speed
from pruning.speed import measure_speed


def test_speed_prompt_is_the_default_length_or_the_calibration_windows_when_shorter():
    assert speed_prompt_len(SPEED_PROMPT_LEN * 2) == SPEED_PROMPT_LEN
    assert speed_prompt_len(SPEED_PROMPT_LEN) == SPEED_PROMPT_LEN
    assert speed_prompt_len(16) == 16


def test_every_speed_timing_defaults_to_the_one_speed_prompt_length():
    for timing in (measure_speed, measure_gguf_speed, service.speed, service.engine_speed):
        default = inspect.signature(timing).parameters["prompt_len"].default
        assert default == SPEED_PROMPT_LEN, timing.__qualname__
