"""Child process of the CPython asyncio conformance runner.

Run as ``python -m ferroloop_cpython_bootstrap`` with ``tests/cpython`` on
PYTHONPATH (``run_cpython_asyncio.py`` does this).  It runs ONE module of
CPython's installed ``test.test_asyncio`` package against the loop under test
and writes one JSON object per line to ``--results``:

    {"ev": "setup", ...}        harness facts (python, loop type, policy type)
    {"ev": "collected", "ids"}  test ids that will run (after --skip-file)
    {"ev": "start", "id"}       a test started (flushed before it runs, so a
                                hang or crash still names the culprit)
    {"ev": "end", "id", "outcome", "marks", ...}   outcome of one test; a
                                setUpClass/setUpModule error or skip is an
                                "end" record with "fixture": true
    {"ev": "module_error"|"module_skip", ...}
    {"ev": "done", ...}         every test ran; written BEFORE interpreter
                                shutdown, so the runner also checks the exit
                                status (a shutdown watchdog, --test-timeout
                                seconds, turns a hang there into a
                                faulthandler dump and exit status 1)

How the module is made to run on the loop under test:

* the loop's policy is installed, and ``asyncio.DefaultEventLoopPolicy`` plus
  ``asyncio.events._init_event_loop_policy`` are patched, so the many
  ``asyncio.set_event_loop_policy(None)`` calls in the suite (tearDownModule,
  test tearDowns) fall back to the loop under test, not to asyncio's policy;
* ``test_utils.TestCase.new_test_loop(gen=None)`` returns a loop under test
  (registered for cleanup exactly like the original) unless the test is
  listed in exclusions.KEEP_TESTLOOP; calls that pass a ``gen`` keep
  asyncio's virtual-clock TestLoop and the test is marked accordingly;
* module adapters (bootstrap_adapters.ADAPTERS) replace the fixtures that
  hard-code another loop: the mocked ``asyncio.BaseEventLoop()`` of
  test_pep492, test_runners and test_base_events (whose internals tests are
  excluded), test_base_events' ``asyncio.SelectorEventLoop()``, test_events'
  SafeChildWatcher in GetEventLoopTestsMixin.setUp; and test_events gets
  ``FerroloopEventLoopTests(EventLoopTestsMixin, SubprocessTestsMixin,
  test_utils.TestCase)``, the per-selector classes' tests on the loop under
  test.

Marks (the runner's columns depend on them): every test's "end" record says
which loops were built for it: ``target_loop`` (the loop under test),
``testloop``/``testloop_kept`` (asyncio's TestLoop), ``foreign_loop`` (any
other asyncio BaseEventLoop).  A mark made during a test belongs to that test;
during setUpClass/setUpModule, to every test of that class/module; during
tearDownClass/tearDownModule, to none; between tests otherwise (e.g.
IsolatedAsyncioTestCase builds its loop before startTest), to the next test.
"""

import argparse
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
MAX_TB = 8000


# exclusions.py sits beside this file, which is on sys.path (the script's directory,
# or PYTHONPATH for the bootstrap child).
import exclusions as EXCL  # noqa: E402
from bootstrap_adapters import ADAPTERS  # noqa: E402


# ---------------------------------------------------------------------------
# Per-test bookkeeping shared by the patches and the result class
# ---------------------------------------------------------------------------

class _State:
    current = None          # id of the running test, or None
    marks = {}              # test id -> {mark: detail}
    pending = {}            # marks made between tests (e.g. the loop that
                            # IsolatedAsyncioTestCase builds before
                            # startTest); given to the next test
    sink = None             # while a class/module fixture runs: the dict
                            # that collects its marks (see _track_fixtures)
    fixture_marks = {}      # ("class", cls) / ("module", name) -> marks of
                            # its setUpClass/setUpModule; merged into the
                            # marks of each of its tests


_tls = threading.local()


def _mark(kind, detail):
    tid = _State.current
    if tid is not None:
        m = _State.marks.setdefault(tid, {})
    elif _State.sink is not None:
        m = _State.sink
    else:
        m = _State.pending
    if kind in m and detail not in m[kind].split(","):
        m[kind] = m[kind] + "," + detail
    else:
        m.setdefault(kind, detail)


