#!/usr/bin/env python3
"""Networking benchmarks: stock asyncio vs uvloop vs rloop vs ferroloop, side by side.

Each measurement starts a fresh server process on one loop (``_net_servers.py``), loads
it from another process, and reads the server process's CPU time from
``/proc/<pid>/stat`` just before and just after the measured load.  Cases:

* echo servers -- ``asyncio.Protocol``, ``asyncio.BufferedProtocol``, asyncio streams
  (``start_server`` + read/write/drain) and the ``sock_*`` coroutines (``sock_accept``,
  ``sock_recv``/``sock_sendall`` in a task per connection) -- over TCP loopback and a Unix
  socket, loaded by the native client in ``echo-client/`` (Rust; built by this script when
  missing or stale): N connections, one message in flight on each, every echoed byte
  checked;
* HTTP/1.1 keep-alive servers -- a minimal asyncio.Protocol one (httptools when
  installed), the same over TLS (``https``: ``create_server(ssl=...)``, one handshake
  per wrk connection, then every request and response through the loop's TLS layer) and
  an ``aiohttp.web`` hello world -- loaded by ``wrk`` with ``wrk_check.lua``, which
  checks every response.

Beside the loops stands the ceiling: ``tokio-echo/``, a one-thread tokio echo server in
Rust (built like the client), measured on the Protocol echo cells the same way; the CPU
table gives ferroloop's CPU per message over tokio's.

For every case and loop it reports the throughput and the server's CPU time per
message/request (median of the rounds), and the efficiency relative to uvloop
(uvloop's CPU/op divided by the loop's).  Rounds run every case on every loop, the
loop order rotating, so that drift on the machine hits all loops alike.

A wrong server (lost, extra, reordered or corrupted bytes, a wrong HTTP response, a
connection not closed after EOF, an error reported by the loop) fails its cell loudly
and makes the exit status 1; ``--self-check`` first shows that deliberately broken
servers are caught.  A loop lacking an API a case needs (``NotImplementedError``, or
``data_received`` called on a BufferedProtocol) shows "n/a" with the reason.

Usage::

    python benchmarks/net.py --quick                   # smoke run, ~1 s per cell, 1 round
    python benchmarks/net.py                           # full: 5 s per cell, 3 rounds
    python benchmarks/net.py --cases 'proto-tcp,http' --loops uvloop,ferroloop
    python benchmarks/net.py --list
    python benchmarks/net.py --from-json benchmarks/results/net-....json --markdown
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import os
import subprocess
import sys
import time

from _loops import how_it_died, loadavg, machine_info, worker_result
from _net_load import (TOKIO, LoadError, ServerProc, ensure_native, proc_cpu,
                       run_echo_client, run_wrk, wrk_path)
from _net_report import DEFAULT_LOOPS, KNOWN_LOOPS, render, render_failures, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("proto", "buffered", "streams", "sock")
HTTP_KINDS = ("http", "https", "aiohttp")
FAMILIES = ("tcp", "unix")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def size_label(n):
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def parse_size(s):
    s = s.strip().lower()
    for suf, mul in (("kib", 1024), ("ki", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20)):
        if s.endswith(suf):
            return int(s[:-len(suf)]) * mul
    return int(s)


def build_cases(sizes, conns, http_conns):
    """name -> case dict, in run order."""
    cases = {}
    for kind in KINDS:
        for fam in FAMILIES:
            for size in sizes:
                for c in conns:
                    name = f"{kind}-{fam}-{size_label(size)}-c{c}"
                    cases[name] = {"name": name, "kind": kind, "family": fam,
                                   "size": size, "conns": c}
    for kind in HTTP_KINDS:
        for c in http_conns:
            name = f"{kind}-tcp-c{c}"
            cases[name] = {"name": name, "kind": kind, "family": "tcp", "size": None,
                           "conns": c}
    return cases


def select_cases(cases, spec):
    """Filter by comma-separated patterns: globs (fnmatch) or plain substrings."""
    if not spec:
        return list(cases)
    pats = [p.strip() for p in spec.split(",") if p.strip()]
    keep = []
    for name in cases:
        for p in pats:
            glob = any(ch in p for ch in "*?[")
            if (fnmatch.fnmatchcase(name, p) if glob else p in name):
                keep.append(name)
                break
    return keep


# --------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------

def _load(case, address, duration, opts):
    if case["kind"] in HTTP_KINDS:
        scheme = "https" if case["kind"] == "https" else "http"
        return run_wrk(address, case["conns"], opts.wrk_threads, duration, opts.load_cpus,
                       scheme)
    return run_echo_client(address, case["family"], case["conns"], case["size"], duration,
                           opts.load_cpus, opts.client_timeout)


def run_cell(case, loop_name, opts):
    """Start a server, warm it up, measure, stop it; return the cell's result dict:
    {"ok": True, ...numbers}, {"na": reason} or {"error": ..., "traceback": ...}."""
    if loop_name == TOKIO and case["kind"] != "proto":
        return {"na": "the tokio ceiling is a plain echo server: it stands beside the "
                      "Protocol echo cells only"}
    srv = ServerProc(loop_name, case["kind"], case["family"], opts.server_cpus)
    try:
        ready = srv.wait_ready()
        if not ready.get("ready"):
            if ready.get("na"):
                return {"na": ready["na"]}
            return {"error": ready.get("error", "server failed to start"),
                    "traceback": ready.get("traceback")}
        address = ready["address"]
        try:
            warm = _load(case, address, opts.warmup, opts) if opts.warmup > 0 else None
            c0, t0 = proc_cpu(srv.pid), time.monotonic()
            rep = _load(case, address, opts.duration, opts)
            t1, c1 = time.monotonic(), proc_cpu(srv.pid)
        except LoadError as e:
            fin = srv.stop() if srv.alive() else srv._final(srv.proc.wait())
            err = str(e)
            if not fin.get("ok") and fin.get("error"):
                err += f" | server: {fin['error']}"
            elif fin.get("handler_errors"):
                err += f" | the loop reported: {fin['handler_errors'][0]}"
            return {"error": err, "traceback": fin.get("traceback") or srv.stderr_tail() or None}
        if not srv.alive() or c0 is None or c1 is None:
            fin = srv._final(srv.proc.wait())
            return {"error": "server process ended during the measurement: "
                    + fin.get("error", "?"), "traceback": fin.get("traceback")}
        fin = srv.stop()
        if not fin.get("ok"):
            return {"error": fin.get("error", "server failed"), "traceback": fin.get("traceback")}
        if fin["contract"]:
            return {"na": fin["contract"][0]}
        problems, notes = [], []
        if fin["handler_errors"]:
            problems.append("the loop called its exception handler: "
                            + " || ".join(fin["handler_errors"]))
        if case["kind"] in HTTP_KINDS:
            done = rep["requests"] + (warm["requests"] if warm else 0)
            runs = 2 if warm else 1
            # wrk counts completed responses; the server may also have answered the
            # requests in flight when wrk stopped (at most one per connection per run).
            if not done <= fin["requests"] <= done + runs * case["conns"]:
                problems.append(f"server answered {fin['requests']} requests, wrk completed "
                                f"{done} (more than {case['conns']} per run apart)")
            if fin["bad_requests"]:
                problems.append(f"server could not parse {fin['bad_requests']} request(s)")
            ops = rep["requests"]
        else:
            sent = rep["bytes"] + (warm["bytes"] if warm else 0)
            if fin["bytes"] != sent:
                problems.append(f"server received {fin['bytes']} bytes, the client sent {sent}")
            if fin["lost_with_error"]:
                problems.append("connection_lost() with an error: " + fin["lost_with_error"][0])
            ops = rep["messages"]
            not_closed = rep["not_closed"] + (warm["not_closed"] if warm else 0)
            if not_closed:
                notes.append(f"the server did not close the connection within "
                             f"{rep['close_wait_s']:g} s of the client's EOF (asyncio closes "
                             "the transport when eof_received() returns None)")
        if problems:
            return {"error": "; ".join(problems), "traceback": srv.stderr_tail() or None}
        user, system = c1[0] - c0[0], c1[1] - c0[1]
        cpu = c1[2] - c0[2]  # schedstat (ns) where available, else user + system
        return {"ok": True, "ops": ops, "seconds": rep["duration_s"],
                "ops_per_s": ops / rep["duration_s"], "cpu_s": cpu, "stat_cpu_s": user + system,
                "user_s": user,
                "sys_s": system, "cpu_per_op_us": cpu / ops * 1e6,
                "server_util": cpu / (t1 - t0), "latency_us": rep["latency_us"],
                "version": fin.get("version"), "http_parser": fin.get("http_parser"),
                "notes": notes}
    finally:
        srv.close()


# --------------------------------------------------------------------------
# Self-check: the load generators must catch broken servers
# --------------------------------------------------------------------------

def self_check(opts, loop_name):
    """Run deliberately broken servers (on ``loop_name``); True if each one was caught."""
    checks = [("proto", "pass"), ("bad-corrupt", "fail"), ("bad-drop", "fail"),
              ("bad-reorder", "fail"), ("bad-extra", "fail"), ("bad-noclose", "not closed")]
    if wrk_path():
        checks += [("http", "pass"), ("bad-http", "fail")]
    ok = True
    for kind, expect in checks:
        is_http = kind.endswith("http")
        srv = ServerProc(loop_name, kind, "tcp", opts.server_cpus)
        try:
            ready = srv.wait_ready()
            if not ready.get("ready"):
                log(f"[self-check] {kind}: server did not start: {ready}")
                ok = False
                continue
            try:
                if is_http:
                    run_wrk(ready["address"], 4, 1, 1, opts.load_cpus)
                    outcome = "pass"
                else:
                    rep = run_echo_client(ready["address"], "tcp", 2, 4096, 0.5,
                                          opts.load_cpus, timeout=2, close_wait=0.5)
                    outcome = "not closed" if rep["not_closed"] else "pass"
                detail = outcome
            except LoadError as e:
                outcome, detail = "fail", f"caught: {e}"
        finally:
            srv.stop(timeout=5)
            srv.close()
        good = outcome == expect
        ok &= good
        log(f"[self-check] {kind:<12} {'ok ' if good else 'BAD'} (expected {expect}; "
            f"{detail[:140]})")
    return ok


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def _spawn_probe(loop_name):
    if loop_name == TOKIO:
        ensure_native("tokio-echo", log)
        return {"ok": True, "version": "tokio 1 (current_thread)",
                "loop_class": "-"}
    srv_py = os.path.join(HERE, "_net_servers.py")
    try:
        p = subprocess.run([sys.executable, srv_py, "--probe", loop_name], cwd=HERE,
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "probe timed out"}
    res = worker_result(p.stdout)
    return res or {"ok": False, "error": f"probe died ({how_it_died(p.returncode)}): "
                   f"{p.stderr.strip()[-300:]}"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("Usage::")[1])
    ap.add_argument("--loops", default=",".join(DEFAULT_LOOPS),
                    help=f"comma-separated (default: the four loops and the tokio ceiling; "
                         f"also {KNOWN_LOOPS[-1]}: "
                         "ferroloop with its blocking detector on)")
    ap.add_argument("--cases", help="comma-separated globs or substrings of case names")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, help="seconds per measurement (default 5; 1 "
                    "with --quick; wrk rounds to whole seconds)")
    ap.add_argument("--warmup", type=float, help="seconds of unmeasured load on each fresh "
                    "server first (default 1; 0.3 with --quick, wrk at least 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s cells")
    ap.add_argument("--sizes", default="1k,10k,100k",
                    help="echo message sizes (default 1k,10k,100k)")
    ap.add_argument("--conns", default="1,8", help="echo connection counts (default 1,8)")
    ap.add_argument("--http-conns", default="8,64",
                    help="wrk -c values, comma-separated (default 8,64)")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    ap.add_argument("--client-timeout", type=float, default=10.0,
                    help="seconds without progress before the echo client gives up")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the server and the load generator to separate CPUs")
    ap.add_argument("--no-self-check", action="store_true",
                    help="skip checking first that broken servers are caught")
    ap.add_argument("--self-check", action="store_true", help="only run the self-check")
    ap.add_argument("--json", metavar="FILE", help="where to write the results (default "
                    "benchmarks/results/net-<date>.json)")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--from-json", metavar="FILE", help="re-print the tables of a JSON file")
    args = ap.parse_args(argv)

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    conns = [int(c) for c in args.conns.split(",") if c.strip()]
    http_conns = [int(c) for c in args.http_conns.split(",") if c.strip()]
    all_cases = build_cases(sizes, conns, http_conns)
    if args.list:
        for name in all_cases:
            print(name)
        return 0
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print(render(saved["meta"], saved["results"], saved["meta"]["selected_loops"],
                     args.markdown))
        fails = render_failures(saved["results"])
        if fails:
            print("\nFailures:\n" + fails)
        return 0

    cases = select_cases(all_cases, args.cases)
    if not cases:
        ap.error(f"no case matches {args.cases!r}; see --list")
    loops = [ln.strip() for ln in args.loops.split(",") if ln.strip()]
    bad = [ln for ln in loops if ln not in KNOWN_LOOPS]
    if bad:
        ap.error(f"unknown loop(s) {', '.join(bad)}; known: {', '.join(KNOWN_LOOPS)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    usable = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(usable) < 2:
        args.server_cpus = args.load_cpus = None
    else:
        args.server_cpus, args.load_cpus = {usable[-1]}, set(usable[:-1])

    ensure_native("echo-client", log)
    if any(all_cases[c]["kind"] in HTTP_KINDS for c in cases) and not wrk_path():
        log("[warn] wrk not found (apt-get install wrk): the http cases will fail")

    meta = machine_info()
    meta.update(quick=args.quick, rounds=args.rounds, duration=args.duration,
                warmup=args.warmup, selected_loops=loops, argv=sys.argv[1:],
                server_cpus=sorted(args.server_cpus) if args.server_cpus else None,
                load_cpus=sorted(args.load_cpus) if args.load_cpus else None,
                loadavg_start=loadavg(), wrk_threads=args.wrk_threads,
                executable=sys.executable)
    loop_status = {}
    for ln in KNOWN_LOOPS:
        if ln not in loops:
            loop_status[ln] = {"ok": False, "error": "not selected"}
            continue
        loop_status[ln] = st = _spawn_probe(ln)
        log(f"[probe] {ln}: " + (f"{st['version']} ({st['loop_class']})" if st["ok"]
                                 else f"unavailable - {st['error']}"))
    meta["loops"] = loop_status
    active = [ln for ln in loops if loop_status[ln]["ok"]]

    if args.self_check or not args.no_self_check:
        check_loop = "asyncio" if "asyncio" in active else (active or ["asyncio"])[0]
        if not self_check(args, check_loop):
            log("[self-check] FAILED: a broken server was not caught; not measuring")
            return 1
        if args.self_check:
            return 0

    results = {c: {"case": all_cases[c], "loops": {ln: {"rounds": [], "errors": [], "na": None}
                                                    for ln in active}} for c in cases}
    # Per cell: server start (~0.3 s), warm-up (wrk: whole seconds), measurement, stop.
    per_cell = args.duration + max(args.warmup, 1 if args.warmup > 0 else 0) + 0.5
    total = len(cases) * len(active) * args.rounds * per_cell
    log(f"[plan] {len(cases)} case(s) x {len(active)} loop(s) x {args.rounds} round(s), "
        f"~{per_cell:.1f} s each: about {total / 60:.1f} min (less for n/a cells)")
    changed = set()
    t_start = time.monotonic()
    for rnd in range(args.rounds):
        for i, c in enumerate(cases):
            k = (rnd + i) % len(active) if active else 0
            for ln in active[k:] + active[:k]:
                cell = results[c]["loops"][ln]
                if cell["errors"] or cell["na"]:
                    continue  # failed or n/a once: do not spend time on it again
                r = run_cell(all_cases[c], ln, args)
                tag = f"[{rnd + 1}/{args.rounds}] {c:<22} {ln:<9}"
                if r.get("ok"):
                    if r.get("version") and r["version"] != loop_status[ln]["version"]:
                        changed.add(f"{ln}: {loop_status[ln]['version']} -> {r['version']}")
                    if r.get("http_parser"):
                        meta["http_parser"] = r["http_parser"]
                    cell["rounds"].append(r)
                    log(f"{tag} {r['ops_per_s']:>10.0f}/s  cpu {r['cpu_per_op_us']:7.2f} us/op  "
                        f"load {r['server_util'] * 100:3.0f}%  p99 {r['latency_us']['p99']:.0f} us")
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
    print(render(meta, results, loops, args.markdown))
    fails = render_failures(results)
    if fails:
        print("\nFailures:\n" + fails)
    if changed:
        meta["version_changed_during_run"] = sorted(changed)
        print("\nWARNING: a loop changed version/build during the run; the numbers mix builds:\n  "
              + "\n  ".join(sorted(changed)))
    stamp = f"{_dt.datetime.now():%Y%m%d-%H%M%S}" + ("-quick" if args.quick else "")
    path = args.json or os.path.join(HERE, "results", f"net-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    log(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
