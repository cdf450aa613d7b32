"""pytest plugin: ``pytest --ferroloop`` runs the pytest-asyncio tests on ferroloop loops.

Load it with ``-p ferroloop.pytest_plugin`` (or through the package's ``pytest11`` entry
point once it is registered). It adds two options, ``--ferroloop`` and
``--ferroloop-fail-on-blocking`` (below):

* Without it the plugin does nothing: it registers no hook implementation and no
  fixture, and does not import ferroloop's compiled core.
* With it, every test and async fixture that pytest-asyncio runs gets a
  ``ferroloop.Loop``, whatever its loop scope. How depends on pytest-asyncio's release:

  - 1.4 and later: through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook, the
    supported way there (overriding ``event_loop_policy`` is deprecated since 1.4). The
    hook returns the single factory ``{"ferroloop": ferroloop.new_event_loop}`` (with
    ``--ferroloop-fail-on-blocking``, one that also turns the detector on), so
    test ids do not change (pytest >= 8.4 hides a lone factory's id); it runs first,
    so it wins over a project's own ``pytest_asyncio_loop_factories``, and a test
    marked ``asyncio(loop_factories=[...])`` without ``"ferroloop"`` is skipped by
    pytest-asyncio as "not available".
  - 0.23 to 1.3 (1.2 is the last for Python 3.9): by overriding pytest-asyncio's
    session-scoped ``event_loop_policy`` fixture with ``ferroloop.EventLoopPolicy()``,
    the supported way there.

  The hook's presence, not the version number, decides.

  Older pytest-asyncio (and its absence) is a usage error naming what is needed.
  Tests that make their own loops (``asyncio.run``, ``asyncio.new_event_loop``) are
  left alone.
* The report header says that the tests run on ferroloop.
* Those loops record where tasks are created (``loop.set_task_origins(True)``, see
  ``ferroloop._origins``): a test that leaves a task pending or an exception unread
  gets the creation site in asyncio's report.

``--ferroloop-fail-on-blocking=DURATION`` (``50ms``, ``0.05``; only with ``--ferroloop``,
else a usage error, as is a value that is not a positive duration) turns the blocking
detector on for those loops (``loop.set_blocking_threshold(DURATION, ...)``) and fails
a test whose loop was blocked by one callback or task step for DURATION or longer. The
failure shows each stall: how long it lasted, the task, and the loop thread's stack
where it was seen (innermost last; the frames of pytest and of the loop that runs the
callback are left out). A stall is charged to the test during which it began:

* in the test's body (the test coroutine and what it runs on the loop), the test fails;
* while its async fixtures set up or tear down, the test errors in that phase;
* if the phase failed on its own (a failing assertion, say), the stall is shown as an
  error at the test's teardown;
* before the first test, it is only logged (``ferroloop`` logger).

Stalls are seen by sampling (see ``ferroloop._blocking``): one that lasts just over
DURATION may go unseen, one that lasts a quarter of DURATION longer is caught (unless the
machine is too loaded to run the watchdog thread on time).
A stall seen only after its test ended (possible with a module- or session-scoped loop,
when the test ends within a few milliseconds of the stall) is logged, not charged. A
test that calls ``set_blocking_threshold`` on its loop replaces the plugin's detector
for that loop. Loops the tests make themselves, and sync tests, are not watched.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

_MINIMUM_PYTEST_ASYNCIO = (0, 23)
_NEEDS_PYTEST_ASYNCIO = "--ferroloop needs pytest-asyncio >= 0.23 (pip install pytest-asyncio)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop")
    group.addoption(
        "--ferroloop",
        action="store_true",
        default=False,
        help="run the tests and async fixtures of pytest-asyncio on ferroloop event loops",
    )
    group.addoption(
        "--ferroloop-fail-on-blocking",
        metavar="DURATION",
        default=None,
        help="with --ferroloop: fail a test whose event loop was blocked by one callback "
             "or task step for DURATION or longer (e.g. 50ms or 0.05), showing the "
             "blocking stack",
    )


def pytest_configure(config: pytest.Config) -> None:
    fail_on_blocking = config.getoption("ferroloop_fail_on_blocking")
    if not config.getoption("ferroloop"):
        if fail_on_blocking is not None:
            raise pytest.UsageError("--ferroloop-fail-on-blocking needs --ferroloop")
        return
    version = _pytest_asyncio_version(config)
    if version is None or version < _MINIMUM_PYTEST_ASYNCIO:
        raise pytest.UsageError(_NEEDS_PYTEST_ASYNCIO)
    import ferroloop  # imported only when asked for: a broken build fails only --ferroloop

    new_loop: Callable[[], Any] = _with_task_origins(ferroloop.new_event_loop)
    if fail_on_blocking is not None:
        from ferroloop._blocking import parse_threshold

        try:
            threshold = parse_threshold(fail_on_blocking)
        except ValueError as exc:
            raise pytest.UsageError(f"--ferroloop-fail-on-blocking: {exc}") from None
        guard = _BlockingGuard(threshold)
        config.pluginmanager.register(guard, "ferroloop-fail-on-blocking")
        new_loop = guard.watching(new_loop)
    if hasattr(config.hook, "pytest_asyncio_loop_factories"):
        config.pluginmanager.register(
            _LoopFactoryHook(ferroloop, new_loop), "ferroloop-loop-factory"
        )
    else:
        config.pluginmanager.register(
            _PolicyFixture(ferroloop, new_loop), "ferroloop-event-loop-policy"
        )


def _with_task_origins(new_loop: Callable[[], Any]) -> Callable[[], Any]:
    """A factory of ``new_loop()`` loops that record where tasks are created."""

    def new_loop_with_task_origins() -> Any:
        loop = new_loop()
        loop.set_task_origins(True)
        return loop

    return new_loop_with_task_origins


def _pytest_asyncio_version(config: pytest.Config) -> Optional[tuple]:
    """pytest-asyncio's version as (major, minor), or None if it is not active."""
    plugin = config.pluginmanager.get_plugin("asyncio")
    if plugin is None:
        return None
    from importlib import metadata

    try:
        text = metadata.version("pytest-asyncio")
    except metadata.PackageNotFoundError:
        return None
    numbers: List[int] = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


