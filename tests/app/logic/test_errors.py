"""app/logic/errors.py: user errors get their message, bugs a line pointing at the log."""

from __future__ import annotations

from app.logic.errors import describe_error, error_log_path, record_internal_error
from app.logic.exports import ExportPathError
from app.logic.inputs import UploadError
from entrodrop import service


def test_describe_error():
    assert "Out of memory" in describe_error(RuntimeError("CUDA out of memory."))
    assert "Out of memory" in describe_error(MemoryError())
    assert describe_error(ExportPathError("bad name")) == "bad name"
    assert describe_error(RuntimeError("some bug")) is None
    assert describe_error(KeyError("x")) is None


def test_the_apps_own_errors_are_user_errors():
    assert issubclass(ExportPathError, service.USER_ERRORS[0])
    assert issubclass(UploadError, service.USER_ERRORS[0])
    assert describe_error(UploadError("too   big\nfile")) == "too big file"
    assert describe_error(FileNotFoundError("no such file: x")) == "no such file: x"


def test_internal_error_goes_to_the_log_and_the_user_gets_one_line(isolated_cache):
    try:
        {}["missing"]
    except KeyError as exc:
        line = record_internal_error("Drawing the chart", exc)
    path = error_log_path()
    assert path.parent == isolated_cache / "logs"
    assert line == (f"Internal error: Drawing the chart failed with KeyError: 'missing'. "
                    f"The full traceback is in `{path}`")
    assert "\n" not in line
    text = path.read_text()
    assert "Drawing the chart failed" in text and "Traceback (most recent call last)" in text
    assert "{}[\"missing\"]" in text  # the failing line itself
