"""What the CPython asyncio conformance run selects, excludes and keeps on TestLoop.

This file is data only; it is read by ``run_cpython_asyncio.py`` (the runner)
and by ``ferroloop_cpython_bootstrap.py`` (the per-module child process).
Every entry carries a reason; ``tests/cpython/README.md`` explains the policy.

Matching rules for the per-test tables (EXCLUDED_TESTS, KEEP_TESTLOOP):

* ``module`` is the short module name, e.g. ``"test_tasks"``.
* ``target`` is an fnmatch pattern.  A pattern with a ``.`` is matched
  against ``"ClassName.test_method"``; a pattern without a ``.`` is matched
  against the class name alone (the whole class).  ``"*.test_foo"`` means
  ``test_foo`` in every class of the module.
* ``loops`` restricts an entry to some loop kinds (``"ferroloop"``,
  ``"asyncio"``); empty means every kind.
* ``min_py`` / ``max_py`` restrict an entry to a range of Python versions
  (inclusive, ``(major, minor)``); ``None`` means unbounded.  Use them for
  tests that exist only in some versions, so that the runner's "stale
  exclusion" check stays meaningful.
* ``platforms`` restricts an entry to ``sys.platform`` prefixes (for classes
  that only exist on some platforms); empty means every platform.

The class that runs ``EventLoopTestsMixin`` against the loop under test is
built by the bootstrap.  It is called ``FerroloopEventLoopTests`` under
``--loop ferroloop`` and ``AsyncioEventLoopTests`` under ``--loop asyncio``;
entries written for ``FerroloopEventLoopTests`` apply to both.

Excluded tests are still collected: the bootstrap turns them into unittest
skips whose reason starts with EXCLUDED_PREFIX, so they are reported in the
"excluded" column, never silently dropped.
"""

from collections import namedtuple

EXCLUDED_PREFIX = "[excluded] "

Entry = namedtuple("Entry",
                   "module target reason loops min_py max_py platforms")


def entry(module, target, reason, loops=(), min_py=None, max_py=None,
          platforms=()):
    return Entry(module, target, reason, tuple(loops), min_py, max_py,
                 tuple(platforms))


# ---------------------------------------------------------------------------
# Module selection
# ---------------------------------------------------------------------------

# Must pass completely (except the single-test exclusions below) for the
# run to be green.  A required module absent from the running Python (e.g.
# test_timeouts / test_taskgroups / test_ssl before 3.11) is reported "absent"
# and does not fail the run.
REQUIRED_MODULES = [
    "test_futures",
    "test_futures2",
    "test_tasks",
    "test_locks",
    "test_queues",
    "test_timeouts",
    "test_taskgroups",
    "test_waitfor",
    "test_runners",
    "test_context",
    "test_pep492",
    "test_threads",
    "test_events",
    "test_base_events",
    # networking, TLS, pipes, subprocesses, signals
    "test_sock_lowlevel",
    "test_sendfile",
    "test_streams",
    "test_server",
    "test_buffered_proto",
    "test_protocols",
    "test_transports",
    # processes, pipes, signals (asyncio's child-watcher/selector internals excluded)
    "test_subprocess",
    "test_unix_events",
    # TLS (asyncio's SSLProtocol over the Rust transports)
    "test_ssl",
    "test_sslproto",
]

# Never run, not even with --all: they test the internals of another loop
# implementation (asyncio's selector / proactor machinery, Windows-only
# code), not the public event-loop contract that ferroloop implements.
# Running them "against ferroloop" would mean running them against asyncio.
# (test_base_events is run: its public-behaviour tests get the loop under
# test through an adapter, its internals tests are excluded one by one.)
EXCLUDED_MODULES = {
    "test_selector_events": (
        "tests asyncio.selector_events (BaseSelectorEventLoop, "
        "_SelectorSocketTransport) with mocked selectors; another loop's "
        "transport internals"),
    "test_proactor_events": (
        "tests asyncio.proactor_events (Windows IOCP proactor loop and its "
        "transports) with mocks; another loop's internals"),
    "test_windows_events": "Windows-only (ProactorEventLoop, IocpProactor)",
    "test_windows_utils": "Windows-only (asyncio.windows_utils pipes)",
}

