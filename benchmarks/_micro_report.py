"""Tables for ``micro.py``: the loop comparison, and ``--detector-overhead``."""

from __future__ import annotations

import statistics

from _loops import BASE, LOOPS, fmt_rate, machine_line, render_table

# Loops whose CPU efficiency against BASE gets a column of its own.
EFF_LOOPS = ("rloop", "ferroloop")
# --detector-overhead: ferroloop with the blocking detector off and on.
DETECTOR_VARIANTS = ("ferroloop", "ferroloop+detector")


def fmt_n(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt_cpu(seconds):
    """CPU time per operation, e.g. '1.23 us' or '850 ns'."""
    if seconds is None:
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e9:.3g} ns"


def fmt_us(seconds):
    """CPU time per operation in µs, without the unit: '0.214', '12.0', '1234'."""
    us = seconds * 1e6
    return f"{us:.0f}" if us >= 99.95 else f"{us:#.3g}"


def summarize(samples):
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples)}


def _loop_cells(r, names, loops, loop_status, key, describe):
    """The cells of case result ``r`` for the loops ``names``: ``describe(ln, cell)`` where
    the cell has figures under ``key``, else 'skipped', 'unavailable' or 'FAILED'."""
    out = []
    for ln in names:
        cell = r["loops"].get(ln)
        if ln not in loops:
            out.append("skipped")
        elif not loop_status.get(ln, {}).get("ok"):
            out.append("unavailable")
        elif cell is None or cell.get("failed") or not cell.get(key):
            out.append("FAILED")
        else:
            out.append(describe(ln, cell))
    return out


def _ratio_cell(num, den, values):
    """'1.23x' for num/den, also appended to ``values``; '-' if either is missing."""
    if not num or not den:
        return "-"
    values.append(num / den)
    return f"{values[-1]:.2f}x"


def _geomean_cell(values):
    return f"{statistics.geometric_mean(values):.2f}x" if values else "-"


def render(meta, results, cases, loops, loop_status, markdown):
    """The comparison of the loops: per case and loop the median ops/s and CPU time per
    operation; CPU efficiency of rloop and ferroloop against uvloop; geometric means."""
    ratio_keys = [f"{ln} eff" for ln in EFF_LOOPS] + [f"ferroloop/{BASE} ops/s"]
    headers = ["case", "n"] + list(LOOPS) + ratio_keys
    rows = []
    ratios = {key: [] for key in ratio_keys}
    for case in cases:
        r = results[case]
        row = [case, fmt_n(r["n"])]
        rate, cpu = {}, {}

        def describe(ln, cell, rate=rate, cpu=cpu):
            s = summarize(cell["samples"])
            rate[ln] = s["median"]
            spread = (s["max"] - s["min"]) / 2 / s["median"] * 100
            text = f"{fmt_rate(s['median'])} ±{spread:.0f}%"
            if cell.get("cpu_per_op"):
                cpu[ln] = statistics.median(cell["cpu_per_op"])
                text += f" / {fmt_us(cpu[ln])}"
            return text

        row += _loop_cells(r, LOOPS, loops, loop_status, "samples", describe)
        for ln, key in zip(EFF_LOOPS, ratio_keys):
            row.append(_ratio_cell(cpu.get(BASE), cpu.get(ln), ratios[key]))
        row.append(_ratio_cell(rate.get("ferroloop"), rate.get(BASE), ratios[ratio_keys[-1]]))
        rows.append(row)
    if any(ratios.values()):
        rows.append(["geomean", ""] + [""] * len(LOOPS)
                    + [_geomean_cell(ratios[key]) for key in ratio_keys])

    vers = ", ".join(
        f"{ln} {loop_status[ln].get('version', 'unavailable')}"
        if loop_status.get(ln, {}).get("ok") else f"{ln} unavailable"
        for ln in LOOPS if ln in loops)
    rounds = meta["repeat"]
    scale = meta.get("scale", 1.0)
    mode = (f"Mode: {'quick' if meta['quick'] else 'full'}"
            f"{f', scale {scale:g}' if scale != 1 else ''}; figures are medians of "
            f"{rounds} round{'s' if rounds != 1 else ''}, loops interleaved per round, a "
            f"fresh process per measurement; cells: median ops/s ±half the min-max range "
            f"as % of the median / median CPU {'µs' if markdown else 'us'} per operation")
    out = [f"_{machine_line(meta, vers)}_  ", f"_{mode}_", ""] if markdown else \
        [machine_line(meta, vers), mode, ""]
    out += render_table(headers, rows, markdown)
    out.append("")
    out.append("CPU per operation: process CPU time (every thread of the worker) over the "
               "timed run, divided by the operations. "
               + ", ".join(f"{ln} eff" for ln in EFF_LOOPS)
               + f": {BASE}'s CPU per operation divided by the loop's (>1: cheaper than "
               f"{BASE}); ferroloop/{BASE} ops/s: ratio of the median throughputs; each "
               f"geomean is over the cases where both loops have a figure. Medians of "
               f"{rounds} round{'s' if rounds != 1 else ''} on {meta['cpu']}, "
               f"{meta['usable_cores']} usable cores.")
    out.append("")
    if not markdown:
        out.append("Cases:")
    for case in cases:
        desc = results[case].get("description", "")
        out.append(f"- `{case}`: {desc}" if markdown else f"  {case:<18} {desc}")
    return "\n".join(out)


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

        def describe(variant, cell, med=med):
            c = summarize(cell["cpu_per_op"])
            med[variant] = c["median"]
            return f"{fmt_cpu(c['median'])} ({fmt_cpu(c['min'])}-{fmt_cpu(c['max'])})"

        row += _loop_cells(r, (off, on), DETECTOR_VARIANTS, loop_status, "cpu_per_op", describe)
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
    header = machine_line(meta, f"ferroloop {version}")
    mode = (f"Mode: {'quick' if meta['quick'] else 'full'}, {meta['repeat']} rounds, "
            f"fresh process per measurement; ferroloop with the blocking detector off "
            f"and on (threshold {meta['detector_threshold']:g} s); CPU/op cells are the "
            f"median process CPU time (all threads) per operation (min-max)")
    out = [f"_{header}_  ", f"_{mode}_", ""] if markdown else [header, mode, ""]
    out += render_table(headers, rows, markdown)
    out.append("")
    out.append("on/off: CPU time per operation with the detector on over off (1.000x: no "
               "cost); stalls seen: callbacks the detector reported as blocking the loop "
               f"for {meta['detector_threshold']:g} s or more, over all rounds.")
    return "\n".join(out)
