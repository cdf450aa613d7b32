"""Fixtures for the differential asyncio / ferroloop test-suite.

Every test that uses one of the loop fixtures below runs twice: once with
stock asyncio (id ``asyncio``) and once with ferroloop (id ``ferroloop``).
If ferroloop cannot be imported the ``ferroloop`` variants ERROR (they are
deliberately not skipped: CI builds the extension before running the tests).

Fixtures
--------
loop_impl      "asyncio" or "ferroloop".
flavor         Namespace describing the implementation under test:
               new_loop(), loop_type, run(), policy_cls, install().
new_loop       Factory returning fresh loops of the implementation under
               test; every loop it made is closed at teardown.
loop           A fresh loop whose exception handler records every call; the
               test FAILS if the handler was called and the test did not
               replace the handler (or drain ``loop_errors``).
loop_errors    The list the ``loop`` fixture's handler records into.
compare        compare(scenario, debug=False): run ``scenario(loop)`` on a
               stock asyncio loop and on a loop under test, assert equal
               results, and return the result.

A test also FAILS if one of its ``looptest_support.stop_after`` safety nets had
to stop a loop (the test's own stop condition was never reached).
"""

from __future__ import annotations

import asyncio
import gc
import pathlib
import types

import pytest

# Loaded as plugins by the monitor and TLS tests (their fixtures assert): rewrite their
# asserts.
pytest.register_assert_rewrite("looptest_monitor", "looptest_tls")

from looptest_support import REFERENCE_LOOP, SAFETY_NETS_FIRED  # noqa: E402

IMPLS = ("asyncio", "ferroloop")
_HERE = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    # Warnings are errors for the tests of this directory (not for the
    # subdirectories, e.g. tests/cpython, which have their own policy).
    for item in items:
        if pathlib.Path(str(getattr(item, "path", item.fspath))).resolve().parent == _HERE:
            item.add_marker(pytest.mark.filterwarnings("error"), append=False)


def _close_quietly(loop):
    if loop.is_closed():
        return
    if loop.is_running():  # pragma: no cover - would be a test bug
        loop.stop()
        return
    loop.close()


class UnexpectedHandlerCalls:
    """Exception handler that records every context it is given."""

    def __init__(self, label):
        self.label = label
        self.calls = []

    def __call__(self, loop, context):
        self.calls.append(dict(context))

    def install(self, loop):
        loop.set_exception_handler(self)
        self.loop = loop
        return self

    def still_installed(self):
        loop = getattr(self, "loop", None)
        if loop is None:
            return False
        try:
            return loop.get_exception_handler() is self
        except Exception:  # a closed/broken loop still reports its calls
            return True

    def verify(self):
        if not self.calls or not self.still_installed():
            return
        lines = [f"[{self.label}] loop exception handler called unexpectedly:"]
        for ctx in self.calls:
            exc = ctx.get("exception")
            lines.append(
                f"  message={ctx.get('message')!r} exception={exc!r} "
                f"keys={sorted(ctx)}"
            )
        self.calls.clear()
        pytest.fail("\n".join(lines), pytrace=False)


def _checkers(item):
    return item.__dict__.setdefault("_loop_error_checkers", [])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # Run the test, then fail it (in the *call* phase, so it is reported as
    # a failure and not as a teardown error) if a loop fixture's exception
    # handler recorded anything the test did not consume, or if a
    # ``stop_after`` safety net had to stop a loop.
    SAFETY_NETS_FIRED.clear()
    res = yield
    gc.collect()  # let pending asyncgen/task finalizers report now
    for checker in _checkers(item):
        checker.verify()
    if SAFETY_NETS_FIRED:
        fired = list(SAFETY_NETS_FIRED)
        SAFETY_NETS_FIRED.clear()
        pytest.fail(
            "the test only ended because a safety net stopped its loop:\n  "
            + "\n  ".join(fired),
            pytrace=False,
        )
    return res


@pytest.fixture(params=IMPLS)
def loop_impl(request):
    return request.param


def _asyncio_flavor():
    def install():
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())

    return types.SimpleNamespace(
        name="asyncio",
        new_loop=REFERENCE_LOOP,
        loop_type=asyncio.BaseEventLoop,
        run=asyncio.run,
        policy_cls=asyncio.DefaultEventLoopPolicy,
        install=install,
    )


def _ferroloop_flavor():
    import ferroloop  # an ImportError here must ERROR the test, not skip it

    return types.SimpleNamespace(
        name="ferroloop",
        new_loop=ferroloop.new_event_loop,
        loop_type=ferroloop.Loop,
        run=ferroloop.run,
        policy_cls=ferroloop.EventLoopPolicy,
        install=ferroloop.install,
    )


@pytest.fixture
def flavor(loop_impl):
    if loop_impl == "asyncio":
        return _asyncio_flavor()
    return _ferroloop_flavor()


@pytest.fixture(autouse=True)
def _restore_asyncio_global_state():
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop(None)
    if asyncio.get_event_loop_policy() is not policy:
        asyncio.set_event_loop_policy(None)
        asyncio.set_event_loop(None)


@pytest.fixture
def new_loop(flavor):
    made = []

    def factory():
        loop = flavor.new_loop()
        made.append(loop)
        return loop

    yield factory
    for loop in made:
        _close_quietly(loop)
    asyncio.set_event_loop(None)


@pytest.fixture
def loop(new_loop, request, loop_impl):
    lp = new_loop()
    checker = UnexpectedHandlerCalls(loop_impl).install(lp)
    _checkers(request.node).append(checker)
    yield lp


@pytest.fixture
def loop_errors(loop, request):
    """Contexts recorded by ``loop``'s checking exception handler.

    A test that expects handler calls inspects this list and clears it.
    """
    for checker in _checkers(request.node):
        if getattr(checker, "loop", None) is loop:
            return checker.calls
    raise AssertionError("loop fixture has no checker")  # pragma: no cover


def _run_scenario(make_loop, label, scenario, debug):
    loop = make_loop()
    try:
        if debug is not None:
            loop.set_debug(debug)
        checker = UnexpectedHandlerCalls(label).install(loop)
        result = scenario(loop)
        gc.collect()
        checker.verify()
        return result
    finally:
        _close_quietly(loop)
        asyncio.set_event_loop(None)


@pytest.fixture
def compare(new_loop, loop_impl):
    """Differential runner: reference asyncio vs. implementation under test."""

    def run(scenario, *, debug=None):
        expected = _run_scenario(REFERENCE_LOOP, "reference asyncio", scenario, debug)
        actual = _run_scenario(new_loop, loop_impl, scenario, debug)
        assert actual == expected, (
            f"{loop_impl} differs from stock asyncio:\n"
            f"  asyncio:   {expected!r}\n  {loop_impl}: {actual!r}"
        )
        return actual

    return run
