#!/usr/bin/env bash
# Build ferroloop and run every test: the Rust core's cargo tests, the pytest suite (each
# case on stock asyncio and on ferroloop), CPython's own test_asyncio against ferroloop, and
# both again on the other Python versions installed here (scripts/test-other-pythons.sh).
# The library tests (tests/test_libs_*.py) need PostgreSQL and Redis server binaries:
# scripts/services.sh installs them from Debian's packages when they are missing, and
# FERROLOOP_REQUIRE_SERVICES=1 makes those tests fail (not skip) if they are still missing.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
bash scripts/services.sh
export FERROLOOP_REQUIRE_SERVICES=1
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
