"""What the benchmark scripts need to know about the loops they compare, and the table
helpers their reports share.

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

# The loops the benchmarks compare, in table order, and the one ratios are taken against.
LOOPS = ("asyncio", "uvloop", "rloop", "ferroloop")
BASE = "uvloop"

# ferroloop with its blocking detector on (a watchdog thread sampling the loop), for
# measuring the detector's overhead beside plain ferroloop; and its threshold, seconds.
DETECTOR_LOOP = "ferroloop+detector"
DETECTOR_THRESHOLD = 0.1
# Stalls the detector reported in this process (started ones, not their ends).
STALLS = [0]


def loop_version(name: str) -> str:
    """Version string of loop ``name`` ("asyncio", "uvloop", "rloop" or "ferroloop").

    For ferroloop it also says when the extension module was built, since benchmarks of a
    development checkout are only comparable for the same build.
    """
    name = name.split("+")[0]  # DETECTOR_LOOP is ferroloop's version
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
    """A new event loop of kind ``name`` (one of ``LOOPS``, or ``DETECTOR_LOOP``)."""
    if name == "asyncio":
        # Explicitly the stdlib's selector loop, whatever policy is installed.
        import asyncio

        return asyncio.DefaultEventLoopPolicy().new_event_loop()
    if name in ("uvloop", "rloop", "ferroloop"):
        return __import__(name).new_event_loop()
    if name == DETECTOR_LOOP:
        loop = make_loop("ferroloop")
        loop.set_blocking_threshold(DETECTOR_THRESHOLD, _count_stall)
        return loop
    raise ValueError(f"unknown loop {name!r}")


def _count_stall(report) -> None:
    """The detector's callback in benchmarks: formats the report as the default reporter
    would (so that a stall costs what it costs), counts it, prints nothing."""
    report.format()
    if not report.ended:
        STALLS[0] += 1


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


def machine_info() -> dict:
    """CPU, cores, Python and date, for the header of a results table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def machine_line(meta: dict, versions: str) -> str:
    """'Machine: <cpu>, N cores (M usable) | Python X (CPython) | <versions> | <date>'."""
    return (f"Machine: {meta['cpu']}, {meta['cores']} cores ({meta['usable_cores']} usable) | "
            f"Python {meta['python']} ({meta['implementation']}) | {versions} | {meta['date']}")


def fmt_rate(x) -> str:
    """A rate with 3 significant digits and a k/M/G suffix: '1.42M' ("-" for None)."""
    if x is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def render_table(headers, rows, markdown) -> list:
    """The lines of a table: Markdown, or plain text in aligned columns (a "geomean" row
    gets a rule above it)."""
    out = []
    if markdown:
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join(["---"] + ["--:"] * (len(headers) - 1)) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r[0] == "geomean":
            out.append("  ".join("-" * w for w in widths))
        out.append(line(r))
    return out
