#!/usr/bin/env python3
"""ferroloop seed demo: everyday asyncio patterns, on every event loop.

Runs a handful of common asyncio patterns -- gather, wait_for with timeouts,
a Semaphore-limited gather, TaskGroup, cancelling a tree of tasks and
run_in_executor -- on stock asyncio, uvloop (if installed) and ferroloop.

It is both a demo and a smoke test:

* every pattern returns a deterministic result, and the result on each loop
  must equal the result on stock asyncio (the exit status is 1 otherwise);
* the time each pattern took is printed side by side (median of --runs runs,
  measured inside the running loop).

Usage::

    python benchmarks/seed_demo.py                  # all loops, 5 runs each
    python benchmarks/seed_demo.py --runs 3 --loops asyncio,ferroloop
    python benchmarks/seed_demo.py --require-ferroloop   # fail if not importable

Each loop runs in its own subprocess, so a crash in one loop is reported
instead of taking the demo down.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from _loops import how_it_died, loop_version, result_line, worker_result

LOOPS = ("asyncio", "uvloop", "ferroloop")
HAS_TASKGROUP = sys.version_info >= (3, 11)


# ==========================================================================
# The patterns.  Each one is an ``async def`` that returns plain data
# (lists, dicts, ints, strings) so the results can be compared across loops.
# ==========================================================================

async def gather_many():
    """gather() 20,000 coroutines; every 1000th one raises."""

    async def work(i):
        await asyncio.sleep(0)
        if i % 1000 == 999:
            raise ValueError(f"item {i}")
        return i * i % 1009

    results = await asyncio.gather(*(work(i) for i in range(20_000)),
                                   return_exceptions=True)
    values = [r for r in results if not isinstance(r, BaseException)]
    errors = [str(r) for r in results if isinstance(r, BaseException)]
    return {"values": len(values), "checksum": sum(values),
            "errors": len(errors), "first_error": errors[0]}


async def wait_for_timeouts():
    """500 jobs under wait_for(timeout=0.1 s); every 5th job is too slow."""
    cancelled_jobs = []

    async def job(i):
        try:
            await asyncio.sleep(0.5 if i % 5 == 0 else 0.001 * (i % 3))
            return i * 2
        except asyncio.CancelledError:
            cancelled_jobs.append(i)  # the timeout cancelled us
            raise

    async def guarded(i):
        try:
            return ("ok", await asyncio.wait_for(job(i), timeout=0.1))
        except asyncio.TimeoutError:
            return ("timeout", i)

    outcomes = await asyncio.gather(*(guarded(i) for i in range(500)))
    ok = [v for kind, v in outcomes if kind == "ok"]
    timed_out = [v for kind, v in outcomes if kind == "timeout"]
    return {"completed": len(ok), "sum_completed": sum(ok),
            "timed_out": timed_out, "cancelled_inside_job": sorted(cancelled_jobs)}


async def semaphore_gather():
    """2,000 tasks through a Semaphore(10); records peak concurrency."""
    sem = asyncio.Semaphore(10)
    active = peak = 0

    async def fetch(i):
        nonlocal active, peak
        async with sem:
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)      # pretend to do I/O
            await asyncio.sleep(0)
            active -= 1
        return i % 7

    results = await asyncio.gather(*(fetch(i) for i in range(2_000)))
    return {"results": len(results), "checksum": sum(results),
            "peak_concurrency": peak, "active_at_end": active}


async def task_group():
    """TaskGroup: 1,000 children succeed; then a group where one child fails
    and its 50 sleeping siblings get cancelled (Python 3.11+)."""
    if not HAS_TASKGROUP:
        return "skipped: needs Python 3.11+"

    async def square(i):
        await asyncio.sleep(0)
        return i * i

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(square(i)) for i in range(1_000)]
    total = sum(t.result() for t in tasks)

    cancelled = []

    async def sibling(i):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    errors = None
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(50):
                tg.create_task(sibling(i))
            tg.create_task(failing())
    except Exception as eg:  # an ExceptionGroup
        errors = [f"{type(e).__name__}: {e}" for e in eg.exceptions]
        group = type(eg).__name__
    return {"sum_of_squares": total, "group": group, "errors": errors,
            "siblings_cancelled": sorted(cancelled)}


async def cancel_task_tree():
    """Build a 4-level tree of tasks (4 children per node, 256 sleeping
    leaves), cancel the root, and check cancellation reached every node and
    every finally: block ran (including one that awaits)."""
    events = []
    fanout, depth = 4, 4
    leaves_total = fanout ** depth
    leaves_started = 0
    all_started = asyncio.Event()

    async def leaf(path):
        nonlocal leaves_started
        leaves_started += 1
        if leaves_started == leaves_total:
            all_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append(("leaf-cancelled", path))
            raise
        finally:
            await asyncio.sleep(0)     # awaiting inside cleanup is allowed
            events.append(("leaf-cleanup", path))

    async def node(path, depth):
        if depth == 0:
            return await leaf(path)
        children = [asyncio.create_task(node(path + (i,), depth - 1))
                    for i in range(fanout)]
        try:
            return await asyncio.gather(*children)
        except asyncio.CancelledError:
            events.append(("node-cancelled", path))
            raise

    root = asyncio.create_task(node((), depth))
    await all_started.wait()
    root.cancel()
    try:
        await root
        outcome = "root finished?!"
    except asyncio.CancelledError:
        outcome = "root cancelled"
    await asyncio.sleep(0)  # let the last child callbacks settle

    def count(kind):
        return sum(1 for k, _ in events if k == kind)

    return {"outcome": outcome, "root.cancelled()": root.cancelled(),
            "nodes_cancelled": count("node-cancelled"),
            "leaves_cancelled": count("leaf-cancelled"),
            "leaf_cleanups": count("leaf-cleanup"),
            "paths": sorted({"/".join(map(str, p)) for _, p in events})[:5]}


def _blocking_hash(i):
    time.sleep(0.002)                 # a blocking call (e.g. legacy I/O)
    return hashlib.sha256(f"item-{i}".encode()).hexdigest()[:12]


def _blocking_fail():
    return 1 / 0


async def run_in_executor():
    """Blocking work in threads: the default executor, an explicit
    ThreadPoolExecutor, asyncio.to_thread, and an exception crossing back."""
    loop = asyncio.get_running_loop()
    a = await asyncio.gather(*(loop.run_in_executor(None, _blocking_hash, i)
                               for i in range(100)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        b = await asyncio.gather(*(loop.run_in_executor(pool, _blocking_hash, i)
                                   for i in range(100, 200)))
    c = await asyncio.to_thread(_blocking_hash, 999)
    try:
        await loop.run_in_executor(None, _blocking_fail)
        error = None
    except ZeroDivisionError as e:
        error = f"ZeroDivisionError: {e}"
    digest = hashlib.sha256("".join(a + b + [c]).encode()).hexdigest()[:16]
    return {"calls": len(a) + len(b) + 1, "digest": digest, "error": error}


PATTERNS = [
    ("gather", gather_many),
    ("wait_for+timeout", wait_for_timeouts),
    ("semaphore", semaphore_gather),
    ("taskgroup", task_group),
    ("cancel_tree", cancel_task_tree),
    ("run_in_executor", run_in_executor),
]


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


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run common asyncio patterns on asyncio, uvloop and "
                    "ferroloop; check the results agree and compare timings.")
    ap.add_argument("--runs", type=int, default=5,
                    help="runs per pattern per loop; the median is shown (default 5)")
    ap.add_argument("--loops", default=",".join(LOOPS),
                    help="comma-separated subset of: " + ", ".join(LOOPS))
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

    print("ferroloop seed demo: common asyncio patterns on each event loop")
    print(f"Python {platform.python_version()} | {cpu_model()} | "
          f"{os.cpu_count()} cores | {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print()

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
        for name, _ in PATTERNS:
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

    available = [ln for ln in loops if reports[ln]["ok"]]
    ref = reports["asyncio"]
    problems = []

    if not ref["ok"]:
        print("stock asyncio itself failed -- cannot continue:", ref["error"])
        return 2

    # ----- table -----
    headers = ["pattern"] + loops + ["same result?"]
    rows = []
    for name, pattern in PATTERNS:
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
    for name, pattern in PATTERNS:
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
        print(f"RESULT: OK -- all {len(PATTERNS)} patterns gave identical results on "
              f"{', '.join(available)}.")
    for ln in missing:
        print(f"note: {ln} was not tested ({reports[ln]['error']}).")
    if args.require_ferroloop and "ferroloop" not in available:
        print("ferroloop is required (--require-ferroloop) but was not tested.")
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