class _LoopFactoryHook:
    """pytest-asyncio >= 1.4: provide ferroloop's loop factory through its hook."""

    def __init__(self, ferroloop: Any, new_loop: Callable[[], Any]) -> None:
        self._ferroloop = ferroloop
        self._new_loop = new_loop

    @pytest.hookimpl(tryfirst=True)
    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> Dict[str, Any]:
        return {"ferroloop": self._new_loop}

    def pytest_report_header(self, config: pytest.Config) -> str:
        return _header(self._ferroloop, "pytest_asyncio_loop_factories hook")


class _PolicyFixture:
    """pytest-asyncio 0.23 to 1.3: replace its ``event_loop_policy`` fixture."""

    def __init__(self, ferroloop: Any, new_loop: Callable[[], Any]) -> None:
        self._ferroloop = ferroloop
        self._new_loop = new_loop

    @pytest.fixture(scope="session")
    def event_loop_policy(self) -> Any:
        new_loop = self._new_loop

        class Policy(self._ferroloop.EventLoopPolicy):  # type: ignore[name-defined]
            def _loop_factory(self) -> Any:
                return new_loop()

        return Policy()

    def pytest_report_header(self, config: pytest.Config) -> str:
        return _header(self._ferroloop, "event_loop_policy fixture")


def _header(ferroloop: Any, how: str) -> str:
    return f"ferroloop: pytest-asyncio tests run on ferroloop.Loop ({ferroloop.__version__}, {how})"


