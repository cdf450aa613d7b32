#!/usr/bin/env python3
"""ferroloop seed demo: everyday asyncio patterns, on every event loop.

Runs common asyncio patterns on stock asyncio, uvloop (if installed) and
ferroloop: the core ones (``_seed_core.py``: gather, wait_for with timeouts, a
Semaphore-limited gather, TaskGroup, cancelling a tree of tasks,
run_in_executor) and the I/O ones (``_seed_io.py``: concurrent HTTP fetches
against a local aiohttp server, a Semaphore-limited crawler over a generated
site, a WebSocket chat room, a redis-py pool and an asyncpg pool against real
Redis and PostgreSQL servers that this script starts on loopback and stops).

It is both a demo and a smoke test:

* every pattern returns a deterministic result, and the result on each loop
  must equal the result on stock asyncio (the exit status is 1 otherwise);
* the time each pattern took is printed side by side (median of --runs runs,
  measured inside the running loop).

Usage::

    python benchmarks/seed_demo.py                  # all loops, 5 runs each
    python benchmarks/seed_demo.py --runs 3 --loops asyncio,ferroloop
    python benchmarks/seed_demo.py --require-ferroloop   # fail if not importable
    python benchmarks/seed_demo.py --patterns http_gather,crawler

Each loop runs in its own subprocess, so a crash in one loop is reported
instead of taking the demo down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import traceback

from _loops import how_it_died, loop_version, result_line, worker_result
from _seed_core import CORE_PATTERNS
from _seed_io import IO_PATTERNS, SERVICE_ENV

LOOPS = ("asyncio", "uvloop", "ferroloop")
PATTERNS = CORE_PATTERNS + IO_PATTERNS
# The patterns that need a server started by this script, and which.
SERVICE_OF = {"redis_pool": "redis", "pg_pool": "postgres"}
TESTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")


# ==========================================================================
# Running a pattern on a given loop (inside a worker subprocess)
# ==========================================================================

def get_runner(loop_name):
    """Return a ``run(coro)`` function that runs ``coro`` on a fresh loop."""
    if loop_name == "asyncio":
        return asyncio.run
    mod = __import__(loop_name)
    if hasattr(mod, "run"):
        return mod.run                       # ferroloop.run / uvloop.run
    if sys.version_info >= (3, 11):
        def run(coro):
            with asyncio.Runner(loop_factory=mod.new_event_loop) as runner:
                return runner.run(coro)
        return run

    def run(coro):
        loop = mod.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return run


async def _timed(pattern):
    loop = asyncio.get_running_loop()
    cls = f"{type(loop).__module__}.{type(loop).__qualname__}"
    t0 = time.perf_counter()
    result = await pattern()
    return result, time.perf_counter() - t0, cls


def _normalize(obj):
    """Round-trip through JSON so tuples/lists compare the same everywhere."""
    return json.loads(json.dumps(obj))


def _tb_tail(lines=14):
    tb = traceback.format_exc().rstrip().splitlines()
    return "\n".join(tb[-lines:])


def probe(loop_name):
    """Can this loop be imported and run a trivial coroutine?"""
    try:
        run = get_runner(loop_name)
        _, _, cls = run(_timed(lambda: asyncio.sleep(0)))
        return {"ok": True, "version": loop_version(loop_name), "loop_class": cls}
    except ImportError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    except BaseException as e:  # noqa: BLE001 - importable but broken
        return {"ok": False, "broken": True, "error": f"{type(e).__name__}: {e}",
                "traceback": _tb_tail()}


def worker(loop_name, pattern_name, runs):
    """Run one pattern ``runs`` times on one loop, each time on a fresh loop."""
    pattern = dict(PATTERNS)[pattern_name]
    entry = {"ok": True, "times": []}
    try:
        run = get_runner(loop_name)
        for i in range(runs):
            result, elapsed, cls = run(_timed(pattern))
            result = _normalize(result)
            entry["times"].append(elapsed)
            entry["loop_class"] = cls
            if i == 0:
                entry["result"] = result
            elif result != entry["result"]:
                entry.update(ok=False, error=(
                    f"run {i + 1} gave a different result than run 1: "
                    f"{short(result, 300)} != {short(entry['result'], 300)}"))
                break
    except BaseException as e:  # noqa: BLE001
        entry.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=_tb_tail())
    return entry


# ==========================================================================
# Parent: one subprocess per (loop, pattern); compare and print
# ==========================================================================

def spawn(args, timeout):
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "hung": True,
                "error": f"no answer within {timeout:.0f} s (hang?)"}
    result = worker_result(p.stdout)
    if result is not None:
        return result
    tail = "\n".join(p.stderr.strip().splitlines()[-8:]) or "<no output on stderr>"
    how = how_it_died(p.returncode)
    return {"ok": False, "crashed": True, "error": f"process died ({how})",
            "traceback": tail if p.stderr.strip() else None}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_ms(seconds):
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def short(obj, width=100):
    s = json.dumps(obj)
    return s if len(s) <= width else s[: width - 3] + "..."


def run_patterns(loops, patterns, args):
    """Each pattern on each loop, a worker process per (loop, pattern); the reports."""
    reports = {}
    for ln in loops:
        rep = spawn(["--_probe", ln], args.timeout)
        rep["patterns"] = {}
        reports[ln] = rep
        if not rep["ok"]:
            if not rep.get("broken") and not rep.get("crashed") and not rep.get("hung"):
                print(f"  {ln:<9}: not installed ({rep['error']})")
                continue
            # Importable but failing even a trivial run: still try the
            # patterns so the report shows what breaks.
            print(f"  {ln:<9}: BROKEN on a trivial run ({rep['error']})")
            rep["ok"] = True
            rep["broken"] = True
        else:
            print(f"  {ln:<9}: {rep['version']}, loop class {rep['loop_class']}")
        hangs = 0
        for name, _ in patterns:
            print(f"             {name} ...", end="", flush=True)
            if hangs >= 2:
                e = {"ok": False, "skipped": True,
                     "error": "skipped: loop hung twice already"}
            else:
                e = spawn(["--_worker", ln, name, "--runs", str(args.runs)],
                          args.timeout)
            hangs += bool(e.get("hung"))
            rep["patterns"][name] = e
            if e["ok"]:
                print(f" {fmt_ms(statistics.median(e['times']))}")
            else:
                print(f" FAILED: {e['error'].splitlines()[0]}")
    print()
    return reports


@contextlib.contextmanager
def demo_services(names):
    """Start the Redis/PostgreSQL servers the chosen patterns use (binaries permitting)
    and name them to the workers through ``SERVICE_ENV``; stop them at the end."""
    sys.path.insert(0, TESTS_DIR)
    import looptest_servers as servers  # the library tests' servers, without pytest

    started = []
    # Stopped by a signal, the servers must not outlive the demo: SIGTERM (the default
    # of kill, pkill, timeout) unwinds through the finally below like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for name in names:
            if name == "redis" and shutil.which("redis-server"):
                server = servers.RedisServer(shutil.which("redis-server"))
            elif name == "postgres" and servers.postgres_bindir():
                server = servers.PostgresServer(servers.postgres_bindir())
            else:
                print(f"  ({name}: no server binary; scripts/services.sh installs it)")
                continue
            started.append(server)
            server.start()
            os.environ[SERVICE_ENV[name]] = f"{server.host}:{server.port}"
        yield
    finally:
        for server in started:
            server.stop()
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run common asyncio patterns on asyncio, uvloop and "
                    "ferroloop; check the results agree and compare timings.")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs per pattern per loop; the median is shown (default 5)")
    ap.add_argument("--loops", default=",".join(LOOPS),
                    help="comma-separated subset of: " + ", ".join(LOOPS))
    ap.add_argument("--patterns", default=",".join(name for name, _ in PATTERNS),
                    help="comma-separated subset of: " + ", ".join(n for n, _ in PATTERNS))
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds before a loop's worker is declared hung")
    ap.add_argument("--require-ferroloop", action="store_true",
                    help="exit non-zero if ferroloop cannot be imported")
    ap.add_argument("--json", metavar="FILE", help="write raw results as JSON")
    ap.add_argument("--show-results", action="store_true",
                    help="print each pattern's result value")
    ap.add_argument("--_worker", nargs=2, metavar=("LOOP", "PATTERN"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--_probe", metavar="LOOP", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._probe or args._worker:
        import faulthandler  # a crashing loop then prints the Python stack
        faulthandler.enable()
        out = probe(args._probe) if args._probe else worker(*args._worker, args.runs)
        print(result_line(out), flush=True)
        return 0

    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = set(loops) - set(LOOPS)
    if unknown:
        ap.error(f"unknown loop(s): {', '.join(sorted(unknown))}")
    if "asyncio" not in loops:
        loops.insert(0, "asyncio")   # stock asyncio is the reference
    chosen = {x.strip() for x in args.patterns.split(",") if x.strip()}
    unknown = chosen - set(dict(PATTERNS))
    if unknown:
        ap.error(f"unknown pattern(s): {', '.join(sorted(unknown))}")
    patterns = [(name, fn) for name, fn in PATTERNS if name in chosen]

    print("ferroloop seed demo: common asyncio patterns on each event loop")
    print(f"Python {platform.python_version()} | {cpu_model()} | "
          f"{os.cpu_count()} cores | {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print()

    with demo_services([SERVICE_OF[name] for name, _ in patterns if name in SERVICE_OF]):
        reports = run_patterns(loops, patterns, args)

    available = [ln for ln in loops if reports[ln]["ok"]]
    ref = reports["asyncio"]
    problems = []

    if not ref["ok"]:
        print("stock asyncio itself failed -- cannot continue:", ref["error"])
        return 2

    # ----- table -----
    headers = ["pattern"] + loops + ["same result?"]
    rows = []
    for name, pattern in patterns:
        row = [name]
        ref_entry = ref["patterns"].get(name, {})
        ref_med = statistics.median(ref_entry["times"]) if ref_entry.get("ok") else None
        verdicts = []
        for ln in loops:
            rep = reports[ln]
            if not rep["ok"]:
                row.append("unavailable")
                continue
            e = rep["patterns"].get(name, {})
            if not e.get("ok"):
                kind = ("HUNG" if e.get("hung") else "CRASHED" if e.get("crashed")
                        else "SKIPPED" if e.get("skipped") else "ERROR")
                row.append(kind)
                verdicts.append(f"{ln} {kind.lower()}")
                problems.append((name, ln, e.get("error", "?"), e.get("traceback")))
                continue
            med = statistics.median(e["times"])
            cell = fmt_ms(med)
            if isinstance(e["result"], str) and e["result"].startswith("skipped"):
                cell = "skipped"          # e.g. TaskGroup on Python < 3.11
            elif ln != "asyncio" and ref_med:
                cell += f" ({ref_med / med:.2f}x)"
            row.append(cell)
            if ln != "asyncio" and ref_entry.get("ok") and e["result"] != ref_entry["result"]:
                verdicts.append(f"{ln} DIFFERS")
                problems.append((name, ln, "result differs from stock asyncio:\n"
                                 f"      asyncio: {short(ref_entry['result'], 300)}\n"
                                 f"      {ln}: {short(e['result'], 300)}", None))
        if not ref_entry.get("ok"):
            verdicts.append("asyncio error")
            problems.append((name, "asyncio", ref_entry.get("error", "?"),
                             ref_entry.get("traceback")))
        row.append("yes" if not verdicts else "NO: " + ", ".join(verdicts))
        rows.append(row)

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))
    print()
    print(f"Times are the median of {args.runs} runs, measured inside the running "
          "loop; (N.NNx) = speed-up over stock asyncio.\n"
          "wait_for+timeout and run_in_executor mostly wait on real time (a 0.1 s "
          "timeout, 2 ms blocking calls),\nso they are correctness checks more "
          "than speed tests.")
    print()
    print("What each pattern does:")
    for name, pattern in patterns:
        doc = textwrap.wrap(" ".join((pattern.__doc__ or "").split()), 76)
        print(f"  {name:<17} " + f"\n  {'':<17} ".join(doc))
        if args.show_results and ref["patterns"].get(name, {}).get("ok"):
            print(f"  {'':<17} -> {short(ref['patterns'][name]['result'])}")
    print()

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "cpu": cpu_model(),
                       "reports": reports}, f, indent=2)

    # ----- verdict -----
    status = 0
    if problems:
        status = 1
        print("PROBLEMS:")
        for name, ln, err, tb in problems:
            print(f"  [{name} on {ln}] {err}")
            if tb:
                print("      " + tb.strip().replace("\n", "\n      "))
        print()
    missing = [ln for ln in loops if not reports[ln]["ok"]]
    if problems:
        print("RESULT: FAILED -- see problems above.")
    else:
        print(f"RESULT: OK -- all {len(patterns)} patterns gave identical results on "
              f"{', '.join(available)}.")
    for ln in missing:
        print(f"note: {ln} was not tested ({reports[ln]['error']}).")
    if args.require_ferroloop and "ferroloop" not in available:
        print("ferroloop is required (--require-ferroloop) but was not tested.")
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
