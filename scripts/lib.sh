# Helpers shared by scripts/setup.sh and scripts/setup_vllm.sh; sourced, never run alone.
# The sourcing script sets TAG (log prefix), VENV, STAMP, PYTHON and defines current_hash.

say() { echo "[$TAG] $*"; }
die() { echo "[$TAG] ERROR: $*" >&2; exit 1; }

venv_works() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }

up_to_date() {
    venv_works && [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(current_hash)" ]]
}

# Atomic: a half-written stamp must never look valid.
write_stamp() { current_hash >"$STAMP.tmp" && mv -f "$STAMP.tmp" "$STAMP"; }

# pip warns once per missing package about local extra indexes that some machines
# configure; that noise would bury the progress lines, so it is dropped.
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 \
        | { grep -v -F "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}

# Creates $VENV with $PYTHON (>= 3.10) unless it already works; --clear also repairs a
# venv whose interpreter no longer runs.
make_venv() {
    venv_works && return 0
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "'$PYTHON' not found. Install Python >= 3.10 or set PYTHON=/path/to/python3."
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$("$PYTHON" --version 2>&1) is too old; EntroDrop needs Python >= 3.10."
    say "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv --clear "$VENV" \
        || die "could not create $VENV (on Debian: apt-get install python3-venv)"
}
