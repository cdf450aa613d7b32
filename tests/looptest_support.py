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


def stop_after(loop, seconds):
    """Safety net: stop ``loop`` after ``seconds`` (returns the TimerHandle)."""
    return loop.call_later(seconds, loop.stop)


def wait_until(predicate, timeout=5.0, interval=0.001):
    """Busy-wait (in the calling thread) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


_CHILD_PREAMBLE = """
import asyncio, sys
if sys.argv[1] == "ferroloop":
    import ferroloop
    new_loop = ferroloop.new_event_loop
else:
    new_loop = asyncio.new_event_loop
"""


def run_child(script, loop_impl, timeout=60):
    """Run ``script`` in a fresh interpreter for ``loop_impl`` and return its stdout lines.

    The script finds ``new_loop`` (a loop factory of the implementation under test)
    already defined. Used for what must not touch the pytest process: signals, rlimits.
    The child must exit 0; its stderr is shown otherwise.
    """
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _CHILD_PREAMBLE + script, loop_impl],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()
