"""The blocking detector: ``loop.set_blocking_threshold``, on ferroloop only.

Stock asyncio has no such API: its debug mode logs a slow callback only after it
returned (``slow_callback_duration``), without its stack, so these tests do not run
twice like the rest of this directory: every test here uses a ``ferroloop.Loop``.

What is checked: a stall is reported *while it lasts* (the report reaches the callback
before the blocking code returns), with the loop thread's stack (the file, line and
function come from markers in this file, never from hard-coded numbers) and the task
that owns it; nothing is reported below the threshold or while the loop polls; one
"blocked" and one "ended" report per stall; the default warning on the ``ferroloop``
logger; turning the detector off; the thresholds accepted and refused; the environment
variable and ``ferroloop.run``; a raising callback; ``close()``; and ``fork()`` (in a
child interpreter, so that the pytest process never forks).

The watchdog is a Rust thread: ``threading.enumerate()`` does not list it, so its
presence is read from the kernel's thread names (``/proc/self/task/*/comm``, which
keeps the first 15 bytes of ``ferroloop-watchdog``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import pathlib
import sys
import textwrap
import threading
import time
import warnings

import pytest

import ferroloop
from looptest_support import run_child, wait_until

THIS_FILE = pathlib.Path(__file__).resolve()
_SOURCE_LINES = THIS_FILE.read_text().splitlines()

WATCHDOG_THREAD = "ferroloop-watchdog"
WATCHDOG_COMM = WATCHDOG_THREAD[:15]  # the kernel keeps 15 bytes of a thread name

THRESHOLD = 0.1
INTERVAL = THRESHOLD / 4  # the watchdog samples the loop this often
SLACK = 0.05  # scheduling noise on a loaded machine


def line_of(marker):
    """The line number of the one line of this file ending with ``# marker``."""
    hits = [n for n, text in enumerate(_SOURCE_LINES, 1) if text.endswith(f"# {marker}")]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def innermost(report):
    """(file, line, function) of the innermost frame of a report's stack."""
    frame = report.stack[-1]
    return pathlib.Path(frame.filename).resolve(), frame.lineno, frame.name


def watchdog_tids():
    """Thread ids of this process's ferroloop watchdog threads, from the kernel."""
    tids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                name = comm.read().strip()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if name == WATCHDOG_COMM:
            tids.append(int(tid))
    return tids


class Recorder:
    """A ``set_blocking_threshold`` callback keeping every report, when and where it
    arrived."""

    def __init__(self):
        self.reports = []
        self.arrivals = []  # time.monotonic() at each report
        self.native_ids = []  # the thread each report was delivered on
        self.blocked = threading.Event()

    def __call__(self, report):
        self.arrivals.append(time.monotonic())
        self.native_ids.append(threading.get_native_id())
        self.reports.append(report)
        if not report.ended:
            self.blocked.set()

    def kinds(self):
        return ["ended" if report.ended else "blocked" for report in self.reports]

    def wait_for(self, count, timeout=5.0):
        """Wait (GIL released) until ``count`` reports arrived; return the kinds."""
        try:
            wait_until(lambda: len(self.reports) >= count, timeout)
        except AssertionError:
            pass  # the caller's assertion on the kinds says what is missing
        return self.kinds()


@pytest.fixture
def ferro_loop():
    loop = ferroloop.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield loop
    loop.close()
    assert errors == [], "the loop's exception handler was called"


@pytest.fixture
def ferroloop_warnings(caplog):
    """The records of the ``ferroloop`` logger (from any thread)."""
    caplog.set_level(logging.WARNING, logger="ferroloop")

    def records():
        return [r for r in caplog.records if r.name == "ferroloop"]

    return records


# -- what a report says, and when ---------------------------------------------------------