def _track_fixtures():
    """Attribute loops built in setUpClass/setUpModule to every test of that
    class/module (they share that loop), and loops built in tearDownClass/
    tearDownModule to no test at all (instead of to whichever test comes
    next).  Wraps unittest.suite.TestSuite's fixture helpers (same names and
    signatures in 3.9-3.13)."""
    from unittest import suite

    def wrap(name, key_of):
        orig = getattr(suite.TestSuite, name, None)
        if orig is None:
            return

        def wrapper(self, *args):
            key = key_of(*args)
            saved, _State.sink = _State.sink, {}
            try:
                return orig(self, *args)
            finally:
                collected, _State.sink = _State.sink, saved
                if key is not None and collected:
                    _State.fixture_marks[key] = collected
        setattr(suite.TestSuite, name, wrapper)

    wrap("_handleClassSetUp",
         lambda test, result: ("class", type(test)))
    wrap("_handleModuleFixture",
         lambda test, result: ("module", type(test).__module__))
    wrap("_tearDownPreviousClass", lambda test, result: None)
    wrap("_handleModuleTearDown", lambda result: None)


def _fixture_marks_for(test):
    marks = {}
    for key in (("module", type(test).__module__), ("class", type(test))):
        for kind, detail in _State.fixture_marks.get(key, {}).items():
            marks[kind] = detail + " (in %s setUp)" % key[0]
    return marks


def _target_factory(raw):
    """Wrap the raw loop constructor so loops built through it are known to
    be the loop under test (matters for --loop asyncio, whose loops are
    BaseEventLoops too)."""
    def new_loop_under_test():
        _mark("target_loop", "yes")
        _tls.depth = getattr(_tls, "depth", 0) + 1
        try:
            return raw()
        finally:
            _tls.depth -= 1
    return new_loop_under_test


# ---------------------------------------------------------------------------
# Loop installation
# ---------------------------------------------------------------------------

class LoopSetup:
    def __init__(self, kind):
        import asyncio
        self.kind = kind
        if kind == "ferroloop":
            import ferroloop
            self.module = ferroloop
            self.loop_type = ferroloop.Loop
            self.factory = _target_factory(ferroloop.new_event_loop)
            self.policy_cls = ferroloop.EventLoopPolicy
            self.prefix = "Ferroloop"
        elif kind == "asyncio":
            factory = _target_factory(asyncio.SelectorEventLoop)
            self.module = asyncio
            self.loop_type = asyncio.SelectorEventLoop
            self.factory = factory

            class BaselineEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
                """Stock asyncio policy; loops are built via the factory so
                the harness knows they are the loop under test."""
                _loop_factory = staticmethod(factory)

            self.policy_cls = BaselineEventLoopPolicy
            self.prefix = "Asyncio"
        elif kind == "uvloop":
            # Harness self-check only: a third-party loop that, like
            # ferroloop, is not a BaseEventLoop.  Shows which tests depend on
            # BaseEventLoop internals before ferroloop can run them.
            import uvloop

            class UvloopUnderTest(uvloop.Loop):
                _default_executor = None   # test_utils.close_loop reads it

            factory = _target_factory(UvloopUnderTest)
            self.module = uvloop
            self.loop_type = uvloop.Loop
            self.factory = factory

            class UvloopPolicy(uvloop.EventLoopPolicy):
                _loop_factory = staticmethod(factory)

            self.policy_cls = UvloopPolicy
            self.prefix = "Uvloop"
        else:
            raise SystemExit("unknown loop kind %r" % kind)

    def install(self):
        import asyncio
        from asyncio import events
        policy_cls = self.policy_cls
        # `set_event_loop_policy(None)` + next get_event_loop_policy() goes
        # through _init_event_loop_policy(), which does
        # `from . import DefaultEventLoopPolicy` (3.9-3.13).  Patch both the
        # package attribute and the initializer itself.
        self.orig_default_policy = asyncio.DefaultEventLoopPolicy
        asyncio.DefaultEventLoopPolicy = policy_cls

        def _init_event_loop_policy():
            with events._lock:
                if events._event_loop_policy is None:
                    events._event_loop_policy = policy_cls()
        events._init_event_loop_policy = _init_event_loop_policy
        asyncio.set_event_loop_policy(policy_cls())

        if self.kind != "asyncio":
            # Loops of the type under test built by any path (policy,
            # asyncio.run, IsolatedAsyncioTestCase...) count as exercising it.
            # (Under --loop asyncio only the factory counts, because the
            # suite also builds SelectorEventLoops on purpose.)
            loop_type = self.loop_type
            orig_init = loop_type.__init__

            def __init__(self, *args, **kwargs):
                _mark("target_loop", "yes")
                orig_init(self, *args, **kwargs)

            try:
                loop_type.__init__ = __init__
            except (TypeError, AttributeError):
                pass

    def check(self, where):
        """Return a problem string if asyncio's public entry points do not
        produce the loop under test, else None."""
        import asyncio
        policy = asyncio.get_event_loop_policy()
        loop = asyncio.new_event_loop()
        try:
            if not isinstance(loop, self.loop_type):
                return ("harness (%s): asyncio.new_event_loop() returned %s "
                        "under policy %s, expected %s"
                        % (where, type(loop).__name__, type(policy).__name__,
                           self.loop_type.__name__))
        finally:
            loop.close()
        return None