# ---------------------------------------------------------------------------
# Whole classes excluded (reported as excluded, one skip per test)
# ---------------------------------------------------------------------------

_SELECTOR_CLASS = (
    "runs EventLoopTestsMixin and SubprocessTestsMixin against asyncio."
    "SelectorEventLoop (another loop); FerroloopEventLoopTests runs both "
    "mixins, subprocess tests included, against the loop under test instead")

EXCLUDED_CLASSES = [
    # test_events: the per-selector copies of the generic tests.
    entry("test_events", "SelectEventLoopTests", _SELECTOR_CLASS),
    entry("test_events", "PollEventLoopTests", _SELECTOR_CLASS),
    entry("test_events", "EPollEventLoopTests", _SELECTOR_CLASS),
    entry("test_events", "KqueueEventLoopTests", _SELECTOR_CLASS,
          platforms=("darwin", "freebsd", "openbsd", "netbsd")),
    entry("test_events", "ProactorEventLoopTests", _SELECTOR_CLASS,
          platforms=("win32",)),

    # test_unix_events (required, see REQUIRED_MODULES): the classes that test
    # asyncio's own SelectorEventLoop, pipe transports and child watchers.
    entry("test_unix_events", "SelectorEventLoopSignalTests",
          "tests asyncio.SelectorEventLoop's signal-handler internals "
          "(_signal_handlers, signal.set_wakeup_fd with _csock) on a stock "
          "SelectorEventLoop; another loop's internals"),
    entry("test_unix_events", "SelectorEventLoopUnixSocketTests",
          "constructs asyncio.SelectorEventLoop() explicitly and tests its "
          "unix-socket plumbing; another loop's internals"),
    entry("test_unix_events", "UnixReadPipeTransportTests",
          "unit tests of asyncio.unix_events._UnixReadPipeTransport driven by "
          "TestLoop.assert_reader/_add_reader; another loop's transport"),
    entry("test_unix_events", "UnixWritePipeTransportTests",
          "unit tests of asyncio.unix_events._UnixWritePipeTransport driven by "
          "TestLoop.assert_writer/_add_writer; another loop's transport"),
    entry("test_unix_events", "SafeChildWatcherTests",
          "unit tests of asyncio's SafeChildWatcher internals with a mocked "
          "os.waitpid and TestLoop; not loop behaviour"),
    entry("test_unix_events", "FastChildWatcherTests",
          "unit tests of asyncio's FastChildWatcher internals with a mocked "
          "os.waitpid and TestLoop; not loop behaviour"),
    entry("test_unix_events", "SelectorEventLoopUnixSockSendfileTests",
          "tests BaseSelectorEventLoop._sock_sendfile_native internals"),
]

# Required modules whose generic tests are parametrised by per-loop
# classes (create_event_loop() returning asyncio.SelectorEventLoop with some
# selector).  The bootstrap clones the class named here into
# "Ferroloop<Name>" whose create_event_loop() returns the loop under test;
# the per-selector originals are excluded below, since they would only test
# asyncio again.
RETARGET_CLASSES = [
    entry("test_sendfile", "SelectEventLoopTests", "sendfile tests"),
    entry("test_sock_lowlevel", "SelectEventLoopTests", "sock_* tests"),
    entry("test_buffered_proto", "BufferedProtocolSelectorTests",
          "BufferedProtocol tests"),
    entry("test_server", "SelectorStartServerTests", "start_server tests"),
    entry("test_sslproto", "SelectorStartTLSTests", "start_tls tests"),
]

_PER_SELECTOR = (
    "per-selector copy of the generic tests run against asyncio."
    "SelectorEventLoop (another loop); the generic tests run against the "
    "loop under test in the Ferroloop* clone (RETARGET_CLASSES)")
for _m in ("test_sendfile", "test_sock_lowlevel"):
    EXCLUDED_CLASSES += [
        entry(_m, "SelectEventLoopTests", _PER_SELECTOR),
        entry(_m, "PollEventLoopTests", _PER_SELECTOR),
        entry(_m, "EPollEventLoopTests", _PER_SELECTOR),
        entry(_m, "KqueueEventLoopTests", _PER_SELECTOR,
              platforms=("darwin", "freebsd", "openbsd", "netbsd")),
        entry(_m, "ProactorEventLoopTests", _PER_SELECTOR,
              platforms=("win32",)),
    ]
