"""Summaries and tables for ``net.py``."""

from __future__ import annotations

import statistics

from _loops import BASE, DETECTOR_LOOP, LOOPS, fmt_rate, machine_line, render_table
from _net_load import TOKIO

# What a run may select, in table order: the four loops and the tokio ceiling by default;
# the detector variant is opt-in (--loops).
DEFAULT_LOOPS = LOOPS + (TOKIO,)
KNOWN_LOOPS = DEFAULT_LOOPS + (DETECTOR_LOOP,)


def summarize(rounds):
    """Median/min/max over the rounds of one (case, loop) cell."""
    def mmm(key):
        v = [r[key] for r in rounds]
        return {"median": statistics.median(v), "min": min(v), "max": max(v)}

    return {
        "ops_per_s": mmm("ops_per_s"),
        "cpu_per_op_us": mmm("cpu_per_op_us"),
        "server_util": mmm("server_util"),
        "latency_p50_us": statistics.median(r["latency_us"]["p50"] for r in rounds),
        "latency_p99_us": statistics.median(r["latency_us"]["p99"] for r in rounds),
    }


def _status(cell, loop, loops, loop_status):
    """Text for a cell that has no numbers, or None if it has them."""
    if loop not in loops:
        return "skipped"
    if not loop_status.get(loop, {}).get("ok"):
        return "unavailable"
    if cell is None:
        return "-"
    if cell.get("na"):
        return "n/a"
    if cell.get("failed"):
        return "FAILED"
    if not cell.get("summary"):
        return "-"
    return None