def _patch_test_utils(setup):
    from asyncio import base_events
    from test.test_asyncio import utils as test_utils

    keep = [] if _Ctx.no_keep_testloop else EXCL.entries_for(
        EXCL.KEEP_TESTLOOP, _Ctx.module, setup.kind, sys.version_info)

    orig_new_test_loop = test_utils.TestCase.new_test_loop

    def new_test_loop(self, gen=None):
        if gen is None:
            key = "%s.%s" % (_display_class(type(self)), self._testMethodName)
            for e in keep:
                if _entry_matches(e, key):
                    _mark("testloop_kept", e.reason)
                    return orig_new_test_loop(self, gen)
            loop = setup.factory()
            self.set_event_loop(loop)
            return loop
        return orig_new_test_loop(self, gen)

    test_utils.TestCase.new_test_loop = new_test_loop

    orig_testloop_init = test_utils.TestLoop.__init__

    def testloop_init(self, gen=None):
        _mark("testloop", "virtual clock (gen)" if gen is not None
              else "TestLoop without gen")
        orig_testloop_init(self, gen)

    test_utils.TestLoop.__init__ = testloop_init

    orig_base_init = base_events.BaseEventLoop.__init__

    def base_init(self, *args, **kwargs):
        orig_base_init(self, *args, **kwargs)
        if isinstance(self, test_utils.TestLoop):
            return
        if getattr(_tls, "depth", 0):
            return
        _mark("foreign_loop", type(self).__name__)

    base_events.BaseEventLoop.__init__ = base_init


# ---------------------------------------------------------------------------
# Module adapters (bootstrap_adapters.py) and per-selector class clones
# ---------------------------------------------------------------------------

class _Ctx:
    module = None
    setup = None
    no_keep_testloop = False


def _retarget_classes(mod, setup):
    """Clone per-selector test classes onto the loop under test."""
    for e in EXCL.entries_for(EXCL.RETARGET_CLASSES, _Ctx.module, setup.kind,
                              sys.version_info):
        src = getattr(mod, e.target, None)
        if src is None:
            continue
        name = setup.prefix + e.target

        def create_event_loop(self):
            return setup.factory()

        clone = type(name, (src,), {
            # test_events-style mixins call create_event_loop(),
            # functional.FunctionalTestCaseMixin calls new_loop()
            "create_event_loop": create_event_loop,
            "new_loop": create_event_loop,
            "__module__": mod.__name__,
            "__qualname__": name,
            "__unittest_skip__": False,   # the original gets excluded
            "_exclusion_name": "Ferroloop" + e.target,
        })
        setattr(mod, name, clone)


# ---------------------------------------------------------------------------
# Exclusions
# ---------------------------------------------------------------------------

def _display_class(cls):
    """Class name as exclusions.py spells it (bootstrap-made classes are
    spelled Ferroloop* whatever the loop kind)."""
    return cls.__dict__.get("_exclusion_name", cls.__name__)


def _entry_matches(e, key):
    """key is 'Class.method' or 'Class'."""
    if "." in e.target:
        return fnmatch.fnmatchcase(key, e.target)
    return fnmatch.fnmatchcase(key.split(".", 1)[0], e.target)


def _iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter_tests(t)
        else:
            yield t


def _skipping(reason):
    def excluded(self):
        raise unittest.SkipTest(reason)
    excluded.__unittest_skip__ = True
    excluded.__unittest_skip_why__ = reason
    return excluded


