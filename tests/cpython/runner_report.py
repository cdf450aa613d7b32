"""Counting and reporting for the CPython test_asyncio runner.

``run_cpython_asyncio.py`` runs the modules and keeps, per module, one ``end``
record per test (written by ``ferroloop_cpython_bootstrap.py``).  This module
turns those records into counts, the per-module table, the notes and failure
lines, the JSON summary and the final line.  It does not run anything.

Invariants:

* A test counts as *passed on the loop under test* (``on_loop``) only if it
  passed AND the bootstrap saw the loop under test being built for it (the
  ``target_loop`` mark: built during the test, or during the setUpClass /
  setUpModule of its class / module).  Every other passing test is counted in
  exactly one "passed without the loop under test" column:

  - ``vclock``: it ran on asyncio's virtual-clock ``TestLoop`` (``testloop``
    or ``testloop_kept`` mark; this wins over ``target_loop``, since we cannot
    tell which loop its assertions were about);
  - ``stock_loop``: it built only a stock asyncio loop (``foreign_loop``
    mark, e.g. an explicit ``asyncio.SelectorEventLoop()``);
  - ``no_loop``: no event loop was built at all (loop-agnostic unit tests,
    tests that use a ``Mock`` as loop).

* Every record lands in exactly one of on_loop, vclock, stock_loop, no_loop,
  failed, errors, skipped, excluded, so those columns add up to ``run``; a
  module that could not be imported/loaded adds one to ``errors`` (and not to
  ``run``) unless it already has a failure or an error.
* An unknown outcome is an error, never a pass.
"""

from __future__ import annotations

import collections
import json
import sys

import exclusions as EXCL

PASS_COLUMNS = ("on_loop", "vclock", "stock_loop", "no_loop")
ALL_COLUMNS = PASS_COLUMNS + ("failed", "errors", "skipped", "excluded")


def classify(rec):
    """Column of one ``end`` record (see the module docstring)."""
    outcome = rec.get("outcome")
    if outcome == "pass":
        marks = rec.get("marks") or {}
        if "testloop" in marks or "testloop_kept" in marks:
            return "vclock"
        if "target_loop" in marks:
            return "on_loop"
        if "foreign_loop" in marks:
            return "stock_loop"
        return "no_loop"
    if outcome in ("fail", "upass"):
        return "failed"
    if outcome in ("skip", "xfail"):
        return "skipped"
    if outcome == "excluded":
        return "excluded"
    return "errors"


def count_records(records, module_error=False):
    """Counter over ALL_COLUMNS plus ``run`` and ``on_loop_with_stock``
    (on_loop tests that also built a stock asyncio loop, for the notes)."""
    c = collections.Counter()
    for rec in records:
        col = classify(rec)
        c["run"] += 1
        c[col] += 1
        if col == "on_loop" and (rec.get("marks") or {}).get("foreign_loop"):
            c["on_loop_with_stock"] += 1
    if module_error and not (c["failed"] or c["errors"]):
        c["errors"] += 1
    return c


def short_id(tid):
    parts = tid.rsplit(".", 2)
    return ".".join(parts[-2:]) if len(parts) >= 2 else tid


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------

COLUMNS = [("module", 18), ("req", 3), ("run", 5), ("on-loop", 7),
           ("vclock", 6), ("stock-loop", 10), ("no-loop", 7), ("failed", 6),
           ("errors", 6), ("skipped", 7), ("excluded", 8), ("time", 7),
           ("status", 0)]


def _row(values, module_width=18):
    out = []
    for (name, width), v in zip(COLUMNS, values):
        if name == "module":
            width = module_width
        s = str(v)
        if width == 0:
            out.append(s)
        elif name == "module":
            out.append(s.ljust(width))
        else:
            out.append(s.rjust(width))
    return " | ".join(out)


def _values(c):
    return [c["run"], c["on_loop"], c["vclock"], c["stock_loop"],
            c["no_loop"], c["failed"], c["errors"], c["skipped"],
            c["excluded"]]


