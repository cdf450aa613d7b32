#!/usr/bin/env bash
# Build ferroloop and run every test: the Rust core's cargo tests, the pytest suite (each
# case on stock asyncio and on ferroloop), CPython's own test_asyncio against ferroloop, and
# both again on the other Python versions installed here (scripts/test-other-pythons.sh).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo "== cargo test (ferroloop-core)"
cargo test -q -p ferroloop-core
if cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy (workspace lints: every unsafe block documented)"
    cargo clippy -q --all-targets -- -D warnings
else
    echo "== cargo clippy: not installed with this toolchain, lints not checked"
fi
echo "== stubtest (python/ferroloop/_ferroloop.pyi against the built module)"
"$VENV_PY" -m mypy.stubtest ferroloop._ferroloop
echo "== pytest (asyncio and ferroloop)"
"$VENV_PY" -m pytest tests
echo "== Python 3.9 and 3.13: pytest and CPython test_asyncio"
bash scripts/test-other-pythons.sh
echo "== CPython test_asyncio on ferroloop"
"$VENV_PY" tests/cpython/run_cpython_asyncio.py
