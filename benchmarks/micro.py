#!/usr/bin/env python3
"""Event-loop micro-benchmarks: stock asyncio vs uvloop vs rloop vs ferroloop.

Every (case, loop) measurement runs in a fresh subprocess, so one loop cannot
warm up (or crash) another.  Each round runs every case on every loop, with
the loop order rotated from round to round so that background noise on the
machine is spread evenly over the loops.  The cases are in ``_micro_cases.py``
(``--list`` shows them), the tables are drawn by ``_micro_report.py``.

Reported, for each case and loop, as medians over the rounds:

- throughput, ops/s, with half its min-max range as a % of the median;
- CPU time per operation, µs: the CPU time of the whole worker process (every
  thread) over the timed run, divided by the operations;
- for rloop and ferroloop, their CPU efficiency against uvloop: uvloop's CPU
  per operation divided by theirs (>1: cheaper than uvloop), and for
  ferroloop its throughput over uvloop's; plus the geometric mean of each
  ratio over the cases.

The table's header names the machine (CPU, cores, Python, loop versions, date)
and the number of rounds.

Usage::

    python benchmarks/micro.py                  # full run, 5 rounds
    python benchmarks/micro.py --quick          # smaller workloads, 3 rounds
    python benchmarks/micro.py --cases gather,queue --repeat 7
    python benchmarks/micro.py --loops uvloop,ferroloop
    python benchmarks/micro.py --markdown --json results.json   # the README's table
    python benchmarks/micro.py --from-json results.json [--markdown]   # re-print it
    python benchmarks/micro.py --detector-overhead [--quick]

``--detector-overhead`` measures something else: ferroloop alone, with its blocking
detector off and on (``loop.set_blocking_threshold(0.1)``, a watchdog thread sampling
the loop every 25 ms), side by side; its cells are the CPU time per operation of the
whole worker process (every thread: the watchdog's time counts), median (min-max).

A loop that cannot be imported (rloop and uvloop are optional) shows up as
"unavailable"; a loop that raises, hangs or crashes during a case shows up as
"FAILED" and the error is printed under the table (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
import traceback

from _loops import (DETECTOR_THRESHOLD, LOOPS, STALLS, fmt_rate, loop_version, machine_info,
                    make_loop, result_line, run_worker)
from _micro_cases import CASES
from _micro_report import (DETECTOR_VARIANTS, fmt_cpu, fmt_n, render, render_detector,
                           summarize)

# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------

def _emit(obj) -> None:
    sys.stdout.write(result_line(obj) + "\n")
    sys.stdout.flush()


def worker_probe(loop_name: str) -> int:
    try:
        loop = make_loop(loop_name)
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(asyncio.sleep(0))
            cls = type(loop)
            _emit({"ok": True, "version": loop_version(loop_name.split("+")[0]),
                   "loop_class": f"{cls.__module__}.{cls.__qualname__}"})
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    except BaseException as e:  # noqa: BLE001 - report anything
        _emit({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


def worker_case(case: str, loop_name: str, n: int) -> int:
    run, prep_fn, *_ = CASES[case]
    loop = None
    try:
        loop = make_loop(loop_name)
        asyncio.set_event_loop(loop)
        # Warm-up on the same loop (first-call costs, lazy imports, ...).
        warm_n = max(100, n // 20)
        warm_prep = prep_fn(warm_n) if prep_fn else None
        loop.run_until_complete(run(loop, warm_n, warm_prep))

        prep = prep_fn(n) if prep_fn else None
        gc.collect()
        STALLS[0] = 0
        cpu0 = time.process_time()  # every thread of the process
        t0 = time.perf_counter()
        ops = loop.run_until_complete(run(loop, n, prep))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        res = {"ok": True, "ops": ops, "seconds": elapsed, "ops_per_sec": ops / elapsed,
               "cpu_seconds": cpu, "stalls": STALLS[0]}
        if loop_name != "asyncio":
            res["version"] = loop_version(loop_name.split("+")[0])
        _emit(res)
        return 0
    except BaseException as e:  # noqa: BLE001
        tb = "\n".join(traceback.format_exc().rstrip().splitlines()[-12:])
        _emit({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb})
        return 1
    finally:
        if loop is not None:
            try:
                asyncio.set_event_loop(None)
                loop.close()
            except Exception:
                pass


# --------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------

def _spawn(args, timeout):
    """Run this script as a worker; return the decoded result dict."""
    return run_worker([sys.executable, os.path.abspath(__file__)] + args, timeout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", "-r", type=int, default=None,
                    help="rounds per (case, loop); default 5, or 3 with --quick")
    ap.add_argument("--quick", action="store_true",
                    help="smaller workloads and 3 rounds")
    ap.add_argument("--cases", default=None,
                    help="comma-separated case names (default: all); see --list")
    ap.add_argument("--loops", default=",".join(LOOPS),
                    help="comma-separated loops to run (default: all four)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every workload size by this factor")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds before a single measurement is declared hung")
    ap.add_argument("--json", metavar="FILE", help="also write raw results as JSON")
    ap.add_argument("--markdown", action="store_true",
                    help="print the table as Markdown (for the README)")
    ap.add_argument("--detector-overhead", action="store_true",
                    help="instead of comparing loops, run ferroloop with its blocking "
                         f"detector off and on (threshold {DETECTOR_THRESHOLD:g} s), side "
                         "by side, and report CPU time per operation")
    ap.add_argument("--list", action="store_true", help="list cases and exit")
    ap.add_argument("--from-json", metavar="FILE",
                    help="don't measure; re-print the table from a --json file")
    ap.add_argument("--_worker", nargs=3, metavar=("CASE", "LOOP", "N"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--_probe", metavar="LOOP", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._probe or args._worker:
        import faulthandler  # a crashing loop then prints the Python stack

        faulthandler.enable()
    if args._probe:
        return worker_probe(args._probe)
    if args._worker:
        case, loop_name, n = args._worker
        return worker_case(case, loop_name, int(n))

    if args.list:
        for name, spec in CASES.items():
            print(f"{name:<18} n={fmt_n(spec[2]):>5} (quick {fmt_n(spec[3]):>4})  {spec[4]}")
        return 0

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        meta, results = saved["meta"], saved["results"]
        loop_status = meta["loops"]
        if meta.get("mode") == "detector-overhead":
            print(render_detector(meta, results, list(results), loop_status, args.markdown))
            return 0
        # A file from before rloop was added has no entry for it: shown as skipped.
        loops = [ln for ln in LOOPS
                 if ln in loop_status and loop_status[ln].get("error") != "not selected"]
        print(render(meta, results, list(results), loops, loop_status, args.markdown))
        return 0

    repeat = args.repeat or (3 if args.quick else 5)
    cases = ([c.strip() for c in args.cases.split(",") if c.strip()] if args.cases
             else list(CASES))
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s): {', '.join(bad)}; known: {', '.join(CASES)}")
    loops = [ln.strip() for ln in args.loops.split(",") if ln.strip()]
    bad = [ln for ln in loops if ln not in LOOPS]
    if bad:
        ap.error(f"unknown loop(s): {', '.join(bad)}; known: {', '.join(LOOPS)}")
    candidates = LOOPS
    if args.detector_overhead:
        if args.loops != ap.get_default("loops"):
            ap.error("--detector-overhead runs ferroloop only: --loops does not apply")
        candidates = loops = list(DETECTOR_VARIANTS)

    meta = machine_info()
    meta.update(quick=args.quick, repeat=repeat, scale=args.scale)
    if args.detector_overhead:
        meta.update(mode="detector-overhead", detector_threshold=DETECTOR_THRESHOLD)

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    loop_status = {}
    for ln in candidates:
        if ln not in loops:
            loop_status[ln] = {"ok": False, "error": "not selected"}
            continue
        st = _spawn(["--_probe", ln], timeout=60)
        loop_status[ln] = st
        if st["ok"]:
            log(f"[probe] {ln}: {st['version']} ({st['loop_class']})")
        else:
            log(f"[probe] {ln}: unavailable - {st['error']}")
    meta["loops"] = loop_status
    active = [ln for ln in loops if loop_status[ln]["ok"]]

    results = {}
    for case in cases:
        full_n, quick_n = CASES[case][2], CASES[case][3]
        n = max(100, int((quick_n if args.quick else full_n) * args.scale))
        results[case] = {"n": n, "description": CASES[case][4],
                         "loops": {ln: {"samples": [], "seconds": [], "errors": [],
                                        "cpu_per_op": [], "stalls": []}
                                   for ln in active}}

    changed = set()  # a loop rebuilt/reinstalled while we were measuring
    name_width = max([9] + [len(ln) for ln in active])
    t_start = time.monotonic()
    for rnd in range(repeat):
        for case in cases:
            n = results[case]["n"]
            k = rnd % len(active) if active else 0
            order = active[k:] + active[:k]  # rotate per round
            for ln in order:
                cell = results[case]["loops"][ln]
                if cell["errors"]:
                    continue  # already failed once; don't waste time
                r = _spawn(["--_worker", case, ln, str(n)], timeout=args.timeout)
                if r["ok"]:
                    if r.get("version") and r["version"] != loop_status[ln]["version"]:
                        changed.add(f"{ln}: {loop_status[ln]['version']} -> {r['version']}")
                    cell["samples"].append(r["ops_per_sec"])
                    cell["seconds"].append(r["seconds"])
                    cell["cpu_per_op"].append(r["cpu_seconds"] / r["ops"])
                    cell["stalls"].append(r["stalls"])
                    log(f"[{rnd + 1}/{repeat}] {case:<18} {ln:<{name_width}} "
                        f"{r['seconds']:7.3f} s  {fmt_rate(r['ops_per_sec'])} ops/s  "
                        f"{fmt_cpu(r['cpu_seconds'] / r['ops'])} CPU/op")
                else:
                    cell["errors"].append(r)
                    log(f"[{rnd + 1}/{repeat}] {case:<18} {ln:<{name_width}} FAILED: {r['error']}")
    meta["wall_seconds"] = round(time.monotonic() - t_start, 1)

    failures = []
    for case in cases:
        for ln, cell in results[case]["loops"].items():
            if cell["errors"]:
                cell["failed"] = True
                failures.append((case, ln, cell["errors"][0]))
            elif cell["samples"]:
                cell["summary"] = summarize(cell["samples"])
                cell["cpu_summary"] = summarize(cell["cpu_per_op"])

    if args.detector_overhead:
        print(render_detector(meta, results, cases, loop_status, args.markdown))
    else:
        print(render(meta, results, cases, loops, loop_status, args.markdown))
    if failures:
        print("\nFailures:")
        for case, ln, err in failures:
            print(f"  {case} on {ln}: {err['error']}")
            tb = err.get("traceback")
            if tb:
                print("    " + tb.strip().replace("\n", "\n    "))

    if changed:
        meta["version_changed_during_run"] = sorted(changed)
        print("\nWARNING: a loop changed version/build during the run; the numbers mix builds:")
        for c in sorted(changed):
            print(f"  {c}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        log(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
