"""What the benchmark scripts need to know about the loops they compare.

Shared by ``micro.py``, ``seed_demo.py``, ``net.py`` and ``procs.py`` (all run as scripts
from this directory).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import subprocess


def loop_version(name: str) -> str:
    """Version string of loop ``name`` ("asyncio", "uvloop", "rloop" or "ferroloop").

    For ferroloop it also says when the extension module was built, since benchmarks of a
    development checkout are only comparable for the same build.
    """
    if name == "asyncio":
        return "stdlib " + platform.python_version()
    mod = __import__(name)
    ver = getattr(mod, "__version__", None)
    if ver is None:
        try:
            from importlib.metadata import version

            ver = version(name)
        except Exception:
            ver = "?"
    ext = getattr(mod, "_ferroloop", None)
    if name == "ferroloop" and getattr(ext, "__file__", None):
        built = _dt.datetime.fromtimestamp(os.path.getmtime(ext.__file__))
        ver = f"{ver} (built {built:%Y-%m-%d %H:%M})"
    return str(ver)


def make_loop(name: str):
    """A new event loop of kind ``name`` ("asyncio", "uvloop", "rloop" or "ferroloop")."""
    if name == "asyncio":
        # Explicitly the stdlib's selector loop, whatever policy is installed.
        import asyncio

        return asyncio.DefaultEventLoopPolicy().new_event_loop()
    if name in ("uvloop", "rloop", "ferroloop"):
        return __import__(name).new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


# Worker subprocesses print one line "@@RESULT@@<json>" with their result.
RESULT_MARK = "@@RESULT@@"


def result_line(obj) -> str:
    """The line a worker prints to report ``obj``."""
    return RESULT_MARK + json.dumps(obj)


def worker_result(stdout: str):
    """The object a worker reported on ``stdout``, or ``None`` if it reported nothing."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None


def how_it_died(returncode: int) -> str:
    """'exit status N' or 'signal SIGSEGV' for a worker that reported nothing."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exit status {returncode}"


def run_worker(cmd, timeout, cwd=None):
    """Run the worker command ``cmd``; return the dict it reported, or an error dict
    ({"ok": False, "error": ..., "traceback": ...}) if it hung or died without reporting."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s (hang?)"}
    result = worker_result(p.stdout)
    if result is not None:
        return result
    lines = p.stderr.strip().splitlines() or ["<no output on stderr>"]
    key = next((ln.strip() for ln in lines
                if "Fatal Python error" in ln or "panicked" in ln), None)
    return {"ok": False, "error": f"worker died ({how_it_died(p.returncode)})"
            + (f": {key}" if key else ""),
            "traceback": "\n".join(lines[-20:]) if p.stderr.strip() else None}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "0.84 0.94 1.00" ("?" if unknown)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"
