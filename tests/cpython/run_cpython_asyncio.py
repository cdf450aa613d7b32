#!/usr/bin/env python3
"""Run CPython's own test_asyncio modules against ferroloop (or stock asyncio).

Usage:
    python tests/cpython/run_cpython_asyncio.py [--all] [--timeout S]
        [--loop ferroloop|asyncio] [modules...]

Each module runs in its own child process (``python -m
ferroloop_cpython_bootstrap``) with a wall-clock budget per module and a
watchdog per test.  A test that hangs or crashes the interpreter is recorded
as an error and the module is resumed after it, so one bad test does not hide
the rest of the module.  The child writes JSON lines; nothing here parses
unittest's text output.

Exit status is non-zero when a required module (exclusions.REQUIRED_MODULES,
or every selected module with --strict) has failures, errors, a timeout, a
crash, or did not run.  The last line printed is ``N passed, N failed, N
skipped`` for CI.  See tests/cpython/README.md.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BOOTSTRAP = "ferroloop_cpython_bootstrap"


# exclusions.py sits beside this file, which is on sys.path (the script's directory,
# or PYTHONPATH for the bootstrap child).
import exclusions as EXCL  # noqa: E402


# ---------------------------------------------------------------------------
# Child process plumbing
# ---------------------------------------------------------------------------

def child_env():
    env = dict(os.environ)
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = HERE + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def interpreter_info(python):
    proc = subprocess.run([python, "-m", BOOTSTRAP, "--info"],
                          env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120)
    if proc.returncode != 0:
        raise SystemExit("cannot query %s:\n%s" % (python, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_records(path, offset=0):
    """JSON records of a results file, from byte ``offset`` on.  A line cut
    short by a kill is ignored."""
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read().decode("utf-8", "replace")
    for line in data.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            recs.append(json.loads(line))
        except ValueError:
            continue
    return recs


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


class ModuleRun:
    """Runs one module, resuming after crashes/hangs, and aggregates."""

    def __init__(self, name, args, log_dir, required):
        self.name = name
        self.args = args
        self.required = required
        self.results_path = os.path.join(log_dir, name + ".jsonl")
        self.log_path = os.path.join(log_dir, name + ".log")
        self.skip_path = os.path.join(log_dir, name + ".skip")
        self.tests = collections.OrderedDict()   # id -> end record
        self.module_error = None
        self.module_skip = None
        self.timed_out = False
        self.crashes = 0
        self.finished = False
        self.not_run = 0
        self.setup = None
        self.matched_exclusions = set()
        self.env_altered = False
        self.post_check = None
        self.elapsed = 0.0

    def _synthesize(self, tid, outcome, detail):
        self.tests[tid] = {"ev": "end", "id": tid, "outcome": outcome,
                           "time": 0.0, "details": [detail], "marks": {},
                           "harness": True}

    def run(self):
        for p in (self.results_path, self.log_path, self.skip_path):
            if os.path.exists(p):
                os.remove(p)
        start = time.monotonic()
        deadline = start + self.args.timeout
        attempts = 0
        collected = []
        while True:
            attempts += 1
            cmd = [self.args.python, "-m", BOOTSTRAP, "--module", self.name,
                   "--loop", self.args.loop, "--results", self.results_path,
                   "--skip-file", self.skip_path,
                   "--test-timeout", str(self.args.test_timeout)]
            if self.args.no_keep_testloop:
                cmd.append("--no-keep-testloop")
            cwd = tempfile.mkdtemp(prefix="flcpy-%s-" % self.name)
            offset = os.path.getsize(self.results_path) \
                if os.path.exists(self.results_path) else 0
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write("### attempt %d: %s\n" % (attempts, " ".join(cmd)))
                log.flush()
                proc = subprocess.Popen(
                    cmd, cwd=cwd, env=child_env(), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
                try:
                    rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                    hit_timeout = False
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                    rc = proc.returncode
                    hit_timeout = True
                log.write("\n### attempt %d exited with %s%s\n" % (
                    attempts, rc, " (module timeout, killed)"
                    if hit_timeout else ""))
            shutil.rmtree(cwd, ignore_errors=True)

            recs = read_records(self.results_path)
            # what this attempt wrote: which test was in flight, did it finish
            inflight = None
            done = False
            for r in read_records(self.results_path, offset):
                ev = r.get("ev")
                if ev == "start":
                    inflight = r["id"]
                elif ev == "end":
                    if r["id"] == inflight:
                        inflight = None
                elif ev == "done":
                    done = True
            for r in recs:
                ev = r.get("ev")
                if ev == "end":
                    self.tests[r["id"]] = r
                elif ev == "collected":
                    if not collected:
                        collected = list(r["ids"])
                    self.matched_exclusions.update(
                        r.get("matched_exclusions", ()))
                elif ev == "setup":
                    self.setup = r
                elif ev == "module_error":
                    self.module_error = r.get("error")
                elif ev == "module_skip":
                    self.module_skip = r.get("reason")
                elif ev == "done":
                    self.env_altered = self.env_altered or r.get(
                        "environment_altered", False)
                    self.post_check = r.get("post_check")

            if done or self.module_error or self.module_skip:
                self.finished = done
                break
            if hit_timeout:
                self.timed_out = True
                if inflight:
                    self._synthesize(
                        inflight, "error",
                        "[harness] module timeout (%ss) expired while this "
                        "test was running; see %s"
                        % (self.args.timeout, self.log_path))
                break
            # The child died before finishing: crash, or the per-test
            # watchdog (faulthandler) fired.
            self.crashes += 1
            tail = _tail(self.log_path, 4000)
            if inflight:
                hung = "Timeout (" in tail
                why = ("hung: no result after --test-timeout=%ss (faulthandler "
                       "dump in %s)" % (self.args.test_timeout, self.log_path)
                       if hung else
                       "interpreter died (exit status %s) while this test ran; "
                       "see %s" % (rc, self.log_path))
                self._synthesize(inflight, "error", "[harness] " + why)
            else:
                self.module_error = ("child exited with status %s outside "
                                     "any test; log tail:\n%s" % (rc, tail))
                break
            if attempts > self.args.max_restarts:
                self.module_error = "too many crashes (%d); giving up" % (
                    self.crashes)
                break
            if time.monotonic() >= deadline:
                self.timed_out = True
                break
            with open(self.skip_path, "w", encoding="utf-8") as f:
                for tid in self.tests:
                    f.write(tid + "\n")
        if collected:
            self.not_run = len([t for t in collected if t not in self.tests])
        self.elapsed = time.monotonic() - start
        return self

    # -- aggregation --
    def counts(self):
        c = collections.Counter()
        for r in self.tests.values():
            o = r["outcome"]
            c["run"] += 1
            marks = r.get("marks") or {}
            on_testloop = "testloop" in marks or "testloop_kept" in marks
            if o == "pass":
                c["vclock" if on_testloop else "passed"] += 1
                if marks.get("foreign_loop"):
                    c["foreign"] += 1
                if not on_testloop and not marks.get("target_loop"):
                    c["loopless"] += 1
            elif o in ("fail", "upass"):
                c["failed"] += 1
            elif o == "error":
                c["errors"] += 1
            elif o in ("skip", "xfail"):
                c["skipped"] += 1
            elif o == "excluded":
                c["excluded"] += 1
        if self.module_error and not (c["failed"] or c["errors"]):
            c["errors"] += 1
        return c

    def status(self):
        c = self.counts()
        if self.module_error:
            return "ERROR"
        if self.timed_out:
            return "TIMEOUT"
        if self.module_skip:
            return "SKIPPED"
        if c["failed"] or c["errors"]:
            return "FAIL" + ("(crash)" if self.crashes else "")
        if self.post_check:
            return "ERROR"
        return "ok"

    def ok(self):
        return self.status() == "ok"


def _tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

COLUMNS = [("module", 18), ("req", 3), ("run", 5), ("passed", 6),
           ("failed", 6), ("errors", 6), ("skipped", 7), ("excluded", 8),
           ("vclock", 6), ("time", 7), ("status", 0)]


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


def print_report(runs, rows_extra, args, info, out=sys.stdout):
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
            w(row([name, req, "", "", "", "", "", "", "", "", status]) + "\n")
            continue
        r = runs[name]
        c = r.counts()
        tot.update(c)
        tot["time"] += r.elapsed
        w(row([name, "yes" if r.required else "", c["run"], c["passed"],
                c["failed"], c["errors"], c["skipped"], c["excluded"],
                c["vclock"], "%.1fs" % r.elapsed,
                r.status() + (" (not run: %d)" % r.not_run
                              if r.not_run else "")]) + "\n")
    w("-" * len(header) + "\n")
    w(row(["TOTAL", "", tot["run"], tot["passed"], tot["failed"],
            tot["errors"], tot["skipped"], tot["excluded"], tot["vclock"],
            "%.1fs" % tot["time"], ""]) + "\n")
    w("\ncolumns: passed = passed on the loop under test; vclock = passed but "
      "ran on asyncio's TestLoop (virtual clock via new_test_loop(gen), or "
      "kept by KEEP_TESTLOOP) so they did NOT exercise %s; skipped = skipped "
      "by the test itself (+ expected failures); excluded = exclusions.py\n"
      % args.loop)
    return tot


def print_details(runs, args, out=sys.stdout):
    w = out.write
    notes = []
    for name in sorted(runs):
        r = runs[name]
        c = r.counts()
        if c["foreign"]:
            ids = [t for t, rec in r.tests.items()
                   if rec["outcome"] == "pass"
                   and (rec.get("marks") or {}).get("foreign_loop")]
            notes.append("%s: %d passing test(s) also built a stock asyncio "
                         "loop (not the loop under test), e.g. %s"
                         % (name, len(ids), ", ".join(
                             i.rsplit(".", 2)[-2] + "." + i.rsplit(".", 1)[-1]
                             for i in ids[:3])))
        if c["loopless"]:
            notes.append("%s: %d passing test(s) built no event loop at all "
                         "(loop-agnostic unit tests, or a loop shared from "
                         "setUpClass)" % (name, c["loopless"]))
        if r.env_altered:
            notes.append("%s: test.support.environment_altered was set "
                         "(leaked threads/processes); see %s"
                         % (name, r.log_path))
        if r.post_check:
            notes.append("%s: %s" % (name, r.post_check))
        if r.crashes:
            notes.append("%s: child crashed/hung %d time(s), resumed after "
                         "the culprit" % (name, r.crashes))
    if notes:
        w("\nnotes:\n")
        for n in notes:
            w("  - " + n + "\n")

    bad = []
    for name in sorted(runs, key=lambda n: (not runs[n].required, n)):
        r = runs[name]
        if r.module_error:
            bad.append((r, "%s [module error]" % name,
                        r.module_error.strip().splitlines()[-1:]
                        and essence(r.module_error)))
        for tid, rec in r.tests.items():
            if rec["outcome"] in ("fail", "error", "upass"):
                det = rec.get("details") or [""]
                bad.append((r, "%s [%s]" % (tid, rec["outcome"]),
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


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def normalize(name):
    name = name.strip()
    if name.startswith("test.test_asyncio."):
        name = name[len("test.test_asyncio."):]
    if name.endswith(".py"):
        name = name[:-3]
    if not name.startswith("test_"):
        name = "test_" + name
    return name


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Run CPython's test_asyncio against ferroloop.")
    p.add_argument("modules", nargs="*",
                   help="modules to run (default: the required set)")
    p.add_argument("--all", action="store_true",
                   help="also run every other module (informational)")
    p.add_argument("--loop", choices=("ferroloop", "asyncio", "uvloop"),
                   default="ferroloop",
                   help="loop under test; asyncio = stock baseline; uvloop "
                        "= harness self-check with another non-BaseEventLoop "
                        "loop (needs uvloop installed)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="wall-clock budget per module in seconds (300)")
    p.add_argument("--test-timeout", type=float, default=None,
                   help="per-test watchdog in seconds; 0 disables "
                        "(default: min(120, --timeout))")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter to run the suite with (default: this "
                        "one); the suite is found via its test.test_asyncio")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="modules run in parallel (default 1; timing-"
                        "sensitive tests prefer 1)")
    p.add_argument("--strict", action="store_true",
                   help="treat every selected module as required")
    p.add_argument("--no-keep-testloop", action="store_true",
                   help="ignore exclusions.KEEP_TESTLOOP: give those tests "
                        "the loop under test too (to check whether they "
                        "can move off TestLoop)")
    p.add_argument("--max-restarts", type=int, default=25,
                   help="resume a module at most this many times after a "
                        "crash/hang (25)")
    p.add_argument("--max-failures", type=int, default=200,
                   help="failure lines to print (0 = all)")
    p.add_argument("--log-dir", default=None,
                   help="where per-module .jsonl/.log files go (default: a "
                        "fresh temp dir)")
    p.add_argument("--json", default=None,
                   help="write a machine-readable summary here")
    p.add_argument("--list", action="store_true",
                   help="only print the module selection and exit")
    p.add_argument("--list-exclusions", action="store_true",
                   help="print exclusions.py as Markdown tables and exit")
    args = p.parse_args(argv)
    if args.list_exclusions:
        print_exclusions_markdown()
        return 0
    if args.test_timeout is None:
        args.test_timeout = min(120.0, args.timeout)

    info = interpreter_info(args.python)
    py = tuple(info["python"])
    available = set(info["modules"])

    if args.loop == "ferroloop" and not info["ferroloop"]["importable"]:
        sys.stderr.write("warning: ferroloop is not usable with %s: %s\n"
                         % (args.python, info["ferroloop"].get("error")))

    if args.modules:
        selected = [normalize(m) for m in args.modules]
    elif args.all:
        selected = sorted(available | set(EXCL.REQUIRED_MODULES))
    else:
        selected = list(EXCL.REQUIRED_MODULES)

    rows_extra = {}
    to_run = []
    for m in selected:
        required = args.strict or m in EXCL.REQUIRED_MODULES
        if m in EXCL.EXCLUDED_MODULES:
            rows_extra[m] = ("", "excluded (module): "
                             + EXCL.EXCLUDED_MODULES[m][:60])
        elif m not in available:
            rows_extra[m] = ("yes" if required else "",
                             "absent in Python %d.%d" % py[:2])
        else:
            to_run.append((m, required))

    if args.list:
        for m, req in to_run:
            print("%-22s %s" % (m, "required" if req else "informational"))
        for m, (req, st) in sorted(rows_extra.items()):
            print("%-22s %s" % (m, st))
        return 0

    if args.log_dir is None:
        args.log_dir = tempfile.mkdtemp(prefix="ferroloop-cpython-%s-py%d%d-"
                                        % (args.loop, py[0], py[1]))
    os.makedirs(args.log_dir, exist_ok=True)
    sys.stderr.write("running %d module(s) on %s with %s, logs in %s\n"
                     % (len(to_run), args.loop, args.python, args.log_dir))

    runs = {}
    lock = threading.Lock()
    done_count = [0]

    def one(item):
        m, req = item
        r = ModuleRun(m, args, args.log_dir, req).run()
        with lock:
            done_count[0] += 1
            c = r.counts()
            sys.stderr.write("[%d/%d] %-18s %-8s %4d passed %3d failed %3d "
                             "errors %.1fs\n" % (
                                 done_count[0], len(to_run), m, r.status(),
                                 c["passed"] + c["vclock"], c["failed"],
                                 c["errors"], r.elapsed))
        return r

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as ex:
        for r in ex.map(one, to_run):
            runs[r.name] = r

    tot = print_report(runs, rows_extra, args, info)
    print_details(runs, args)

    stale = stale_exclusions(runs, args, py)
    if stale:
        print("\nexclusion entries that matched no test (stale?):")
        for e in stale:
            print("  %s: %s" % (e.module, e.target))

    failing_required = [n for n, r in runs.items() if r.required and not r.ok()]
    failing_required += [m for m, (req, st) in rows_extra.items()
                         if req and not st.startswith("absent")]

    if args.json:
        summary = {
            "python": info["python"], "loop": args.loop,
            "suite_dir": info["suite_dir"], "log_dir": args.log_dir,
            "modules": {
                n: {"required": r.required, "status": r.status(),
                    "counts": dict(r.counts()), "elapsed": r.elapsed,
                    "crashes": r.crashes, "not_run": r.not_run,
                    "module_error": r.module_error,
                    "tests": list(r.tests.values())}
                for n, r in runs.items()},
            "not_run_modules": {m: st for m, (req, st) in rows_extra.items()},
            "failing_required": sorted(failing_required),
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)

    print()
    if failing_required:
        print("required modules not passing: " + ", ".join(
            sorted(failing_required)))
    else:
        print("all required modules passed")
    if tot["vclock"]:
        print("(%d of the passed tests ran on asyncio's TestLoop, not on %s)"
              % (tot["vclock"], args.loop))
    print("%d passed, %d failed, %d skipped" % (
        tot["passed"] + tot["vclock"], tot["failed"] + tot["errors"],
        tot["skipped"] + tot["excluded"]))
    return 1 if failing_required else 0


if __name__ == "__main__":
    sys.exit(main())
