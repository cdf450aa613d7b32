#!/usr/bin/env python3
"""Run CPython's own test_asyncio modules against ferroloop (or stock asyncio).

Usage:
    python tests/cpython/run_cpython_asyncio.py [--all] [--timeout S]
        [--loop ferroloop|asyncio] [--python PY] [--json FILE] [modules...]

Each module runs in its own child process (``python -m
ferroloop_cpython_bootstrap``) with a wall-clock budget per module and a
watchdog per test.  A test that hangs or crashes the interpreter is recorded
as an error and the module is resumed after it, so one bad test does not hide
the rest of the module.  The child writes JSON lines; nothing here parses
unittest's text output.  Counting and reporting live in runner_report.py.

Invariants:

* A module is ``ok`` only if every one of these holds: it was imported and
  loaded; it did not skip itself; no test failed or errored (a test that hung
  or killed the interpreter is an error); the child wrote its final ``done``
  record AND then exited with status 0 within the module budget (a child that
  crashes, is killed by a signal, exits non-zero or hangs after its last test
  is ``CRASH(after tests, ...)`` / ``TIMEOUT(after tests)``); every collected
  test produced a result (a skipped or failing setUpClass/setUpModule leaves
  tests ``not run``); and at least one test passed on the loop under test.
* Exit status is non-zero when a required module (exclusions.REQUIRED_MODULES,
  or every selected module with --strict) is not ``ok``, or is excluded.
* The last line printed counts only the tests that passed on the loop under
  test as "passed on <loop>"; tests that passed on asyncio's TestLoop, on a
  stock asyncio loop or without any loop are counted separately (see
  runner_report.py and tests/cpython/README.md).
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
import runner_report as REPORT  # noqa: E402


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


def describe_exit(rc):
    """'signal SIGSEGV' for a negative returncode, else 'exit status N'."""
    if rc is None:
        return "no exit status"
    if rc < 0:
        try:
            return "signal " + signal.Signals(-rc).name
        except ValueError:
            return "signal %d" % -rc
    return "exit status %d" % rc


class ModuleRun:
    """Runs one module, resuming after crashes/hangs, and aggregates.

    ``problems()`` lists everything that keeps the module from being ``ok``
    (see the invariants in the module docstring); ``status()`` joins them.
    """

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
        self.timed_out = False          # module budget spent before "done"
        self.crashes = 0
        self.attempts = 0
        self.returncode = None          # of the last child
        self.finished = False           # the last child wrote "done"
        # Set when the child wrote "done" and then did not exit cleanly:
        # the status label, e.g. "CRASH(after tests, signal SIGSEGV)", and a
        # sentence for the notes.
        self.after_tests = None
        self.after_tests_detail = None
        self.not_run = 0
        self.not_run_ids = []
        self.setup = None
        self.matched_exclusions = set()
        self.env_altered = False
        self.post_check = None
        self.elapsed = 0.0

    def _synthesize(self, tid, outcome, detail):
        self.tests[tid] = {"ev": "end", "id": tid, "outcome": outcome,
                           "time": 0.0, "details": [detail], "marks": {},
                           "harness": True}

    def _judge_exit_after_done(self, rc, hit_timeout, log_text):
        """The child wrote "done": its tests are over, but the module is
        only ok if the process also ends cleanly."""
        if hit_timeout:
            self.after_tests = "TIMEOUT(after tests)"
            self.after_tests_detail = (
                "still running when the module timeout (%ss) expired, killed"
                % self.args.timeout)
        elif rc != 0 and "Timeout (" in log_text:
            self.after_tests = "TIMEOUT(after tests)"
            self.after_tests_detail = (
                "hung at interpreter shutdown; the bootstrap's shutdown "
                "watchdog dumped the stacks and exited (%s)"
                % describe_exit(rc))
        elif rc != 0:
            self.after_tests = "CRASH(after tests, %s)" % describe_exit(rc)
            self.after_tests_detail = "the child died with %s" % (
                describe_exit(rc))

    def run(self):
        for p in (self.results_path, self.log_path, self.skip_path):
            if os.path.exists(p):
                os.remove(p)
        start = time.monotonic()
        deadline = start + self.args.timeout
        collected = []
        while True:
            self.attempts += 1
            attempts = self.attempts
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
                log_offset = log.tell()
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
                log.flush()
                # this attempt's output only (an earlier attempt's watchdog
                # dump must not be taken for this one's)
                log_text = _read_from(self.log_path, log_offset)
                log.write("\n### attempt %d exited with %s (%s)%s\n" % (
                    attempts, rc, describe_exit(rc),
                    " (module timeout, killed)" if hit_timeout else ""))
            shutil.rmtree(cwd, ignore_errors=True)
            self.returncode = rc

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

            if done or self.module_skip:
                self.finished = done
                self._judge_exit_after_done(rc, hit_timeout, log_text)
                break
            if self.module_error:
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
            tail = log_text[-4000:]
            if inflight:
                hung = "Timeout (" in log_text
                why = ("hung: no result after --test-timeout=%ss (faulthandler "
                       "dump in %s)" % (self.args.test_timeout, self.log_path)
                       if hung else
                       "interpreter died (%s) while this test ran; see %s"
                       % (describe_exit(rc), self.log_path))
                self._synthesize(inflight, "error", "[harness] " + why)
            else:
                self.module_error = ("child exited with %s outside any test; "
                                     "log tail:\n%s" % (describe_exit(rc),
                                                        tail))
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
        self.not_run_ids = [t for t in collected if t not in self.tests]
        self.not_run = len(self.not_run_ids)
        self.elapsed = time.monotonic() - start
        return self

    # -- aggregation --
    def counts(self):
        return REPORT.count_records(self.tests.values(),
                                    module_error=bool(self.module_error))

    def problems(self):
        """Everything that keeps this module from being ok ([] = ok)."""
        c = self.counts()
        p = []
        if self.module_error:
            p.append("ERROR")
        elif self.module_skip:
            p.append("SKIPPED")
        if self.timed_out:
            p.append("TIMEOUT")
        if not self.module_error and (c["failed"] or c["errors"]):
            p.append("FAIL(crash)" if self.crashes else "FAIL")
        if self.post_check:
            p.append("ERROR(harness check)")
        if self.after_tests:
            p.append(self.after_tests)
        if self.not_run:
            p.append("INCOMPLETE(not run: %d)" % self.not_run)
        if not p and not c["on_loop"]:
            p.append("NO-LOOP(no test passed on the loop under test)")
        return p

    def status(self):
        return ", ".join(self.problems()) or "ok"

    def ok(self):
        return not self.problems()


def _read_from(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


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
        REPORT.print_exclusions_markdown()
        return 0
    if args.test_timeout is None:
        args.test_timeout = min(120.0, args.timeout)

    if os.sep in args.python:
        # the children run in a temp dir: a relative path would not resolve
        args.python = os.path.abspath(args.python)
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
            sys.stderr.write("[%d/%d] %-18s %4d on-loop %4d without %3d failed "
                             "%3d errors %.1fs  %s\n" % (
                                 done_count[0], len(to_run), m, c["on_loop"],
                                 c["vclock"] + c["stock_loop"] + c["no_loop"],
                                 c["failed"], c["errors"], r.elapsed,
                                 r.status()))
        return r

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as ex:
        for r in ex.map(one, to_run):
            runs[r.name] = r

    tot = REPORT.print_report(runs, rows_extra, args, info)
    REPORT.print_details(runs, args)

    stale = REPORT.stale_exclusions(runs, args, py)
    if stale:
        print("\nexclusion entries that matched no test (stale?):")
        for e in stale:
            print("  %s: %s" % (e.module, e.target))

    failing_required = [n for n, r in runs.items() if r.required and not r.ok()]
    failing_required += [m for m, (req, st) in rows_extra.items()
                         if req and not st.startswith("absent")]

    if args.json:
        REPORT.write_json(args.json, runs, rows_extra, args, info, tot,
                          failing_required)

    print()
    if failing_required:
        print("required modules not ok: " + ", ".join(
            "%s (%s)" % (m, runs[m].status() if m in runs
                         else rows_extra[m][1])
            for m in sorted(failing_required)))
    else:
        print("all required modules ok")
    print(REPORT.final_line(tot, args.loop, len(failing_required)))
    return 1 if failing_required else 0


if __name__ == "__main__":
    sys.exit(main())