def test_sleep_in_a_coroutine_is_reported_while_it_sleeps(ferro_loop):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(THRESHOLD, recorder)
    seen = {}

    async def sleeper():
        started = time.monotonic()
        time.sleep(0.3)  # SLEEP-IN-TASK
        seen["returned"] = time.monotonic()
        seen["stall"] = seen["returned"] - started
        seen["reported_before_return"] = recorder.blocked.is_set()
        await asyncio.sleep(0.1)  # the loop polls: the watchdog sees the stall end

    task = ferro_loop.create_task(sleeper(), name="the-sleeper")
    ferro_loop.run_until_complete(task)

    assert recorder.kinds() == ["blocked", "ended"]
    blocked, ended = recorder.reports
    assert seen["reported_before_return"]
    assert recorder.arrivals[0] < seen["returned"]
    assert innermost(blocked) == (THIS_FILE, line_of("SLEEP-IN-TASK"), "sleeper")
    assert blocked.task is task and blocked.task.get_name() == "the-sleeper"
    assert blocked.handle is not None  # the handle running the task's step
    assert blocked.loop is ferro_loop
    assert (blocked.ended, blocked.threshold) == (False, THRESHOLD)
    assert THRESHOLD <= blocked.duration < seen["stall"]
    # The reports come from the watchdog thread, never from the loop thread.
    assert threading.get_native_id() not in recorder.native_ids
    assert set(recorder.native_ids) <= set(watchdog_tids())
    # The end of the stall: its total, and the first report's stack and task.
    assert ended.ended and ended.task is task and ended.stack == blocked.stack
    assert ended.duration >= blocked.duration
    assert abs(ended.duration - seen["stall"]) <= INTERVAL + SLACK


def test_cpu_bound_callback_is_reported_while_it_runs(ferro_loop):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(THRESHOLD, recorder)
    seen = {}

    def spin(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline: pass  # noqa: E701 - SPIN
        seen["returned"] = time.monotonic()
        seen["reported_before_return"] = recorder.blocked.is_set()

    handle = ferro_loop.call_soon(spin, 0.3)
    ferro_loop.run_until_complete(asyncio.sleep(0.2))

    assert recorder.kinds() == ["blocked", "ended"]
    blocked, ended = recorder.reports
    assert seen["reported_before_return"]
    assert recorder.arrivals[0] < seen["returned"]
    assert innermost(blocked) == (THIS_FILE, line_of("noqa: E701 - SPIN"), "spin")
    assert blocked.task is None and ended.task is None
    # The report names the handle the loop is running (a plain callback has no task).
    assert blocked.handle is handle and ended.handle is handle
    assert repr(handle) in blocked.format() and "spin" in blocked.format()
    assert ended.duration >= blocked.duration
    assert abs(ended.duration - 0.3) <= INTERVAL + SLACK


def test_one_blocked_and_one_ended_report_per_stall(ferro_loop):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(THRESHOLD, recorder)
    stalls = []

    def stall(seconds):
        started = time.monotonic()
        time.sleep(seconds)
        stalls.append(time.monotonic() - started)

    async def main():
        stall(0.25)
        await asyncio.sleep(0.1)
        # Two stalls back to back, in two callbacks: the loop never polls between them.
        ferro_loop.call_soon(stall, 0.3)
        ferro_loop.call_soon(stall, 0.35)
        await asyncio.sleep(0.1)

    ferro_loop.run_until_complete(main())
    kinds = recorder.wait_for(6)

    assert kinds == ["blocked", "ended"] * 3
    blocked, ended = recorder.reports[0::2], recorder.reports[1::2]
    for first, last, real in zip(blocked, ended, stalls):
        assert last.duration >= first.duration >= THRESHOLD
        assert abs(last.duration - real) <= INTERVAL + SLACK
        assert last.stack == first.stack
    assert [innermost(r)[2] for r in blocked] == ["stall", "stall", "stall"]
    assert blocked[0].task is not None and blocked[0].task.get_coro().__name__ == "main"
    assert blocked[1].task is None and blocked[2].task is None


def test_stall_just_before_close_still_gets_its_ended_report(ferro_loop):
    # A stall that is the last thing the loop ran, then close() at once: the loop has
    # moved on (it is closing), so the stall has ended and its total is known.
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(THRESHOLD, recorder)

    async def main():
        time.sleep(0.3)

    ferro_loop.run_until_complete(main())
    ferro_loop.close()

    assert recorder.kinds() == ["blocked", "ended"]
    assert abs(recorder.reports[1].duration - 0.3) <= INTERVAL + SLACK


def test_report_blames_only_code_that_blocked(ferro_loop):
    # A C function that holds the GIL (sum over a range) blocks the loop, then a quick
    # Python callback runs. The watchdog cannot read the stack while the GIL is held:
    # whatever it reports, it must not name the callback that came after the stall.
    n = 1_000_000
    fastest = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(n))
        fastest = min(fastest, time.perf_counter() - started)
    n = int(n * 0.3 / fastest)  # about 0.3 s, or more on a busy machine

    marks = []

    def innocent():
        marks.append(time.perf_counter())
        deadline = time.monotonic() + 0.02
        while time.monotonic() < deadline:
            pass

    recorder = Recorder()
    ferro_loop.set_blocking_threshold(0.05, recorder)
    ferro_loop.call_soon(lambda: marks.append(time.perf_counter()))
    ferro_loop.call_soon(sum, range(n))
    ferro_loop.call_soon(innocent)
    ferro_loop.run_until_complete(asyncio.sleep(0.2))
    recorder.wait_for(1)
    time.sleep(0.1)  # a second report, if any, would have come by now
    kinds = recorder.kinds()

    # The watchdog got the GIL only after the stall: it reports it as ended, without a
    # stack (the loop thread's stack would be innocent()'s by then).
    assert kinds == ["ended"] and len(recorder.reports) == 1
    (report,) = recorder.reports
    assert report.stack == () and report.task is None
    # The stall is timed from the callbacks either side of it (the calibration above is
    # only a guess on a shared machine); the report covers at least that much.
    stall = marks[1] - marks[0]
    assert stall > 0.1 and report.duration >= stall - SLACK
    blamed = [frame.name for report in recorder.reports for frame in report.stack]
    assert "innocent" not in blamed


