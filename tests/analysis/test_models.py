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


def test_a_model_path_that_is_a_symlink_loop_or_dangling_link_says_so(tmp_path):
    from analysis.convert import ModelLoadError
    from analysis.models import resolve_spec

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ModelLoadError, match="cannot read model path .*: it is a symlink loop"):
        resolve_spec(str(tmp_path / "a"))
    (tmp_path / "m.gguf").symlink_to(tmp_path / "gone.gguf")
    with pytest.raises(ModelLoadError, match="it is a symlink to .*gone.gguf', which does not "
                                             "exist"):
        resolve_spec(str(tmp_path / "m.gguf"))
