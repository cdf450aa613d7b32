#!/usr/bin/env bash
# The pytest suite (less its load tests) and the CPython test_asyncio runner on the other supported Python
# versions found on this machine (pyenv's 3.9 and 3.13: the oldest and newest supported),
# each in its own venv (.venv-3.X) with a wheel built for it and the libraries of the
# library tests (requirements-libs.txt: aiohttp, uvicorn, asyncpg...; pip picks releases
# that support that version). Called by scripts/test.sh after the main run; an interpreter
# that is not installed is reported and left out.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
    local minor="$1" candidate
    for candidate in /root/.pyenv/versions/"$minor".*/bin/python "$(command -v "python$minor" || true)"; do
        # pyenv shims exist for versions that are not selected: check it really runs.
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

for minor in 3.9 3.13; do
    if ! interpreter="$(find_python "$minor")"; then
        echo "== Python $minor: not installed on this machine, not tested"
        continue
    fi
    echo "== Python $minor ($interpreter)"
    venv=".venv-$minor"
    [ -x "$venv/bin/python" ] || "$interpreter" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check maturin pytest pytest-timeout pytest-asyncio \
        -r requirements-libs.txt
    rm -rf "target/wheels-$minor"
    "$venv/bin/python" -m maturin build --release -q -i "$venv/bin/python" -o "target/wheels-$minor"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
        "target/wheels-$minor"/ferroloop-*.whl
    # Run from tests/ so the installed wheel, not python/ferroloop, is imported. The load
    # tests (100 MB each way, 5,000 connections) and the seed patterns measure volume,
    # not version-specific behaviour: they run on the main Python only, to keep CI short.
    (cd tests && "../$venv/bin/python" -m pytest -q -p no:cacheprovider -c ../pytest.ini --rootdir .. \
        --ignore=test_net_load.py --ignore=test_seed_patterns.py .)
    "$venv/bin/python" tests/cpython/run_cpython_asyncio.py
done