# -- nothing below the threshold ----------------------------------------------------------


def test_many_short_callbacks_are_not_reported(ferro_loop):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(0.05, recorder)

    async def steps():
        # 0.4 s without polling, in steps of 10 ms: each step is a callback of its own.
        for _ in range(40):
            time.sleep(0.01)
            await asyncio.sleep(0)

    def chain(left):
        time.sleep(0.01)
        if left:
            ferro_loop.call_soon(chain, left - 1)

    ferro_loop.call_soon(chain, 40)
    ferro_loop.run_until_complete(steps())
    ferro_loop.run_until_complete(asyncio.sleep(0.1))
    assert recorder.reports == []


def test_a_loop_idle_in_sleep_is_not_blocked(ferro_loop):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold(0.05, recorder)
    started = time.monotonic()
    ferro_loop.run_until_complete(asyncio.sleep(1))  # polling is not blocking
    assert time.monotonic() - started >= 1
    # Nor is a loop that is not running at all.
    time.sleep(0.2)
    assert recorder.reports == []


# -- the default reporter -----------------------------------------------------------------


def test_default_reporter_logs_a_warning_with_the_stack(ferro_loop, ferroloop_warnings):
    ferro_loop.set_blocking_threshold(THRESHOLD)

    async def slow_handler():
        time.sleep(0.3)  # LOGGED-SLEEP

    async def main():
        await ferro_loop.create_task(slow_handler(), name="handler-7")
        await asyncio.sleep(0.1)

    ferro_loop.run_until_complete(main())
    wait_until(lambda: len(ferroloop_warnings()) >= 2)

    blocked, ended = ferroloop_warnings()
    assert blocked.levelno == ended.levelno == logging.WARNING
    text = blocked.getMessage()
    assert "the event loop has been blocked for" in text
    assert "by task 'handler-7'" in text
    assert "innermost last" in text
    assert f'File "{THIS_FILE}", line {line_of("LOGGED-SLEEP")}, in slow_handler' in text
    assert "time.sleep(0.3)  # LOGGED-SLEEP" in text
    assert text.rstrip().endswith("time.sleep(0.3)  # LOGGED-SLEEP")  # innermost last
    assert "the event loop was blocked for" in ended.getMessage()
    assert "in total by task 'handler-7'" in ended.getMessage()


def test_threshold_none_turns_the_detector_off(ferro_loop, ferroloop_warnings):
    recorder = Recorder()
    ferro_loop.set_blocking_threshold("50ms", recorder)
    assert ferro_loop.get_blocking_threshold() == 0.05
    wait_until(lambda: len(watchdog_tids()) == 1)
    ferro_loop.set_blocking_threshold(None)
    assert ferro_loop.get_blocking_threshold() is None
    assert watchdog_tids() == []
    ferro_loop.call_soon(time.sleep, 0.3)
    ferro_loop.run_until_complete(asyncio.sleep(0.1))
    assert recorder.reports == [] and ferroloop_warnings() == []
    ferro_loop.set_blocking_threshold(None)  # already off: nothing to do