EXCLUDED_CLASSES += [
    entry("test_buffered_proto", "BufferedProtocolSelectorTests",
          _PER_SELECTOR),
    entry("test_buffered_proto", "BufferedProtocolProactorTests",
          _PER_SELECTOR, platforms=("win32",)),
    entry("test_server", "SelectorStartServerTests", _PER_SELECTOR),
    entry("test_server", "ProactorStartServerTests", _PER_SELECTOR,
          platforms=("win32",)),
    entry("test_sslproto", "SelectorStartTLSTests", _PER_SELECTOR),
    entry("test_sslproto", "ProactorStartTLSTests", _PER_SELECTOR,
          platforms=("win32",)),
]


# ---------------------------------------------------------------------------
# Single tests excluded (reported as excluded)
# ---------------------------------------------------------------------------

_FEL = "FerroloopEventLoopTests.{}"


def _events(test, reason, **kw):
    return entry("test_events", _FEL.format(test), reason, **kw)


# test_base_events: the bootstrap gives BaseEventLoopTests (originally a bare
# base_events.BaseEventLoop() with a mocked _selector) and
# BaseEventLoopWithSelectorTests (originally asyncio.SelectorEventLoop()) the
# loop under test.  What runs is the public behaviour: close(), debug mode,
# the thread check, call_soon/call_later/call_at argument checks and order,
# exception handlers (default, custom, broken), the task factory,
# KeyboardInterrupt in run_forever/run_until_complete, asyncgen finalisation
# (also by a gc in another thread), slow-callback logging, getnameinfo.
_BE_INTERNALS = ("BaseEventLoop internals: {}; ferroloop.Loop is not a "
                 "BaseEventLoop (its run loop, queues and timers are Rust)")
_BE_OTHER_LOOP = ("builds its own {} and tests that loop, not the loop "
                  "under test")

def _be(target, reason, **kw):
    return entry("test_base_events", target, reason, **kw)


EXCLUDED_CLASSES += [
    _be("BaseEventTests",
        "unit tests of the module-level helper asyncio.base_events."
        "_ipaddr_info (used by asyncio's create_connection); no event loop"),
    _be("BaseLoopSockSendfileTests",
        "builds asyncio.selector_events.BaseSelectorEventLoop() (no native "
        "sendfile) and tests its sock_sendfile fallback; another loop. "
        "ferroloop's sock_sendfile/sendfile run in test_sock_lowlevel, "
        "test_sendfile and tests/test_net_sendfile.py"),
    _be("TestSelectorUtils",
        "unit test of the helper asyncio.base_events._set_nodelay on a "
        "plain socket; no event loop"),
]

_BASE_EVENTS_TESTS = [
    # BaseEventLoopTests: what only BaseEventLoop has
    _be("BaseEventLoopTests.test_not_implemented", _BE_INTERNALS.format(
        "the abstract transport/_process_events/_write_to_self hooks raise "
        "NotImplementedError")),
    _be("BaseEventLoopTests.test__add_callback_*",
        _BE_INTERNALS.format("_add_callback, _ready, _scheduled")),
    _be("BaseEventLoopTests.test_call_soon",
        _BE_INTERNALS.format("asserts the handle is in loop._ready")),
    _be("BaseEventLoopTests.test_call_later",
        _BE_INTERNALS.format("asserts the handle is in loop._scheduled "
                             "(a heap of TimerHandles)")),
    _be("BaseEventLoopTests.test__run_once*", _BE_INTERNALS.format(
        "_run_once with handles pushed into _scheduled, the timeout given to "
        "the mocked _selector.select, _timer_cancelled_count cleanup")),
    _be("BaseEventLoopTests.test_single_selecter_event_callback_after_"
        "stopping", _BE_INTERNALS.format(
            "drives _process_events through a mocked _selector.select")),
    _be("BaseEventLoopTests.test_run_forever_pre_stopped",
        _BE_INTERNALS.format("asserts _selector.select was called once with "
                             "timeout 0")),
    _be("BaseEventLoopTests.test_custom_run_forever_integration",
        _BE_INTERNALS.format("_run_forever_setup/_run_forever_cleanup and a "
                             "count of _process_events calls"),
        min_py=(3, 13)),
    _be("BaseEventLoopTests.test_default_exc_handler_broken",
        _BE_OTHER_LOOP.format("base_events.BaseEventLoop subclass (mocked "
                              "_selector, stepped with _run_once)")),
    _be("BaseEventLoopTests.test_create_task",
        _BE_OTHER_LOOP.format("base_events.BaseEventLoop subclass overriding "
                              "create_task (checks asyncio.ensure_future)")),
    _be("BaseEventLoopTests.test_env_var_debug",
        "runs asyncio.new_event_loop() in a fresh interpreter that the "
        "harness does not patch: checks stock asyncio's PYTHONASYNCIODEBUG/"
        "-X dev handling, not the loop under test"),
    # BaseEventLoopWithSelectorTests: networking and selector internals
    _be("BaseEventLoopWithSelectorTests.test_accept_connection_*",
        "BaseSelectorEventLoop internals: _accept_connection with a mocked "
        "socket and _remove_reader"),
]


