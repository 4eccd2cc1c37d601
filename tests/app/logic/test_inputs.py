"""app/logic/inputs.py: the start-up model, model sources and uploaded calibration files."""

from __future__ import annotations

import pytest

from app.logic.inputs import (
    DEFAULT_UPLOAD_MAX_MB,
    UploadError,
    model_source_of,
    save_upload,
    startup_model_spec,
    upload_limit_bytes,
)


def test_startup_spec_prefers_argument_then_env_then_demo():
    assert startup_model_spec(["--model", "/m"], {"ENTRODROP_MODEL": "/e"}) == "/m"
    assert startup_model_spec(["-x", "--other", "1"], {"ENTRODROP_MODEL": "/e"}) == "/e"
    assert startup_model_spec([], {}) == "demo:smollm2-135m"
    # No prefix matching: pytest's or streamlit's own options never pass for --model.
    assert startup_model_spec(["--mod", "/x"], {}) == "demo:smollm2-135m"


def test_model_source_of(tmp_path):
    assert model_source_of("demo:gemma3-270m") == "demo"
    assert model_source_of(str(tmp_path)) == "local"
    assert model_source_of("missing/file.gguf") == "local"
    assert model_source_of("HuggingFaceTB/SmolLM2-135M") == "hub"


def test_save_upload_checks_type_size_and_content(tmp_path):
    path = save_upload("my notes.txt", b"hello", max_bytes=100, folder=tmp_path)
    assert path.read_bytes() == b"hello" and path.name == "my_notes.txt"
    again = save_upload("my notes.txt", b"hello, changed", max_bytes=100, folder=tmp_path)
    assert again != path  # new content, new spec (and so a new cache key)
    with pytest.raises(UploadError, match="not a supported"):
        save_upload("x.exe", b"data", max_bytes=100, folder=tmp_path)
    with pytest.raises(UploadError, match="empty"):
        save_upload("x.txt", b"", max_bytes=100, folder=tmp_path)
    with pytest.raises(UploadError, match="upload limit"):
        save_upload("x.csv", b"x" * 101, max_bytes=100, folder=tmp_path)
    with pytest.raises(UploadError):
        save_upload("../../x.txt.sh", b"x", max_bytes=100, folder=tmp_path)
    assert save_upload("../../evil.txt", b"x", max_bytes=100,
                       folder=tmp_path).parent.parent == tmp_path


def test_upload_limit_from_env():
    assert upload_limit_bytes({"ENTRODROP_UPLOAD_MAX_MB": "2"}) == 2 * 2**20
    assert upload_limit_bytes({}) == DEFAULT_UPLOAD_MAX_MB * 2**20