def _apply_exclusions(tests, module, kind):
    py = sys.version_info
    class_entries = EXCL.entries_for(EXCL.EXCLUDED_CLASSES, module, kind, py)
    test_entries = EXCL.entries_for(EXCL.EXCLUDED_TESTS, module, kind, py)
    matched = set()
    for test in tests:
        if not isinstance(test, unittest.TestCase):
            continue
        cls = type(test)
        meth = getattr(test, "_testMethodName", None)
        if meth is None:
            continue
        key = "%s.%s" % (_display_class(cls), meth)
        for e in class_entries:
            if _entry_matches(e, key):
                matched.add(e.target)
                if not getattr(cls, "__unittest_skip__", False):
                    cls.__unittest_skip__ = True
                    cls.__unittest_skip_why__ = EXCL.EXCLUDED_PREFIX + e.reason
                break
        else:
            for e in test_entries:
                if _entry_matches(e, key):
                    matched.add(e.target)
                    if meth in cls.__dict__ and getattr(
                            cls.__dict__[meth], "__unittest_skip_why__",
                            "").startswith(EXCL.EXCLUDED_PREFIX):
                        break
                    setattr(cls, meth,
                            _skipping(EXCL.EXCLUDED_PREFIX + e.reason))
                    break
    return sorted(matched)


# ---------------------------------------------------------------------------
# Result recording
# ---------------------------------------------------------------------------

_RANK = {"pass": 0, "skip": 1, "excluded": 1, "xfail": 1, "upass": 2,
         "fail": 3, "error": 4}


