#!/usr/bin/env python3
"""Event-loop micro-benchmarks: stock asyncio vs uvloop vs ferroloop.

Every (case, loop) measurement runs in a fresh subprocess, so one loop cannot
warm up (or crash) another.  Each round runs every case on every loop, with
the loop order rotated from round to round so that background noise on the
machine is spread evenly over the loops.  The reported figure is the median
ops/s over all rounds, together with the min and max.

Usage::

    python benchmarks/micro.py                  # full run, 5 rounds
    python benchmarks/micro.py --quick          # smaller workloads, 3 rounds
    python benchmarks/micro.py --cases gather,queue --repeat 7
    python benchmarks/micro.py --markdown --json results.json
    python benchmarks/micro.py --detector-overhead [--quick]

``--detector-overhead`` measures something else: ferroloop alone, with its blocking
detector off and on (``loop.set_blocking_threshold(0.1)``, a watchdog thread sampling
the loop every 25 ms), side by side; its cells are the CPU time per operation of the
whole worker process (every thread: the watchdog's time counts), median (min-max).

A loop that cannot be imported shows up as "unavailable"; a loop that raises,
hangs or crashes during a case shows up as "FAILED" and the error is printed
under the table (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import traceback

from _loops import loop_version, result_line, run_worker

LOOPS = ("asyncio", "uvloop", "ferroloop")

# --detector-overhead: ferroloop with the blocking detector off and on.
DETECTOR_THRESHOLD = 0.1
DETECTOR_VARIANTS = ("ferroloop", "ferroloop+detector")


# --------------------------------------------------------------------------
# Loop factories (used only inside worker subprocesses)
# --------------------------------------------------------------------------

def _make_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        # Explicit selector loop from the stdlib, regardless of any policy.
        return asyncio.DefaultEventLoopPolicy().new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    if name == "ferroloop+detector":
        import ferroloop

        loop = ferroloop.new_event_loop()
        loop.set_blocking_threshold(DETECTOR_THRESHOLD, _count_stall)
        return loop
    raise ValueError(f"unknown loop {name!r}")


STALLS = [0]


def _count_stall(report) -> None:
    """The detector's callback in the benchmark: formats the report as the default
    reporter would (so that a stall costs what it costs), counts it, prints nothing."""
    report.format()
    if not report.ended:
        STALLS[0] += 1


# --------------------------------------------------------------------------
# Cases.  Each case is ``async def run(loop, n, prep) -> ops`` plus an
# optional ``prep(n)`` executed before the clock starts.  Every case checks
# its own result, so a loop that computes the wrong thing fails loudly
# instead of looking fast.
# --------------------------------------------------------------------------

class BenchError(AssertionError):
    pass


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise BenchError(msg)


async def bench_call_soon(loop, n, prep):
    """A feeder callback schedules a batch of 1000 no-op callbacks, then
    re-schedules itself, until n callbacks have been queued."""
    done = loop.create_future()
    batch = 1000
    state = [0, n]  # [callbacks run, callbacks still to schedule]

    def tick():
        state[0] += 1

    def feeder():
        k = batch if state[1] > batch else state[1]
        state[1] -= k
        call_soon = loop.call_soon
        for _ in range(k):
            call_soon(tick)
        if state[1]:
            call_soon(feeder)
        else:
            call_soon(done.set_result, None)

    loop.call_soon(feeder)
    await done
    _check(state[0] == n, f"ran {state[0]} callbacks, expected {n}")
    return n


def prep_timers(n):
    rng = random.Random(20240601)
    # 1 timer in 10 is kept and fires after 0-20 ms; the other 9 are
    # "timeouts" (0.2-2 s) that get cancelled one loop iteration later.
    return [
        rng.uniform(0.0, 0.02) if i % 10 == 0 else rng.uniform(0.2, 2.0)
        for i in range(n)
    ]


async def bench_call_later_cancel(loop, n, prep):
    """Schedule n timers in chunks of 1000 per loop iteration with random
    delays; cancel 90 % of them on the next iteration; wait for the
    surviving 10 % to fire."""
    delays = prep
    done = loop.create_future()
    expected = (n + 9) // 10
    fired = [0]
    cancelled = bytearray(n)
    chunk = 1000
    state = {"pos": 0, "pending": []}

    def on_fire(i):
        if cancelled[i]:
            if not done.done():
                done.set_exception(BenchError(f"cancelled timer {i} fired"))
            return
        if i % 10 == 0:
            fired[0] += 1
            if fired[0] == expected:
                done.set_result(None)

    def cancel_all(pending):
        for i, h in pending:
            cancelled[i] = 1
            h.cancel()

    def step():
        call_later = loop.call_later
        pos = state["pos"]
        end = min(pos + chunk, n)
        new_pending = []
        for i in range(pos, end):
            h = call_later(delays[i], on_fire, i)
            if i % 10:
                new_pending.append((i, h))
        cancel_all(state["pending"])
        state["pos"] = end
        if end < n:
            state["pending"] = new_pending
            loop.call_soon(step)
        else:
            state["pending"] = []
            cancel_all(new_pending)

    loop.call_soon(step)
    await done
    return n


async def _ret(i):
    return i


async def bench_gather(loop, n, prep):
    """create_task() n trivial coroutines, then gather() them."""
    create_task = loop.create_task
    tasks = [create_task(_ret(i)) for i in range(n)]
    res = await asyncio.gather(*tasks)
    _check(len(res) == n and res[-1] == n - 1, "gather returned wrong results")
    return n


async def _sleeper(k):
    sleep = asyncio.sleep
    for _ in range(k):
        await sleep(0)
    return k


async def bench_sleep0(loop, n, prep):
    """100 tasks each doing n/100 ``await asyncio.sleep(0)``."""
    ntasks = 100
    k = max(1, n // ntasks)
    res = await asyncio.gather(*[loop.create_task(_sleeper(k)) for _ in range(ntasks)])
    _check(sum(res) == ntasks * k, "sleep0 tasks did not all finish")
    return ntasks * k


async def bench_semaphore(loop, n, prep):
    """gather() batches of 10k tasks, at most 100 inside the Semaphore at
    once, each doing sleep(0) while holding it."""
    limit = 100
    sem = asyncio.Semaphore(limit)
    st = [0, 0]  # [active, peak]

    async def worker(i):
        async with sem:
            st[0] += 1
            if st[0] > st[1]:
                st[1] = st[0]
            await asyncio.sleep(0)
            st[0] -= 1
        return i

    batch = 10_000
    done = 0
    while done < n:
        k = min(batch, n - done)
        res = await asyncio.gather(*[worker(i) for i in range(k)])
        _check(len(res) == k and res[-1] == k - 1, "semaphore gather wrong result")
        done += k
    _check(st[1] == min(limit, batch, n), f"peak concurrency {st[1]} != {limit}")
    return n


async def bench_wait_for(loop, n, prep):
    """n sequential ``await asyncio.wait_for(coro_that_returns(), timeout=1)``."""
    wait_for = asyncio.wait_for
    total = 0
    for i in range(n):
        total += await wait_for(_ret(i), timeout=1)
    _check(total == n * (n - 1) // 2, "wait_for returned wrong results")
    return n


async def bench_queue(loop, n, prep):
    """2 producers / 2 consumers pass n items through Queue(maxsize=128)."""
    q = asyncio.Queue(maxsize=128)
    nprod, ncons = 2, 2
    per = n // nprod

    async def producer():
        put = q.put
        for i in range(per):
            await put(i)

    async def consumer():
        get = q.get
        cnt = 0
        while True:
            item = await get()
            if item is None:
                return cnt
            cnt += 1

    consumers = [loop.create_task(consumer()) for _ in range(ncons)]
    await asyncio.gather(*[producer() for _ in range(nprod)])
    for _ in range(ncons):
        await q.put(None)
    got = sum(await asyncio.gather(*consumers))
    _check(got == per * nprod, f"consumed {got} items, expected {per * nprod}")
    return per * nprod


async def bench_threadsafe(loop, n, prep):
    """A second thread calls loop.call_soon_threadsafe(cb) n times; the
    loop counts the callbacks and finishes when all n have arrived."""
    done = loop.create_future()
    count = [0]

    def cb():
        count[0] += 1
        if count[0] == n:
            done.set_result(None)

    errors = []

    def producer():
        try:
            cst = loop.call_soon_threadsafe
            for _ in range(n):
                cst(cb)
        except BaseException as e:  # noqa: BLE001 - reported by the watchdog
            errors.append(e)

    def watchdog():
        # If the producer thread died, don't wait forever for callbacks.
        if done.done():
            return
        if errors:
            done.set_exception(BenchError(
                f"producer thread failed: {type(errors[0]).__name__}: {errors[0]}"))
        else:
            loop.call_later(0.05, watchdog)

    t = threading.Thread(target=producer, name="bench-producer")
    t.start()
    loop.call_later(0.05, watchdog)
    try:
        await done
    finally:
        t.join()
    _check(count[0] == n, f"received {count[0]} callbacks, expected {n}")
    return n


# name -> (run, prep, full n, quick n, short description)
CASES = {
    "call_soon": (bench_call_soon, None, 1_000_000, 200_000,
                  "loop.call_soon() callbacks, 1000 per batch"),
    "call_later_cancel": (bench_call_later_cancel, prep_timers, 200_000, 50_000,
                          "call_later timers, 90% cancelled, 10% fire"),
    "gather": (bench_gather, None, 100_000, 25_000,
               "create_task + gather of trivial coroutines"),
    "sleep0": (bench_sleep0, None, 400_000, 100_000,
               "100 tasks doing sleep(0) in turn"),
    "semaphore": (bench_semaphore, None, 30_000, 10_000,
                  "gather 10k tasks/batch, Semaphore(100), sleep(0) inside"),
    "wait_for": (bench_wait_for, None, 100_000, 20_000,
                 "wait_for(fast coroutine, timeout=1)"),
    "queue": (bench_queue, None, 300_000, 60_000,
              "Queue(128) items, 2 producers / 2 consumers"),
    "threadsafe": (bench_threadsafe, None, 200_000, 50_000,
                   "call_soon_threadsafe from another thread"),
}


# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------

def _emit(obj) -> None:
    sys.stdout.write(result_line(obj) + "\n")
    sys.stdout.flush()


def worker_probe(loop_name: str) -> int:
    try:
        loop = _make_loop(loop_name)
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
        loop = _make_loop(loop_name)
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


def machine_info():
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


def fmt_rate(x):
    if x is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def fmt_n(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def summarize(samples):
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples)}


def render(meta, results, cases, loops, loop_status, markdown):
    headers = ["case", "n"] + list(LOOPS) + ["ferroloop/asyncio", "ferroloop/uvloop"]
    rows = []
    ratios = {"ferroloop/asyncio": [], "ferroloop/uvloop": []}
    for case in cases:
        r = results[case]
        row = [case, fmt_n(r["n"])]
        med = {}
        for ln in LOOPS:
            cell = r["loops"].get(ln)
            if ln not in loops:
                row.append("skipped")
            elif not loop_status[ln]["ok"]:
                row.append("unavailable")
            elif cell is None or cell.get("failed"):
                row.append("FAILED")
            else:
                s = cell["summary"]
                med[ln] = s["median"]
                row.append(f"{fmt_rate(s['median'])} ({fmt_rate(s['min'])}-{fmt_rate(s['max'])})")
        for base, key in (("asyncio", "ferroloop/asyncio"), ("uvloop", "ferroloop/uvloop")):
            if "ferroloop" in med and base in med:
                ratio = med["ferroloop"] / med[base]
                ratios[key].append(ratio)
                row.append(f"{ratio:.2f}x")
            else:
                row.append("-")
        rows.append(row)
    if any(ratios.values()):
        row = ["geomean", ""] + [""] * len(LOOPS)
        for key in ("ferroloop/asyncio", "ferroloop/uvloop"):
            v = ratios[key]
            row.append(f"{statistics.geometric_mean(v):.2f}x" if v else "-")
        rows.append(row)

    out = []
    vers = ", ".join(
        f"{ln} {loop_status[ln].get('version', 'unavailable')}"
        if loop_status[ln]["ok"] else f"{ln} unavailable"
        for ln in LOOPS if ln in loops)
    header = (f"Machine: {meta['cpu']}, {meta['cores']} cores "
              f"({meta['usable_cores']} usable) | Python {meta['python']} "
              f"({meta['implementation']}) | {vers} | {meta['date']}")
    mode = (f"Mode: {'quick' if meta['quick'] else 'full'}, {meta['repeat']} rounds, "
            f"fresh process per measurement; cells are median ops/s (min-max)")
    if markdown:
        out.append(f"_{header}_  ")
        out.append(f"_{mode}_")
        out.append("")
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join(["---"] + ["--:"] * (len(headers) - 1)) + "|")
        for row in rows:
            out.append("| " + " | ".join(row) + " |")
    else:
        out.append(header)
        out.append(mode)
        out.append("")
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        def line(cells):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))
        out.append(line(headers))
        out.append("  ".join("-" * w for w in widths))
        for row in rows:
            if row[0] == "geomean":
                out.append("  ".join("-" * w for w in widths))
            out.append(line(row))
    out.append("")
    if markdown:
        for case in cases:
            out.append(f"- `{case}`: {CASES[case][4]}")
    else:
        out.append("Cases:")
        for case in cases:
            out.append(f"  {case:<18} {CASES[case][4]}")
    return "\n".join(out)


def fmt_cpu(seconds):
    """CPU time per operation, e.g. '1.23 us' or '850 ns'."""
    if seconds is None:
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e9:.3g} ns"


def render_detector(meta, results, cases, loop_status, markdown):
    """--detector-overhead: ferroloop with the detector off and on, side by side."""
    off, on = DETECTOR_VARIANTS
    headers = ["case", "n", "CPU/op off", "CPU/op on", "on/off",
               "ops/s off", "ops/s on", "stalls seen"]
    rows, ratios = [], []
    for case in cases:
        r = results[case]
        row = [case, fmt_n(r["n"])]
        med = {}
        for variant in (off, on):
            cell = r["loops"].get(variant)
            if not loop_status[variant]["ok"]:
                row.append("unavailable")
            elif cell is None or cell.get("failed") or not cell.get("cpu_per_op"):
                row.append("FAILED")
            else:
                c = summarize(cell["cpu_per_op"])
                med[variant] = c["median"]
                row.append(f"{fmt_cpu(c['median'])} ({fmt_cpu(c['min'])}-{fmt_cpu(c['max'])})")
        if off in med and on in med:
            ratios.append(med[on] / med[off])
            row.append(f"{ratios[-1]:.3f}x")
        else:
            row.append("-")
        for variant in (off, on):
            cell = r["loops"].get(variant) or {}
            samples = cell.get("samples")
            row.append(fmt_rate(statistics.median(samples)) if samples else "-")
        stalls = (r["loops"].get(on) or {}).get("stalls") or []
        row.append(str(sum(stalls)) if stalls else "-")
        rows.append(row)
    if ratios:
        rows.append(["geomean", "", "", "", f"{statistics.geometric_mean(ratios):.3f}x",
                     "", "", ""])

    version = loop_status[off].get("version", "unavailable")
    header = (f"Machine: {meta['cpu']}, {meta['cores']} cores "
              f"({meta['usable_cores']} usable) | Python {meta['python']} "
              f"({meta['implementation']}) | ferroloop {version} | {meta['date']}")
    mode = (f"Mode: {'quick' if meta['quick'] else 'full'}, {meta['repeat']} rounds, "
            f"fresh process per measurement; ferroloop with the blocking detector off "
            f"and on (threshold {meta['detector_threshold']:g} s); CPU/op cells are the "
            f"median process CPU time (all threads) per operation (min-max)")
    out = []
    if markdown:
        out += [f"_{header}_  ", f"_{mode}_", "",
                "| " + " | ".join(headers) + " |",
                "|" + "|".join(["---"] + ["--:"] * (len(headers) - 1)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        out += [header, mode, ""]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

        def line(cells):
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))
        out.append(line(headers))
        out.append("  ".join("-" * w for w in widths))
        for row in rows:
            if row[0] == "geomean":
                out.append("  ".join("-" * w for w in widths))
            out.append(line(row))
    out.append("")
    out.append("on/off: CPU time per operation with the detector on over off (1.000x: no "
               "cost); stalls seen: callbacks the detector reported as blocking the loop "
               f"for {meta['detector_threshold']:g} s or more, over all rounds.")
    return "\n".join(out)


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
                    help="comma-separated loops to run (default: all three)")
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
        loops = [ln for ln in LOOPS if loop_status[ln].get("error") != "not selected"]
        print(render(meta, results, list(results), loops, loop_status, args.markdown))
        return 0

    repeat = args.repeat or (3 if args.quick else 5)
    cases = list(CASES) if not args.cases else [c.strip() for c in args.cases.split(",") if c.strip()]
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
                    cpu = (f"  {fmt_cpu(r['cpu_seconds'] / r['ops'])} CPU/op"
                           if args.detector_overhead else "")
                    log(f"[{rnd + 1}/{repeat}] {case:<18} {ln:<{name_width}} "
                        f"{r['seconds']:7.3f} s  {fmt_rate(r['ops_per_sec'])} ops/s{cpu}")
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
