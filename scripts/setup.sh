#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh, sourced by both:
# a project venv in .venv with the build and test tools from PyPI, and ferroloop built
# (release mode) and installed into it. Idempotent; a fresh machine needs only Python 3
# and a Rust toolchain (cargo >= 1.85).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install a Rust toolchain >= 1.85 (rustup)" >&2
    exit 1
fi
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        # Debian's python3 ships venv separately.
        if command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        fi
        "$PYTHON" -m venv .venv
    fi
fi
VENV_PY="$ROOT/.venv/bin/python"
"$VENV_PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
"$VENV_PY" -m maturin develop --release -q
