#!/usr/bin/env bash
# Build ferroloop and run the main job: the seed asyncio patterns on ferroloop, stock
# asyncio and uvloop, checked for equal results and timed side by side.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$VENV_PY" benchmarks/seed_demo.py "$@"