EXCLUDED_TESTS = [
    # ---- test_events: other classes -----------------------------------------

    # ---- test_subprocess -----------------------------------------------------
    entry("test_subprocess",
          "GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher",
          "mocks asyncio's child watcher (events.get_child_watcher) to be "
          "inactive and expects the loop to refuse; ferroloop uses no child "
          "watcher (each child's pidfd is watched by the loop itself)",
          max_py=(3, 13)),

    # ---- test_events / EventLoopTestsMixin: BaseEventLoop internals -------
    _events("test_timeout_rounding",
            "wraps loop._run_once to count iterations; ferroloop's run loop "
            "is Rust and never calls a Python _run_once (covered by "
            "tests/test_scheduling.py::test_sub_millisecond_timers_do_not_busy_spin, "
            "which bounds the loop thread's CPU time under sub-ms timers)"),
] + _BASE_EVENTS_TESTS


# ---------------------------------------------------------------------------
# Tests that keep asyncio's TestLoop although they call new_test_loop()
# without a generator (the bootstrap normally gives those the loop under
# test).  They introspect BaseEventLoop/TestLoop internals, so they cannot
# run on another loop; they are counted in the "vclock/TestLoop" column,
# never as having exercised ferroloop.
# ---------------------------------------------------------------------------

_GATHER_KEEP = (
    "GatherTestsBase drives its two loops with `while loop._ready: "
    "run_briefly(loop)` (BaseEventLoop._ready); ferroloop provides _ready "
    "and _run_once, loops without them keep TestLoop")

KEEP_TESTLOOP = [
    entry("test_tasks", "CoroutineGatherTests.test_issue46672",
          "patches asyncio.base_events.BaseEventLoop.call_exception_handler "
          "and asserts on loop.call_exception_handler; only a BaseEventLoop "
          "subclass sees that patch (ferroloop copies the function into its "
          "own class), so the gather() behaviour is checked on TestLoop"),
    # Loops without BaseEventLoop's _ready/_run_once (uvloop self-check).
    # ferroloop exposes both, so these run on ferroloop.
    entry("test_tasks", "*.test_log_destroyed_pending_task",
          "calls loop._run_once() and reads loop._ready (BaseEventLoop "
          "internals) to step the loop exactly once", loops=("uvloop",)),
    entry("test_tasks", "FutureGatherTests", _GATHER_KEEP,
          loops=("uvloop",)),
    entry("test_tasks", "CoroutineGatherTests", _GATHER_KEEP,
          loops=("uvloop",)),
]


# ---------------------------------------------------------------------------
# Helpers shared by the runner and the bootstrap
# ---------------------------------------------------------------------------

def applies(e, loop_kind, py, platform=None):
    """Whether entry ``e`` is active for this loop kind, Python version and
    platform (default: this process's sys.platform)."""
    import sys
    platform = sys.platform if platform is None else platform
    if e.loops and loop_kind not in e.loops:
        return False
    if e.platforms and not any(platform.startswith(p) for p in e.platforms):
        return False
    if e.min_py is not None and tuple(py[:2]) < tuple(e.min_py):
        return False
    if e.max_py is not None and tuple(py[:2]) > tuple(e.max_py):
        return False
    return True


def entries_for(table, module, loop_kind, py):
    return [e for e in table
            if e.module == module and applies(e, loop_kind, py)]
