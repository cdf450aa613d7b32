#!/usr/bin/env bash
# Build ferroloop and run the main job: the seed asyncio patterns (core and I/O) on
# ferroloop, stock asyncio and uvloop, checked for equal results and timed side by side.
# The I/O patterns' Redis and PostgreSQL servers come from Debian's packages
# (scripts/services.sh installs them when missing); the demo starts and stops its own.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
bash scripts/services.sh

"$VENV_PY" benchmarks/seed_demo.py "$@"