def print_report(runs, rows_extra, args, info, out=sys.stdout):
    """The per-module table; returns the totals (a Counter)."""
    w = out.write
    w("\nCPython %s test_asyncio against %s (suite: %s)\n" % (
        ".".join(map(str, info["python"])), args.loop, info["suite_dir"]))
    names = sorted(list(runs) + list(rows_extra))
    mw = max([18] + [len(n) for n in names])

    def row(values):
        return _row(values, mw)

    header = row([c[0] for c in COLUMNS])
    w(header + "\n" + "-" * len(header) + "\n")
    tot = collections.Counter()
    for name in names:
        if name in rows_extra:
            req, status = rows_extra[name]
            w(row([name, req] + [""] * (len(COLUMNS) - 3) + [status]) + "\n")
            continue
        r = runs[name]
        c = r.counts()
        tot.update(c)
        tot["time"] += r.elapsed
        w(row([name, "yes" if r.required else ""] + _values(c)
              + ["%.1fs" % r.elapsed, r.status()]) + "\n")
    w("-" * len(header) + "\n")
    w(row(["TOTAL", ""] + _values(tot) + ["%.1fs" % tot["time"], ""]) + "\n")
    w("\ncolumns: on-loop = passed, and the test built the loop under test "
      "(%s); passed WITHOUT the loop under test: vclock = on asyncio's "
      "virtual-clock TestLoop, stock-loop = built only a stock asyncio loop, "
      "no-loop = built no event loop (loop-agnostic or mock loop); skipped = "
      "skipped by the test itself (+ expected failures); excluded = "
      "exclusions.py\n" % args.loop)
    return tot


def final_line(tot, loop, modules_not_ok=0):
    """The last line printed (CI reads it).  ``failed`` counts failures and
    errors of tests (a test that hung or crashed the child is an error);
    ``modules_not_ok`` (required modules that are not ok, e.g. a crash after
    the last test or tests that never ran) is appended when non-zero."""
    line = ("%d passed on %s, %d failed, %d passed without the loop under "
            "test (vclock %d, stock-loop %d, no-loop %d), %d skipped, "
            "%d excluded" % (
                tot["on_loop"], loop, tot["failed"] + tot["errors"],
                tot["vclock"] + tot["stock_loop"] + tot["no_loop"],
                tot["vclock"], tot["stock_loop"], tot["no_loop"],
                tot["skipped"], tot["excluded"]))
    if modules_not_ok:
        line += "; %d required module(s) not ok" % modules_not_ok
    return line


# ---------------------------------------------------------------------------
# Notes and failures
# ---------------------------------------------------------------------------

def essence(detail, lines=4):
    """Last meaningful lines of a traceback (the exception and where)."""
    txt = [l for l in detail.rstrip().splitlines() if l.strip()]
    if not txt:
        return ""
    exc_idx = len(txt) - 1
    for i in range(len(txt) - 1, -1, -1):
        if not txt[i].startswith(" "):
            exc_idx = i
            # walk up over multi-line exception messages
            continue
        break
    where = ""
    for l in txt[:exc_idx]:
        if l.strip().startswith("File "):
            where = l.strip()
    msg = " / ".join(l.strip() for l in txt[exc_idx:exc_idx + lines])
    return (where + " :: " if where else "") + msg


def _ids_in(r, column, limit=3):
    ids = [t for t, rec in r.tests.items() if classify(rec) == column]
    return ", ".join(short_id(i) for i in ids[:limit])


def print_details(runs, args, out=sys.stdout):
    w = out.write
    notes = []
    for name in sorted(runs):
        r = runs[name]
        c = r.counts()
        if c["stock_loop"]:
            notes.append("%s: %d passing test(s) built only a stock asyncio "
                         "loop, not the loop under test, e.g. %s"
                         % (name, c["stock_loop"], _ids_in(r, "stock_loop")))
        if c["no_loop"]:
            notes.append("%s: %d passing test(s) built no event loop (loop-"
                         "agnostic, or a mock loop), e.g. %s"
                         % (name, c["no_loop"], _ids_in(r, "no_loop")))
        if c["on_loop_with_stock"]:
            notes.append("%s: %d on-loop test(s) also built a stock asyncio "
                         "loop" % (name, c["on_loop_with_stock"]))
        if r.env_altered:
            notes.append("%s: test.support.environment_altered was set "
                         "(leaked threads/processes); see %s"
                         % (name, r.log_path))
        if r.post_check:
            notes.append("%s: %s" % (name, r.post_check))
        if r.crashes:
            notes.append("%s: child crashed/hung %d time(s), resumed after "
                         "the culprit" % (name, r.crashes))
        if r.after_tests:
            notes.append("%s: the child ran every test, then: %s; see %s"
                         % (name, r.after_tests_detail, r.log_path))
        if r.not_run:
            notes.append("%s: %d collected test(s) never ran (e.g. %s)%s"
                         % (name, r.not_run, ", ".join(
                             short_id(t) for t in r.not_run_ids[:3]),
                            "; a setUpClass/setUpModule skipped or failed"
                            if r.finished else ""))
        if r.module_skip:
            notes.append("%s: the module skipped itself: %s"
                         % (name, r.module_skip))
    if notes:
        w("\nnotes:\n")
        for n in notes:
            w("  - " + n + "\n")

    bad = []
    for name in sorted(runs, key=lambda n: (not runs[n].required, n)):
        r = runs[name]
        if r.module_error:
            bad.append((r, "%s [module error]" % name,
                        essence(r.module_error)))
        for tid, rec in r.tests.items():
            if classify(rec) in ("failed", "errors"):
                det = rec.get("details") or [""]
                bad.append((r, "%s [%s]" % (tid, rec.get("outcome")),
                            essence(det[0])))
    if bad:
        w("\nfailures (%d); full tracebacks in the .jsonl/.log files in %s:\n"
          % (len(bad), args.log_dir))
        limit = args.max_failures
        for i, (r, head, ess) in enumerate(bad):
            if limit and i >= limit:
                w("  ... %d more\n" % (len(bad) - limit))
                break
            w("  %s%s\n      %s\n" % ("" if r.required else "(info) ",
                                      head, ess[:600]))


