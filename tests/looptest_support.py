"""Plain helpers shared by the differential test-suite in ``tests/``.

Every test in this directory runs once per *loop implementation* (the
``loop_impl`` fixture in ``conftest.py``): stock asyncio and ferroloop.
Stock asyncio's ``SelectorEventLoop`` is the reference: most tests run a
*scenario* (a function ``scenario(loop) -> observable result``) on a fresh
reference loop and on a fresh loop of the implementation under test, and
assert that both produce exactly the same observable result.

The module name is deliberately unusual so that it cannot clash with
modules of other test directories when pytest puts ``tests/`` on sys.path.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
import warnings

PY = sys.version_info

#: Stock asyncio loop used as the reference implementation.
REFERENCE_LOOP = asyncio.SelectorEventLoop


def outcome(fn, *args, **kwargs):
    """Call ``fn`` and describe what happened in a comparable way.

    Returns ``("ok", result)`` or ``("raise", exception type, str(exc))``.
    Warnings raised while calling are recorded and appended as a sorted
    tuple of ``(category, message)`` when there are any, so that a
    DeprecationWarning emitted by one implementation but not the other is
    visible in the comparison.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - we describe everything
            res = ("raise", type(exc), str(exc))
    caught = [w for w in caught if not issubclass(w.category, ResourceWarning)]
    if caught:
        res = res + (tuple(sorted((w.category.__name__, str(w.message)) for w in caught)),)
    return res


def callback_text(name, args_text, debug=False):
    """How asyncio renders ``name(args)`` in handle reprs and messages.

    Since 3.13 the arguments are only shown in debug mode (they may be
    secrets); earlier versions always show them.
    """
    if PY >= (3, 13) and not debug:
        return f"{name}()"
    return f"{name}({args_text})"


def exc_info_tuple(exc):
    """``(type, str)`` of an exception, or ``None``."""
    if exc is None:
        return None
    return (type(exc), str(exc))


_NUM = re.compile(r"\d+\.\d+")
_ADDR = re.compile(r"0x[0-9a-fA-F]+")


def normalize_text(text):
    """Blank out floats and addresses, which legitimately vary between runs."""
    return _ADDR.sub("0x?", _NUM.sub("N.N", text))


def run_in_thread(fn, *args):
    """Start a daemon thread running ``fn(*args)`` and return it."""
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


#: Descriptions of the safety nets (see ``stop_after``) that fired during the
#: current test; ``conftest.py`` fails the test when this is not empty.
SAFETY_NETS_FIRED = []


def stop_after(loop, seconds):
    """Safety net: stop ``loop`` after ``seconds`` so that a broken test cannot hang.

    Returns the TimerHandle. A safety net that fires means the test's own stop
    condition was never reached: it is recorded in ``SAFETY_NETS_FIRED`` and the
    test FAILS (checked after every test by ``conftest.py``; ``run_briefly``-style
    helpers may also call ``assert_no_safety_net_fired`` right away).
    """

    def fire():
        SAFETY_NETS_FIRED.append(f"safety net fired: {loop!r} stopped after {seconds}s")
        loop.stop()

    return loop.call_later(seconds, fire)


def assert_no_safety_net_fired():
    """Fail now (instead of after the test) if a ``stop_after`` safety net fired."""
    if SAFETY_NETS_FIRED:
        fired = list(SAFETY_NETS_FIRED)
        SAFETY_NETS_FIRED.clear()
        raise AssertionError("; ".join(fired))


def run_briefly(loop, seconds=5.0):
    """run_forever until a callback calls loop.stop(); FAIL if the safety net has to."""
    guard = stop_after(loop, seconds)
    loop.run_forever()
    guard.cancel()
    assert_no_safety_net_fired()


def wait_until(predicate, timeout=5.0, interval=0.001):
    """Busy-wait (in the calling thread) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


# Started from a background job, the test run (and so a child) inherits SIGINT ignored,
# which Python keeps: Ctrl-C cases would hang. Child scripts start with this to restore
# what a terminal gives.
RESTORE_SIGINT = """
import signal
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
"""

_CHILD_PREAMBLE = RESTORE_SIGINT + """
import asyncio, os, signal, sys, time
if sys.argv[1] == "ferroloop":
    import ferroloop
    new_loop = ferroloop.new_event_loop
else:
    new_loop = asyncio.new_event_loop


def wait_child(pid, timeout=20.0):
    # Exit code of the forked child ``pid``; kill it and return "timeout" if it has
    # not exited after ``timeout`` seconds (a deadlocked child fails, never hangs).
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.005)
"""


def run_child(script, loop_impl, timeout=60, with_stderr=False):
    """Run ``script`` in a fresh interpreter for ``loop_impl`` and return its stdout lines
    (with ``with_stderr=True``: the lines and the child's whole stderr, as a pair).

    The script finds ``new_loop`` (a loop factory of the implementation under test)
    and ``wait_child(pid, timeout)`` (waitpid with a deadline, for scripts that fork)
    already defined, and ``asyncio``, ``os``, ``signal``, ``sys``, ``time`` imported.
    Used for what must not touch the pytest process: signals, rlimits, fork.
    The child must exit 0; its stderr is shown otherwise. It runs in its own
    session: on timeout the whole process group (grandchildren made by fork too)
    is killed and the test fails instead of hanging.
    """
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_PREAMBLE + script, loop_impl],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers, e.g. a hung forked child
        except (ProcessLookupError, PermissionError):
            pass
    if timed_out:
        out, err = proc.communicate()
        raise AssertionError(
            f"child interpreter ({loop_impl}) did not finish within {timeout}s "
            f"(deadlock?)\nstdout:\n{out}\nstderr:\n{err}"
        )
    assert proc.returncode == 0, out + err
    if with_stderr:
        return out.splitlines(), err
    return out.splitlines()


#: For ``run_child`` scripts that fork (prepend it to the script): ``new_loop_works()``
#: checks, in a forked child, that a brand-new loop runs a timer and a
#: call_soon_threadsafe made from a new thread; ``fork_and_check(timeout)`` forks a
#: child that runs it and always leaves with os._exit, and returns the child's exit
#: code (0: the new loop works) or "timeout" (the child hung and was killed).
FORK_HELPERS = """
import threading, traceback


def new_loop_works():
    loop = new_loop()
    try:
        async def main():
            t0 = loop.time()
            await asyncio.sleep(0.01)
            slept = loop.time() - t0 >= 0.01
            fut = loop.create_future()
            thread = threading.Thread(
                target=loop.call_soon_threadsafe, args=(fut.set_result, "threadsafe")
            )
            thread.start()
            got = await asyncio.wait_for(fut, 10)
            thread.join()
            return slept and got == "threadsafe"

        return loop.run_until_complete(main())
    finally:
        loop.close()


def child_checks_new_loop():
    # Body of a forked child: never returns.
    status = 3
    try:
        status = 0 if new_loop_works() else 4
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def fork_and_check(timeout=10.0):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child_checks_new_loop()
    return wait_child(pid, timeout)
"""


def open_fd_count():
    """How many fds this process has open (Linux: the entries of ``/proc/self/fd``)."""
    return len(os.listdir("/proc/self/fd"))