class JsonLinesResult(unittest.TestResult):
    def __init__(self, out, echo, test_timeout):
        super().__init__()
        self.out = out
        self.echo = echo
        self.test_timeout = test_timeout
        self.cur = None

    # -- plumbing --
    def emit(self, rec):
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def _tb(self, err, test):
        try:
            text = self._exc_info_to_string(err, test)
        except Exception:  # pragma: no cover - defensive
            text = "".join(traceback.format_exception(*err))
        if len(text) > MAX_TB:
            text = text[:MAX_TB // 4] + "\n[...]\n" + text[-3 * MAX_TB // 4:]
        return text

    def _say(self, msg):
        if self.echo:
            sys.stderr.write(msg)
            sys.stderr.flush()

    # -- test lifecycle --
    def startTest(self, test):
        super().startTest(test)
        tid = test.id()
        _State.current = tid
        marks = _fixture_marks_for(test)
        marks.update(_State.pending)
        _State.marks[tid] = marks
        _State.pending = {}
        self.cur = {"id": tid, "outcome": "pass", "details": [],
                    "t0": time.monotonic()}
        self.emit({"ev": "start", "id": tid})
        self._say("%s ... " % tid)
        if self.test_timeout:
            faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def stopTest(self, test):
        if self.test_timeout:
            faulthandler.cancel_dump_traceback_later()
        cur = self.cur
        if cur is not None and cur["id"] == test.id():
            rec = {"ev": "end", "id": cur["id"], "outcome": cur["outcome"],
                   "time": round(time.monotonic() - cur["t0"], 4),
                   "details": cur["details"],
                   "marks": _State.marks.get(cur["id"], {})}
            if "reason" in cur:
                rec["reason"] = cur["reason"]
            self.emit(rec)
            self._say("%s (%.2fs)\n" % (cur["outcome"], rec["time"]))
        self.cur = None
        _State.current = None
        super().stopTest(test)

    def _set(self, test, outcome, detail=None, reason=None):
        cur = self.cur
        if cur is None or cur["id"] != test.id():
            # setUpClass/tearDownModule errors arrive as _ErrorHolder objects
            # outside startTest/stopTest.
            rec = {"ev": "end", "id": str(test.id()), "outcome": outcome,
                   "time": 0.0, "details": [detail] if detail else [],
                   "marks": {}, "fixture": True}
            if reason:
                rec["reason"] = reason
            self.emit(rec)
            self._say("%s ... %s (fixture)\n" % (test.id(), outcome))
            return
        if _RANK[outcome] >= _RANK[cur["outcome"]]:
            cur["outcome"] = outcome
        if detail:
            cur["details"].append(detail)
        if reason is not None:
            cur["reason"] = reason

    def addSuccess(self, test):
        super().addSuccess(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail", self._tb(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error", self._tb(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if reason.startswith(EXCL.EXCLUDED_PREFIX):
            self._set(test, "excluded",
                      reason=reason[len(EXCL.EXCLUDED_PREFIX):])
        else:
            self._set(test, "skip", reason=reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "upass", "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        if issubclass(err[0], unittest.SkipTest):
            return
        kind = "fail" if issubclass(err[0], test.failureException) else "error"
        self._set(test, kind, "[subtest %s]\n%s"
                  % (subtest._subDescription(), self._tb(err, test)))

    def addDuration(self, test, elapsed):  # 3.12+
        pass


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def suite_dir():
    import test.test_asyncio
    return os.path.dirname(os.path.abspath(test.test_asyncio.__file__))


def info():
    d = suite_dir()
    mods = sorted(f[:-3] for f in os.listdir(d)
                  if f.startswith("test_") and f.endswith(".py"))
    ferro = {"importable": False}
    try:
        import ferroloop
        loop = ferroloop.new_event_loop()
        loop.close()
        ferro = {"importable": True,
                 "file": getattr(ferroloop, "__file__", None)}
    except BaseException as exc:  # noqa: BLE001 - report anything
        ferro["error"] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps({"python": list(sys.version_info[:3]),
                      "executable": sys.executable,
                      "suite_dir": d, "modules": mods, "ferroloop": ferro}))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--info", action="store_true")
    p.add_argument("--module")
    p.add_argument("--loop", default="ferroloop")
    p.add_argument("--results")
    p.add_argument("--skip-file")
    p.add_argument("--test-timeout", type=float, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-keep-testloop", action="store_true")
    args = p.parse_args(argv)

    if args.info:
        info()
        return 0

    faulthandler.enable()
    # A run started in the background by a non-interactive shell inherits SIGINT
    # ignored, and Python then leaves it ignored; the Ctrl-C tests (test_runners'
    # interrupt_main() cases) expect Python's own handler, as in an interactive run.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    out = open(args.results, "a", encoding="utf-8")
    result = JsonLinesResult(out, echo=not args.quiet,
                             test_timeout=args.test_timeout)

    def fatal(ev, **kw):
        rec = {"ev": ev}
        rec.update(kw)
        result.emit(rec)
        out.close()

    modname = args.module
    _Ctx.module = modname
    _Ctx.no_keep_testloop = args.no_keep_testloop
    try:
        setup = LoopSetup(args.loop)
        setup.install()
        _Ctx.setup = setup
        _patch_test_utils(setup)
        _track_fixtures()
        problem = setup.check("before import")
        if problem:
            fatal("module_error", error=problem)
            return 2
    except BaseException:
        fatal("module_error",
              error="harness: cannot install loop %r:\n%s"
                    % (args.loop, traceback.format_exc()))
        return 2

    result.emit({"ev": "setup", "python": list(sys.version_info[:3]),
                 "loop": args.loop, "loop_type": "%s.%s" % (
                     setup.loop_type.__module__, setup.loop_type.__qualname__),
                 "policy": type(__import__("asyncio")
                                .get_event_loop_policy()).__qualname__,
                 "pid": os.getpid()})

    try:
        mod = importlib.import_module("test.test_asyncio." + modname)
    except unittest.SkipTest as exc:
        fatal("module_skip", reason=str(exc))
        return 0
    except BaseException:
        fatal("module_error", error="import failed:\n" + traceback.format_exc())
        return 2

    try:
        adapter = ADAPTERS.get(modname)
        if adapter is not None:
            adapter(mod, setup)
        _retarget_classes(mod, setup)
        suite = unittest.TestLoader().loadTestsFromModule(mod)
    except BaseException:
        fatal("module_error",
              error="loading tests failed:\n" + traceback.format_exc())
        return 2

    tests = list(_iter_tests(suite))
    matched = _apply_exclusions(tests, modname, args.loop)

    skip_ids = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file, encoding="utf-8") as f:
            skip_ids = {line.strip() for line in f if line.strip()}
    if skip_ids:
        tests = [t for t in tests if t.id() not in skip_ids]
    result.emit({"ev": "collected", "ids": [t.id() for t in tests],
                 "matched_exclusions": matched})

    run_suite = unittest.TestSuite(tests)
    result.startTestRun()
    try:
        run_suite.run(result)
    finally:
        result.stopTestRun()

    problem = setup.check("after module")
    from test import support
    result.emit({"ev": "done",
                 "environment_altered": bool(
                     getattr(support, "environment_altered", False)),
                 "post_check": problem})
    out.close()
    if args.test_timeout:
        # Shutdown watchdog: the tests are over, but the module is only ok if
        # this process also exits (non-daemon threads, atexit, finalizers).
        # A hang here dumps every stack into the log and exits non-zero,
        # which the runner reports as TIMEOUT(after tests).
        faulthandler.dump_traceback_later(args.test_timeout, exit=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