# -- thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["50ms", "0.05", "0.05s", " 50MS ", 0.05, "5e-2"])
def test_thresholds_accepted(ferro_loop, value):
    ferro_loop.set_blocking_threshold(value)
    assert ferro_loop.get_blocking_threshold() == pytest.approx(0.05)


@pytest.mark.parametrize("value", [0, -1, "0", "-1ms", "abc", "", math.inf, "inf", math.nan])
def test_thresholds_refused(ferro_loop, value):
    ferro_loop.set_blocking_threshold(1.5)
    with pytest.raises(ValueError):
        ferro_loop.set_blocking_threshold(value)
    # A refused value changes nothing: the previous detector still runs, alone.
    assert ferro_loop.get_blocking_threshold() == 1.5
    wait_until(lambda: len(watchdog_tids()) == 1)


def test_callback_must_be_callable(ferro_loop):
    with pytest.raises(TypeError, match="callback must be callable"):
        ferro_loop.set_blocking_threshold(0.05, "not callable")
    assert ferro_loop.get_blocking_threshold() is None


def test_a_new_threshold_replaces_the_detector(ferro_loop):
    first, second = Recorder(), Recorder()
    ferro_loop.set_blocking_threshold(0.05, first)
    ferro_loop.set_blocking_threshold(THRESHOLD, second)
    wait_until(lambda: len(watchdog_tids()) == 1)
    ferro_loop.call_soon(time.sleep, 0.07)  # under the new threshold
    ferro_loop.run_until_complete(asyncio.sleep(0.05))
    ferro_loop.call_soon(time.sleep, 0.3)
    ferro_loop.run_until_complete(asyncio.sleep(0.1))
    assert first.reports == []
    assert second.wait_for(2) == ["blocked", "ended"]
    assert second.reports[0].threshold == THRESHOLD


# -- environment variable and ferroloop.run -----------------------------------------------


def test_environment_variable_sets_new_loops(monkeypatch, ferroloop_warnings):
    monkeypatch.setenv("FERROLOOP_BLOCKING_THRESHOLD", "50ms")
    loop = ferroloop.new_event_loop()
    try:
        assert loop.get_blocking_threshold() == 0.05

        async def main():
            time.sleep(0.2)  # ENV-SLEEP
            await asyncio.sleep(0.05)

        loop.run_until_complete(main())
        wait_until(lambda: len(ferroloop_warnings()) >= 2)
    finally:
        loop.close()
    assert f"line {line_of('ENV-SLEEP')}, in main" in ferroloop_warnings()[0].getMessage()


