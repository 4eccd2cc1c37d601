"""The import-layer contract in pyproject.toml ([tool.importlinter]) holds, and can fail.

The layers point one way: app -> entrodrop (service + CLI) -> pruning -> analysis; and no
module outside app imports streamlit. `lint-imports` checks both; it must run from the
repository root, with the root on PYTHONPATH, because app/ is not an installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("analysis", "pruning", "entrodrop", "app")
# The venv's lint-imports, run by this interpreter (importlinter has no __main__ module).
LINT_IMPORTS = (sys.executable, "-c",
                "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())")


def lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess:
    """Run lint-imports on the project at ``root`` (only ``contracts``, if named)."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
    args = [*LINT_IMPORTS, "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def test_import_layers_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, output(result)
    assert "Contracts: 2 kept, 0 broken." in result.stdout, output(result)


def test_only_app_imports_streamlit():
    result = lint_imports(ROOT, "streamlit-only-in-app")
    assert result.returncode == 0, output(result)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the four packages and pyproject.toml, and lint-imports' output on it."""
    root = tmp_path_factory.mktemp("pristine")
    copy_project(root)
    return root, lint_imports(root).stdout


def copy_project(dest: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


@pytest.mark.parametrize(
    ("module", "added", "contract", "offending"),
    [
        ("analysis/paths.py", "import pruning.stages\n", "layers",
         "analysis.paths -> pruning.stages"),
        # An import inside a function is still an upward dependency.
        ("pruning/ranking.py", "def _upward():\n    from entrodrop import service\n",
         "layers", "pruning.ranking -> entrodrop.service"),
        ("entrodrop/cli/common.py", "from app import state\n", "layers", "entrodrop.cli.common -> app.state"),
        ("pruning/ranking.py", "import streamlit\n", "streamlit-only-in-app",
         "pruning.ranking -> streamlit"),
        ("analysis/estimators.py", "import streamlit as st\n", "streamlit-only-in-app",
         "analysis.estimators -> streamlit"),
    ],
)
def test_import_contract_fails_on_an_upward_import(
    tmp_path, pristine, module, added, contract, offending
):
    _, before = pristine
    assert offending not in before, before  # the finding below is the added line's
    copy_project(tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + "\n\n" + added)

    result = lint_imports(tmp_path)

    assert result.returncode != 0, output(result)
    assert offending in result.stdout, output(result)
    broken = lint_imports(tmp_path, contract)
    assert broken.returncode != 0, output(broken)
    assert offending in broken.stdout, output(broken)
