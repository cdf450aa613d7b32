#!/usr/bin/env bash
# Create or update .venv-bench, the venv the benchmarks are measured in:
#   uvloop, rloop, httptools from PyPI (benchmarks/requirements-bench.txt), ferroloop from a
#   release WHEEL (not the editable development install of .venv, which changes under a
#   running benchmark whenever someone rebuilds), and wrk (Debian package) for net.py.
#
#   bash benchmarks/setup_bench_venv.sh [WHEEL]
#
# Without WHEEL, the newest target/wheels*/ferroloop-*.whl matching the venv's Python is
# used.  This script never builds ferroloop; to make a wheel (at a quiet moment):
#   .venv/bin/maturin build --release -i .venv-bench/bin/python -o target/wheels
# The venv's Python is $PYTHON, else the base interpreter of .venv, else pyenv's 3.11.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=.venv-bench
WHEEL="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
    PY="${PYTHON:-}"
    if [ -z "$PY" ] && [ -x .venv/bin/python ]; then
        PY="$(.venv/bin/python -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
    fi
    if [ -z "$PY" ] && command -v pyenv >/dev/null 2>&1; then
        V="$(pyenv versions --bare | grep -E '^3\.11(\.|$)' | sort -V | tail -1 || true)"
        [ -n "$V" ] && PY="$(pyenv root)/versions/$V/bin/python"
    fi
    PY="${PY:-python3}"
    echo "creating $VENV with $PY ($("$PY" -V 2>&1))"
    "$PY" -m venv "$VENV"
fi
BPY="$ROOT/$VENV/bin/python"
"$BPY" -m pip install -q --disable-pip-version-check -r benchmarks/requirements-bench.txt

if [ -z "$WHEEL" ]; then
    TAG="$("$BPY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
    WHEEL="$(ls -t target/wheels*/ferroloop-*-"$TAG"-*.whl 2>/dev/null | head -1 || true)"
fi
if [ -n "$WHEEL" ]; then
    "$BPY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
    echo "ferroloop installed from $WHEEL"
else
    echo "no ferroloop wheel for $("$BPY" -V) found under target/wheels*/: ferroloop will show"
    echo "as 'unavailable'. Build one at a quiet moment, then run this script again:"
    echo "  .venv/bin/maturin build --release -i $VENV/bin/python -o target/wheels"
fi

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        echo "warning: wrk not found; install it (apt-get install wrk) for net.py's http case" >&2
    fi
fi
"$BPY" - <<'PY'
import importlib
for name in ("uvloop", "rloop", "httptools", "ferroloop"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:10} {getattr(mod, '__version__', '?')}  {mod.__file__}")
    except ImportError as e:
        print(f"  {name:10} missing ({e})")
PY
