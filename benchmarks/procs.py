#!/usr/bin/env python3
"""Subprocess benchmarks: stock asyncio vs uvloop vs rloop vs ferroloop, side by side.

Cases, each measured in a fresh worker process that runs one loop:

* ``spawn`` -- N ``true`` children (default 1,000), each ``create_subprocess_exec("true")``
  + ``await proc.wait()``, in batches of 50 gathered concurrently; every status must be 0.
* ``pipe`` -- M MiB (default 256) written to ``cat`` in 64 KiB chunks (``write`` +
  ``drain``; 257 distinct random blocks in turn) while another task reads its stdout back
  with ``read(65536)`` until EOF; length and SHA-256 of what comes back must equal what
  was written, else the cell FAILS.

The figure of merit is work per CPU-second of the loop's own process: the worker's
``getrusage(RUSAGE_SELF)`` user+sys (all its threads, not its children) over the measured
part only, after a warm-up on the same loop.  In ``pipe`` the SHA-256 check, timed with
the thread's CPU clock, is subtracted (the raw figures are in the JSON).  Figures are
medians of the rounds; each round runs every case on every loop, the loop order rotating.
A loop raising ``NotImplementedError`` shows "n/a" with the reason; any other error shows
"FAILED" with the reason under the table, and the exit status is 1.

Usage::

    python benchmarks/procs.py --quick        # smoke run: 200 children, 32 MiB, 1 round
    python benchmarks/procs.py                # full: 1,000 children, 256 MiB, 3 rounds
    python benchmarks/procs.py --cases pipe --loops uvloop,ferroloop --mb 512
    python benchmarks/procs.py --from-json benchmarks/results/procs-....json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import time
import traceback

from _loops import (BASE, LOOPS, fmt_rate, loadavg, loop_version, machine_info, machine_line,
                    make_loop, render_table, result_line, run_worker)

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ("spawn", "pipe")
CHUNK = 64 * 1024
RING = 257             # chunk i written to cat is the random block i % RING (16 MiB)
MiB = 1 << 20


class BenchError(AssertionError):
    pass


# --------------------------------------------------------------------------
# Worker side: one (case, loop) measurement per process
# --------------------------------------------------------------------------

async def run_spawn(units, p, hashing):
    """Spawn and wait for ``units`` ``true`` children, ``p["batch"]`` at a time."""
    async def one():
        proc = await asyncio.create_subprocess_exec("true")
        return await proc.wait()

    done = 0
    while done < units:
        k = min(p["batch"], units - done)
        rcs = await asyncio.gather(*[one() for _ in range(k)])
        bad = [rc for rc in rcs if rc != 0]
        if bad:
            raise BenchError(f"{len(bad)} of {k} `true` children exited with status {bad[0]}")
        done += k
    return units


def _digest(ring, total):
    """SHA-256 of the ``total`` bytes the pipe case writes."""
    h = hashlib.sha256()
    for i in range(total // CHUNK):
        h.update(ring[i % RING])
    return h.hexdigest()


async def run_pipe(units, p, hashing):
    """Push ``units`` MiB through ``cat`` and read them back concurrently."""
    total = units * MiB
    ring, want = p["payload"][total]
    PIPE = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
    clock = time.thread_time_ns

    async def writer():
        for i in range(total // CHUNK):
            proc.stdin.write(ring[i % RING])
            await proc.stdin.drain()
        proc.stdin.close()

    async def reader():
        got, h, read = 0, hashlib.sha256(), proc.stdout.read
        while True:
            data = await read(CHUNK)
            if not data:
                return got, h.hexdigest()
            t = clock()
            h.update(data)
            hashing[0] += clock() - t
            got += len(data)

    _, (got, digest) = await asyncio.gather(writer(), reader())
    rc = await proc.wait()
    if got != total:
        raise BenchError(f"read back {got} bytes from cat, wrote {total}")
    if digest != want:
        raise BenchError(f"bytes read back from cat differ from those written (sha256 "
                         f"{digest[:16]}... != {want[:16]}...), same length {total}")
    if rc != 0:
        raise BenchError(f"cat exited with status {rc}")
    return units


RUNNERS = {"spawn": run_spawn, "pipe": run_pipe}


def _where(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    return f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} {tb[-1].name})" if tb else ""


def worker(case, loop_name, params):
    """Measure one case on one loop; print one result line."""
    loop = None
    try:
        loop = make_loop(loop_name)
        asyncio.set_event_loop(loop)
        cls = type(loop)
        info = {"version": loop_version(loop_name),
                "loop_class": f"{cls.__module__}.{cls.__qualname__}"}
        if case == "probe":
            loop.run_until_complete(asyncio.sleep(0))
            print(result_line({"ok": True, **info}), flush=True)
            return 0
        run, units, warm = RUNNERS[case], params["units"], params["warm"]
        if case == "pipe":
            rnd = random.Random(20261201)
            ring = [rnd.randbytes(CHUNK) for _ in range(RING)]
            params["payload"] = {n * MiB: (ring, _digest(ring, n * MiB)) for n in (warm, units)}
        loop.run_until_complete(run(warm, params, [0]))
        gc.collect()
        hashing = [0]
        usage = resource.getrusage
        r0, c0 = usage(resource.RUSAGE_SELF), usage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        ops = loop.run_until_complete(run(units, params, hashing))
        wall = time.perf_counter() - t0
        r1, c1 = usage(resource.RUSAGE_SELF), usage(resource.RUSAGE_CHILDREN)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        kids = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        print(result_line({"ok": True, "ops": ops, "wall_s": wall, "user_s": user,
                           "sys_s": system, "cpu_raw_s": user + system,
                           "hash_s": hashing[0] / 1e9, "children_cpu_s": kids, **info}),
              flush=True)
        return 0
    except NotImplementedError as e:
        print(result_line({"ok": False, "na": f"NotImplementedError: {e}{_where(e)}"}), flush=True)
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        tb = "\n".join(traceback.format_exc().rstrip().splitlines()[-12:])
        print(result_line({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb}),
              flush=True)
        return 1
    finally:
        asyncio.set_event_loop(None)
        if loop is not None and not loop.is_running():
            loop.close()


# --------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def spawn_worker(case, loop_name, params, timeout):
    return run_worker([sys.executable, os.path.abspath(__file__), "--_worker", case, loop_name,
                       json.dumps(params)], timeout, cwd=HERE)


def case_info(meta, case):
    """(label, unit) of a case as configured in this run."""
    if case == "spawn":
        return (f"spawn-and-wait ({meta['children']} × true, {meta['batch']} concurrent)",
                "children")
    return f"pipe through cat ({meta['mb']} MiB, 64 KiB chunks)", "MiB"


def summarize(rounds):
    def mmm(vals):
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    return {"per_cpu_s": mmm([r["ops"] / r["cpu_s"] for r in rounds]),
            "per_wall_s": mmm([r["ops"] / r["wall_s"] for r in rounds]),
            "per_raw_cpu_s": mmm([r["ops"] / r["cpu_raw_s"] for r in rounds]),
            **{k: statistics.median(r[k] for r in rounds)
               for k in ("cpu_s", "cpu_raw_s", "user_s", "sys_s", "hash_s", "wall_s",
                         "children_cpu_s")}}


def render(meta, results):
    status, loops = meta["loops"], meta["selected_loops"]
    shown = [ln for ln in LOOPS if ln in loops]

    def cell_status(cell, ln):
        if not status.get(ln, {}).get("ok"):
            return "skipped" if ln not in loops else "unavailable"
        if cell is None or cell.get("na"):
            return "n/a" if cell else "-"
        return "FAILED" if cell.get("failed") or not cell.get("summary") else None

    per_cpu, wall, cpu = [], [], []
    for case, r in results.items():
        label, unit = case_info(meta, case)
        cells = r["loops"]
        base = cells.get(BASE)
        base = base["summary"]["per_cpu_s"]["median"] if base and base.get("summary") else None
        rows = ([f"{label}, {unit}/CPU-s"], [f"{label}, {unit}/s"], [label])
        for ln in shown:
            st = cell_status(cells.get(ln), ln)
            if st:
                for row in rows:
                    row.append(st)
                continue
            s = cells[ln]["summary"]
            med, pw = s["per_cpu_s"]["median"], s["per_wall_s"]
            rows[0].append(f"{fmt_rate(med)} ({med / base:.2f}x)" if base else fmt_rate(med))
            rows[1].append(f"{fmt_rate(pw['median'])} "
                           f"({fmt_rate(pw['min'])}-{fmt_rate(pw['max'])})")
            check = f" + sha256 {s['hash_s']:.3f}" if case == "pipe" else ""
            rows[2].append(f"{s['cpu_s']:.3f}{check} (u {s['user_s']:.3f} / s {s['sys_s']:.3f})")
        per_cpu.append(rows[0])
        wall.append(rows[1])
        cpu.append(rows[2])

    vers = ", ".join(f"{ln} {status[ln]['version']}" if status.get(ln, {}).get("ok")
                     else f"{ln} unavailable" for ln in shown)
    header = machine_line(meta, vers)
    mode = (f"Mode: {'QUICK SMOKE RUN' if meta['quick'] else 'full'}; {meta['rounds']} round(s), "
            "loops interleaved per round, a fresh worker process per measurement (after a "
            f"warm-up on the same loop); load average at start {meta['loadavg_start']}, at end "
            f"{meta.get('loadavg_end')}")
    out = [f"_{header}_  ", f"_{mode}_", ""]
    out += [(f"**Work per CPU-second of the loop's own process** (user+sys of the worker, "
             f"children excluded; median of the rounds; in brackets relative to {BASE}, >1 "
             "is less CPU than it; pipe: SHA-256 check subtracted)"), ""]
    out += render_table(["case"] + shown, per_cpu, True)
    out += ["", "**Wall-clock rate** (median (min-max) of the rounds)", ""]
    out += render_table(["case"] + shown, wall, True)
    out += ["", ("**CPU seconds of the loop's process per run** (medians: CPU counted above "
                 "[pipe: + the SHA-256 check left out of it] (user / sys of it all))"), ""]
    out += render_table(["case"] + shown, cpu, True)
    notes = [f"- {ln} on {case}: " + (f"n/a: {c['na']}" if c.get("na")
                                        else f"FAILED: {c['errors'][0]['error']}")
             for case, r in results.items() for ln, c in r["loops"].items()
             if c.get("na") or c.get("failed")]
    if notes:
        out += ["", "Not measured:"] + notes
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("Usage::")[1])
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated (default: all)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: spawn,pipe")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 children, 32 MiB, 1 round")
    ap.add_argument("--children", type=int, help="children in spawn (default 1000; 200 quick)")
    ap.add_argument("--batch", type=int, default=50, help="children spawned concurrently (50)")
    ap.add_argument("--mb", type=int, help="MiB through cat (default 256; 32 with --quick)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement "
                    "before it is declared hung (default 300)")
    ap.add_argument("--json", metavar="FILE", help="results file (default "
                    "benchmarks/results/procs-<date>.json)")
    ap.add_argument("--from-json", metavar="FILE", help="re-print the tables of a JSON file")
    ap.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        import faulthandler  # a crashing loop then prints the Python stack

        faulthandler.enable()
        case, loop_name, params = args._worker
        return worker(case, loop_name, json.loads(params))
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print(render(saved["meta"], saved["results"]))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    loops = [ln.strip() for ln in args.loops.split(",") if ln.strip()]
    for kind, got, known in (("case", cases, CASES), ("loop", loops, LOOPS)):
        bad = [x for x in got if x not in known]
        if bad or not got:
            ap.error(f"unknown {kind}(s) {', '.join(bad)}; known: {', '.join(known)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.children = args.children or (200 if args.quick else 1000)
    args.mb = args.mb or (32 if args.quick else 256)
    params = {"spawn": {"units": args.children, "warm": min(args.batch, args.children),
                        "batch": args.batch},
              "pipe": {"units": args.mb, "warm": min(4, args.mb)}}

    meta = machine_info()
    meta.update(quick=args.quick, rounds=args.rounds, children=args.children, batch=args.batch,
                mb=args.mb, chunk=CHUNK, selected_loops=loops, argv=sys.argv[1:],
                executable=sys.executable, loadavg_start=loadavg(), params=params)
    status = {}
    for ln in LOOPS:
        if ln not in loops:
            status[ln] = {"ok": False, "error": "not selected"}
            continue
        status[ln] = st = spawn_worker("probe", ln, {}, 60)
        log(f"[probe] {ln}: " + (f"{st['version']} ({st['loop_class']})" if st["ok"]
                                 else f"unavailable - {st.get('error') or st.get('na')}"))
    meta["loops"] = status
    active = [ln for ln in loops if status[ln]["ok"]]

    results = {c: {"params": params[c], "loops": {ln: {"rounds": [], "errors": [], "na": None}
                                                  for ln in active}} for c in cases}
    changed, t_start = set(), time.monotonic()
    for rnd in range(args.rounds):
        for i, c in enumerate(cases):
            k = (rnd + i) % len(active) if active else 0
            for ln in active[k:] + active[:k]:
                cell = results[c]["loops"][ln]
                if cell["errors"] or cell["na"]:
                    continue  # failed or n/a once: do not spend time on it again
                r = spawn_worker(c, ln, params[c], args.timeout)
                tag = f"[{rnd + 1}/{args.rounds}] {c:<5} {ln:<9}"
                if r.get("ok"):
                    r["cpu_s"] = r["cpu_raw_s"] - r["hash_s"]
                    if r["version"] != status[ln]["version"]:
                        changed.add(f"{ln}: {status[ln]['version']} -> {r['version']}")
                    cell["rounds"].append(r)
                    unit = case_info(meta, c)[1]
                    log(f"{tag} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.3f} s (u "
                        f"{r['user_s']:.3f} s {r['sys_s']:.3f}, sha256 {r['hash_s']:.3f})  "
                        f"{fmt_rate(r['ops'] / r['cpu_s'])} {unit}/CPU-s  "
                        f"children {r['children_cpu_s']:.2f} s")
                elif r.get("na"):
                    cell["na"] = r["na"]
                    log(f"{tag} n/a: {r['na']}")
                else:
                    cell["errors"].append(r)
                    log(f"{tag} FAILED: {r['error']}")
    meta["wall_seconds"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_end"] = loadavg()

    failed = False
    for c in cases:
        for cell in results[c]["loops"].values():
            if cell["errors"]:
                cell["failed"] = failed = True
            elif cell["rounds"]:
                cell["summary"] = summarize(cell["rounds"])
    print(render(meta, results))
    for c in cases:
        for ln, cell in results[c]["loops"].items():
            if cell["errors"] and cell["errors"][0].get("traceback"):
                print(f"\n{c} on {ln}:\n    "
                      + cell["errors"][0]["traceback"].strip().replace("\n", "\n    "))
    if changed:
        meta["version_changed_during_run"] = sorted(changed)
        print("\nWARNING: a loop changed version/build during the run; the numbers mix builds:\n  "
              + "\n  ".join(sorted(changed)))
    stamp = f"{_dt.datetime.now():%Y%m%d-%H%M%S}" + ("-quick" if args.quick else "")
    path = args.json or os.path.join(HERE, "results", f"procs-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    log(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