def render(meta, results, loops, markdown=False):
    loop_status = meta["loops"]
    shown = [ln for ln in KNOWN_LOOPS if ln in loops]
    cases = list(results)

    def cells(case):
        return results[case]["loops"]

    # 1. throughput
    speed_rows = []
    speed_ratios = {ln: [] for ln in shown}
    for case in cases:
        row = [case]
        med = {}
        for ln in shown:
            cell = cells(case).get(ln)
            st = _status(cell, ln, loops, loop_status)
            if st:
                row.append(st)
                continue
            s = cell["summary"]["ops_per_s"]
            med[ln] = s["median"]
            row.append(f"{fmt_rate(s['median'])} ({fmt_rate(s['min'])}-{fmt_rate(s['max'])})")
        for ln in shown:
            if ln in med and BASE in med:
                speed_ratios[ln].append(med[ln] / med[BASE])
        if "ferroloop" in shown and BASE in shown:
            row.append(f"{med['ferroloop'] / med[BASE]:.2f}x"
                       if "ferroloop" in med and BASE in med else "-")
        speed_rows.append(row)
    speed_headers = ["case"] + shown
    if "ferroloop" in shown and BASE in shown:
        speed_headers.append(f"ferroloop/{BASE}")
        speed_rows.append(["geomean"] + [
            f"{statistics.geometric_mean(v):.2f}x" if v else "-"
            for v in (speed_ratios[ln] for ln in shown)]
            + [f"{statistics.geometric_mean(speed_ratios['ferroloop']):.2f}x"
               if speed_ratios["ferroloop"] else "-"])

    # 2. server CPU time per op, efficiency vs uvloop (and ferroloop over the ceiling)
    cpu_rows = []
    eff = {ln: [] for ln in shown}
    with_ceiling = TOKIO in shown and "ferroloop" in shown
    over_ceiling = []

    def cpu_of(case, ln):
        cell = cells(case).get(ln)
        if cell is None or _status(cell, ln, loops, loop_status):
            return None
        return cell["summary"]["cpu_per_op_us"]["median"]

    for case in cases:
        row = [case]
        base = cpu_of(case, BASE)
        for ln in shown:
            cell = cells(case).get(ln)
            st = _status(cell, ln, loops, loop_status)
            if st:
                row.append(st)
                continue
            c = cell["summary"]["cpu_per_op_us"]["median"]
            if base is not None and c > 0:
                e = base / c
                eff[ln].append(e)
                row.append(f"{c:.3g} ({e:.2f}x)")
            else:
                row.append(f"{c:.3g}")
        if with_ceiling:
            ferro, ceiling = cpu_of(case, "ferroloop"), cpu_of(case, TOKIO)
            if ferro and ceiling:
                over_ceiling.append(ferro / ceiling)
                row.append(f"{ferro / ceiling:.2f}")
            else:
                row.append("-")
        cpu_rows.append(row)
    if BASE in shown:
        cpu_rows.append(["geomean"] + [f"{statistics.geometric_mean(eff[ln]):.2f}x"
                                       if eff[ln] else "-" for ln in shown]
                        + ([f"{statistics.geometric_mean(over_ceiling):.2f}"
                            if over_ceiling else "-"] if with_ceiling else []))
    cpu_headers = ["case"] + shown + (["ferroloop/tokio"] if with_ceiling else [])

    # 3. server CPU load and latency seen by the client
    load_rows = []
    for case in cases:
        row = [case]
        for ln in shown:
            cell = cells(case).get(ln)
            st = _status(cell, ln, loops, loop_status)
            if st:
                row.append(st)
                continue
            s = cell["summary"]
            row.append(f"{s['server_util']['median'] * 100:.0f}% "
                       f"{s['latency_p50_us']:.0f}/{s['latency_p99_us']:.0f}")
        load_rows.append(row)

    vers = ", ".join(f"{ln} {loop_status[ln].get('version')}" if loop_status[ln].get("ok")
                     else f"{ln} unavailable" for ln in shown)
    header = machine_line(meta, vers)
    pin = (f"server pinned to CPU {meta['server_cpus']}, load generator to CPU "
           f"{meta['load_cpus']}" if meta.get("server_cpus") else "not pinned")
    mode = (f"Mode: {'QUICK SMOKE RUN' if meta['quick'] else 'full'}; {meta['rounds']} round(s), "
            f"loops interleaved per round; {meta['duration']:g} s per measurement after "
            f"{meta['warmup']:g} s warm-up, a fresh server process each; {pin}; HTTP parser "
            f"{meta.get('http_parser')}; load average at start {meta['loadavg_start']}, "
            f"at end {meta.get('loadavg_end')}")

    out = []
    emph = (lambda s: f"_{s}_  ") if markdown else (lambda s: s)
    out += [emph(header), emph(mode), ""]
    out.append(("**Throughput**" if markdown else "Throughput")
               + " (messages/s for echo, requests/s for http; median (min-max) of the rounds)")
    out.append("")
    out += render_table(speed_headers, speed_rows, markdown)
    out.append("")
    out.append(("**Server CPU time per message/request, µs**" if markdown
                else "Server CPU time per message/request, us")
               + f" (median; in brackets the efficiency vs {BASE} = {BASE}'s CPU/op divided "
               "by this loop's, >1 is better; each geomean is over the cases that loop ran"
               + ("; ferroloop/tokio: ferroloop's CPU/op over the tokio ceiling's, 1.00 is the "
                  "ceiling" if with_ceiling else "") + ")")
    out.append("")
    out += render_table(cpu_headers, cpu_rows, markdown)
    out.append("")
    out.append(("**Server CPU load and latency**" if markdown else "Server CPU load and latency")
               + " (server CPU time / wall time as % of one core; client-side round-trip "
               "latency p50/p99 in µs; medians)")
    out.append("")
    out += render_table(["case"] + shown, load_rows, markdown)
    out.append("")
    out.append("Cases: <kind>-<transport>-<message size>-c<connections>; kinds: proto = "
               "asyncio.Protocol echo, buffered = asyncio.BufferedProtocol echo, streams = "
               "start_server + read/write/drain echo, sock = sock_accept + sock_recv/"
               "sock_sendall echo (one message in flight per connection, native Rust client, "
               "every byte checked); http = HTTP/1.1 keep-alive asyncio.Protocol server, "
               "https = the same over TLS (create_server(ssl=)), "
               "aiohttp = aiohttp.web hello world, all under wrk (every response checked); "
               "tokio = a one-thread tokio echo server in Rust, the ceiling.")

    # n/a reasons, grouped
    na = {}
    for case in cases:
        for ln, cell in cells(case).items():
            if cell.get("na"):
                na.setdefault((ln, cell["na"]), []).append(case)
    if na:
        out.append("")
        out.append("n/a (the loop lacks what the case needs):")
        for (ln, reason), cs in na.items():
            out.append(f"- {ln}: {reason} ({len(cs)} case(s): {', '.join(cs)})")
    notes = {}
    for case in cases:
        for ln, cell in cells(case).items():
            for note in {n for r in cell.get("rounds", []) for n in r.get("notes", [])}:
                notes.setdefault((ln, note), []).append(case)
    if notes:
        out.append("")
        out.append("Notes (deviations from asyncio seen while measuring; the numbers stand):")
        for (ln, note), cs in notes.items():
            out.append(f"- {ln}: {note} ({len(cs)} case(s): {', '.join(cs)})")
    return "\n".join(out)


def render_failures(results):
    out = []
    for case, r in results.items():
        for ln, cell in r["loops"].items():
            if cell.get("failed"):
                err = cell["errors"][0]
                out.append(f"  {case} on {ln}: {err['error']}")
                tb = err.get("traceback")
                if tb:
                    out.append("    " + tb.strip().replace("\n", "\n    "))
    return "\n".join(out)