class _Stall:
    """One stall of a watched loop: its "blocked" report, then its "ended" one."""

    def __init__(self, blocked: Any, nodeid: Optional[str]) -> None:
        self.blocked = blocked
        self.ended: Any = None
        self.nodeid = nodeid

    def describe(self, option: str) -> str:
        report = self.ended if self.ended is not None else self.blocked
        how_long = (
            f"{report.duration:.3f} s" if self.ended is not None
            else f"at least {report.duration:.3f} s"
        )
        task = self.blocked.task
        owner = f"task {task.get_name()!r}" if task is not None else "a callback"
        stack = _callback_frames(self.blocked.stack)
        where = "".join(traceback.format_list(stack)).rstrip() or "  (no Python frame)"
        return (
            f"the event loop was blocked for {how_long} by {owner} ({option}="
            f"{self.blocked.threshold:g} s); the loop thread was at (innermost last):\n"
            f"{where}"
        )


def _callback_frames(stack: Tuple[traceback.FrameSummary, ...]) -> List[Any]:
    """The frames of the blocking callback: those inside the loop's ``run_forever``
    (the whole stack if it has no such frame, or nothing inside it)."""
    loop_module = os.path.join("ferroloop", "_loop.py")
    for index in range(len(stack) - 1, -1, -1):
        frame = stack[index]
        if frame.name == "run_forever" and frame.filename.endswith(loop_module):
            return list(stack[index + 1:]) or list(stack)
    return list(stack)


class _BlockingGuard:
    """``--ferroloop-fail-on-blocking``: watches the loops of pytest-asyncio and fails
    the test during which a stall began (see the module doc)."""

    OPTION = "--ferroloop-fail-on-blocking"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._starts: List[float] = []  # monotonic time at which each test began
        self._nodeids: List[str] = []
        self._unreported: Dict[str, List[_Stall]] = {}
        self._open: Dict[int, _Stall] = {}  # id(loop) -> its stall without "ended" yet
        self._finished: set = set()

    def watching(self, new_loop: Callable[[], Any]) -> Callable[[], Any]:
        """``new_loop`` whose loops have the detector on, reporting to this guard."""

        def new_watched_loop() -> Any:
            loop = new_loop()
            loop.set_blocking_threshold(self.threshold, self._on_report)
            return loop

        return new_watched_loop

    def _on_report(self, report: Any) -> None:
        """The detector's callback, on its watchdog thread (with the GIL)."""
        if report.ended:
            stall = self._open.pop(id(report.loop), None)
            if stall is not None:
                stall.ended = report
            return
        # Charged to the test during which it began (the report may come a little late).
        began = time.monotonic() - report.duration
        index = bisect.bisect_right(self._starts, began) - 1
        nodeid = self._nodeids[index] if index >= 0 else None
        stall = _Stall(report, nodeid)
        self._open[id(report.loop)] = stall
        if nodeid is None or nodeid in self._finished:
            logging.getLogger("ferroloop").warning(
                "%s (not charged to a test: %s)", stall.describe(self.OPTION),
                "before the first test" if nodeid is None else f"{nodeid} had ended",
            )
            return
        self._unreported.setdefault(nodeid, []).append(stall)

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self._starts.append(time.monotonic())
        self._nodeids.append(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self._finished.add(nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._fail_if_blocked(item)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self._fail_if_blocked(item)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        self._fail_if_blocked(item)

    def _fail_if_blocked(self, item: pytest.Item) -> None:
        for key, open_stall in list(self._open.items()):
            if open_stall.blocked.loop.is_closed():
                del self._open[key]  # its end will not come: let the loop go
        stalls = self._unreported.pop(item.nodeid, None)
        if not stalls:
            return
        if any(stall.ended is None for stall in stalls):
            # The watchdog reports an end at its next sample (a quarter of the threshold).
            deadline = time.monotonic() + self.threshold / 2 + 0.05
            while any(s.ended is None for s in stalls) and time.monotonic() < deadline:
                if all(s.blocked.loop.is_closed() for s in stalls if s.ended is None):
                    break  # a closed loop's watchdog has stopped: no end will come
                time.sleep(0.002)
        texts = [stall.describe(self.OPTION) for stall in stalls]
        if len(texts) > 1:
            texts = [f"stall {n} of {len(texts)}: {text}" for n, text in enumerate(texts, 1)]
        pytest.fail("\n\n".join(texts), pytrace=False)
