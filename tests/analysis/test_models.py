"""analysis.models: device helpers."""

import pytest
import torch

from analysis.models import is_gpu


@pytest.mark.parametrize("device, expected", [
    ("cpu", False), ("cuda", True), ("cuda:1", True), ("mps", True), ("meta", False),
])
def test_is_gpu_counts_cuda_and_mps_as_accelerators(device, expected):
    assert is_gpu(device) is expected
    assert is_gpu(torch.device(device)) is expected