@pytest.mark.parametrize("value", ["", None])
def test_environment_variable_empty_or_unset_is_off(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("FERROLOOP_BLOCKING_THRESHOLD", raising=False)
    else:
        monkeypatch.setenv("FERROLOOP_BLOCKING_THRESHOLD", value)
    loop = ferroloop.new_event_loop()
    loop.close()
    assert loop.get_blocking_threshold() is None


def test_environment_variable_with_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("FERROLOOP_BLOCKING_THRESHOLD", "abc")
    with pytest.raises(ValueError, match="FERROLOOP_BLOCKING_THRESHOLD"):
        ferroloop.new_event_loop()


def test_run_with_blocking_threshold(ferroloop_warnings):
    async def main():
        assert asyncio.get_running_loop().get_blocking_threshold() == 0.05
        time.sleep(0.2)  # RUN-SLEEP
        await asyncio.sleep(0.05)
        return "done"

    assert ferroloop.run(main(), blocking_threshold="50ms") == "done"
    warnings = ferroloop_warnings()
    assert warnings, "the stall was not reported"
    assert f"line {line_of('RUN-SLEEP')}, in main" in warnings[0].getMessage()
    assert "by task 'Task-" in warnings[0].getMessage()


def test_run_refuses_a_bad_threshold_without_leaving_a_loop_unclosed():
    coro = asyncio.sleep(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError):
            ferroloop.run(coro, blocking_threshold=0)
        gc.collect()
    coro.close()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


# -- robustness ---------------------------------------------------------------------------


def test_a_raising_callback_does_not_end_the_watchdog(ferro_loop, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    calls = []

    def broken(report):
        calls.append(report.ended)
        raise RuntimeError("broken reporter")

    ferro_loop.set_blocking_threshold(THRESHOLD, broken)
    for _ in range(2):
        ferro_loop.call_soon(time.sleep, 0.25)
        ferro_loop.run_until_complete(asyncio.sleep(0.1))
    wait_until(lambda: len(calls) >= 4)
    assert calls == [False, True, False, True]  # later stalls are still reported
    assert len(unraisable) == 4
    assert all(isinstance(u.exc_value, RuntimeError) for u in unraisable)


def test_close_stops_the_watchdog_thread():
    loop = ferroloop.new_event_loop()
    before = watchdog_tids()
    loop.set_blocking_threshold(THRESHOLD)
    wait_until(lambda: len(watchdog_tids()) == len(before) + 1)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    assert watchdog_tids() == before  # joined by close()
    assert WATCHDOG_THREAD not in [t.name for t in threading.enumerate()]
    with pytest.raises(RuntimeError, match="closed"):
        loop.set_blocking_threshold(THRESHOLD)
    assert watchdog_tids() == before


def test_each_loop_has_its_own_watchdog():
    loops = [ferroloop.new_event_loop() for _ in range(3)]
    recorders = [Recorder() for _ in loops]
    try:
        for loop, recorder in zip(loops, recorders):
            loop.set_blocking_threshold(THRESHOLD, recorder)
        wait_until(lambda: len(watchdog_tids()) == 3)
        loops[1].call_soon(time.sleep, 0.3)
        for loop in loops:
            loop.run_until_complete(asyncio.sleep(0.1))
        assert recorders[1].wait_for(2) == ["blocked", "ended"]
        assert [r.kinds() for r in recorders] == [[], ["blocked", "ended"], []]
        assert recorders[1].reports[0].loop is loops[1]
    finally:
        for loop in loops:
            loop.close()
    assert watchdog_tids() == []


FORKED_CHILD = textwrap.dedent(
    """
    import json, threading

    def watchdogs():
        names = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names.append(comm.read().strip())
        return names.count("ferroloop-watch")

    def stall(seconds):
        time.sleep(seconds)

    def run_a_stall(loop):
        loop.call_soon(stall, 0.3)
        loop.run_until_complete(asyncio.sleep(0.1))
        deadline = time.monotonic() + 5
        while len(reports) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    reports = []
    loop = new_loop()
    loop.set_blocking_threshold(0.1, lambda r: reports.append(
        [os.getpid(), r.ended, r.stack[-1].name if r.stack else None]))
    loop.run_until_complete(asyncio.sleep(0.01))
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            reports.clear()
            run_a_stall(loop)
            started = time.monotonic()
            while watchdogs() != 1 and time.monotonic() - started < 5:
                time.sleep(0.01)
            print(json.dumps({"child": os.getpid(), "reports": reports,
                              "watchdogs": watchdogs(),
                              "threshold": loop.get_blocking_threshold()}))
            loop.close()
            print(json.dumps({"child_after_close": watchdogs()}))
            sys.stdout.flush()
            status = 0
        finally:
            os._exit(status)
    print(json.dumps({"child_status": wait_child(pid, 20)}))
    reports.clear()
    run_a_stall(loop)  # the parent's own detector still works
    print(json.dumps({"parent": os.getpid(), "reports": reports}))
    loop.close()
    """
)


def test_forked_child_gets_reports_of_its_own():
    import json

    lines = [json.loads(line) for line in run_child(FORKED_CHILD, "ferroloop", timeout=60)]
    child, child_closed, status, parent = lines
    assert status == {"child_status": 0}
    assert child["reports"] == [[child["child"], False, "stall"], [child["child"], True, "stall"]]
    assert child["watchdogs"] == 1 and child["threshold"] == THRESHOLD
    assert child_closed == {"child_after_close": 0}
    assert parent["reports"] == [
        [parent["parent"], False, "stall"], [parent["parent"], True, "stall"]
    ]