def stale_exclusions(runs, args, py):
    stale = []
    for table in (EXCL.EXCLUDED_CLASSES, EXCL.EXCLUDED_TESTS):
        for e in table:
            r = runs.get(e.module)
            if r is None or not r.finished:
                continue
            if not EXCL.applies(e, args.loop, py):
                continue
            if e.target not in r.matched_exclusions:
                stale.append(e)
    return stale


# ---------------------------------------------------------------------------
# JSON summary
# ---------------------------------------------------------------------------

def _json_counts(c):
    return {k: c[k] for k in ("run",) + ALL_COLUMNS + ("on_loop_with_stock",)}


def write_json(path, runs, rows_extra, args, info, tot, failing_required):
    summary = {
        "python": info["python"], "loop": args.loop,
        "suite_dir": info["suite_dir"], "log_dir": args.log_dir,
        "columns": {
            "on_loop": "passed, and built the loop under test",
            "vclock": "passed on asyncio's virtual-clock TestLoop",
            "stock_loop": "passed, built only a stock asyncio loop",
            "no_loop": "passed, built no event loop",
        },
        "modules": {
            n: {"required": r.required, "status": r.status(), "ok": r.ok(),
                "problems": r.problems(),
                "counts": _json_counts(r.counts()), "elapsed": r.elapsed,
                "attempts": r.attempts, "crashes": r.crashes,
                "returncode": r.returncode, "timed_out": r.timed_out,
                "after_tests": r.after_tests_detail,
                "finished": r.finished,
                "not_run": r.not_run, "not_run_ids": r.not_run_ids,
                "module_error": r.module_error, "module_skip": r.module_skip,
                "tests": [dict(rec, column=classify(rec))
                          for rec in r.tests.values()]}
            for n, r in runs.items()},
        "not_run_modules": {m: st for m, (req, st) in rows_extra.items()},
        "failing_required": sorted(failing_required),
        "totals": _json_counts(tot),
        "final_line": final_line(tot, args.loop, len(failing_required)),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)


# ---------------------------------------------------------------------------
# --list-exclusions
# ---------------------------------------------------------------------------

def print_exclusions_markdown(out=sys.stdout):
    w = out.write

    def cond(e):
        bits = []
        if e.loops:
            bits.append("loops: " + ", ".join(e.loops))
        if e.min_py:
            bits.append("py >= %d.%d" % e.min_py)
        if e.max_py:
            bits.append("py <= %d.%d" % e.max_py)
        if e.platforms:
            bits.append("platforms: " + ", ".join(e.platforms))
        return "; ".join(bits)

    def esc(s):
        return s.replace("|", "\\|")

    w("#### Modules excluded entirely\n\n| module | reason |\n|---|---|\n")
    for m, why in sorted(EXCL.EXCLUDED_MODULES.items()):
        w("| %s | %s |\n" % (m, esc(why)))
    for title, table in (("Classes excluded", EXCL.EXCLUDED_CLASSES),
                         ("Single tests excluded", EXCL.EXCLUDED_TESTS),
                         ("Tests kept on asyncio's TestLoop",
                          EXCL.KEEP_TESTLOOP)):
        w("\n#### %s\n\n| module | class / test | reason | only when |\n"
          "|---|---|---|---|\n" % title)
        for e in table:
            w("| %s | `%s` | %s | %s |\n" % (e.module, e.target,
                                             esc(e.reason), cond(e)))
