"""ferroloop: a drop-in asyncio event loop whose engine is written in Rust.

Use it like uvloop::

    import ferroloop
    ferroloop.run(main())                      # like asyncio.run(main())

    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        runner.run(main())

    ferroloop.install()                        # every new loop is a ferroloop.Loop

    ferroloop.dump_tasks()                     # print the pending tasks as a tree

    loop.start_monitor("/run/app/loop.sock")   # then: python -m ferroloop ps/top PATH
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Coroutine, Optional, TypeVar

from ._ferroloop import Handle, TimerHandle
from ._loop import Loop
from ._blocking import BlockingReport, parse_threshold
from .observe import dump_tasks, task_tree

__all__ = (
    "BlockingReport",
    "EventLoopPolicy",
    "Handle",
    "Loop",
    "TimerHandle",
    "dump_tasks",
    "install",
    "new_event_loop",
    "run",
    "task_tree",
)
__version__ = "0.1.0"

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are ``ferroloop.Loop``."""

    def _loop_factory(self) -> Loop:  # type: ignore[override]
        return Loop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def install() -> None:
    """Make ferroloop the loop of ``asyncio.run()`` and ``asyncio.new_event_loop()``."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: Optional[bool] = None,
    blocking_threshold: Optional[float] = None,
) -> _T:
    """Run ``main`` on a new ferroloop loop and return its result, like ``asyncio.run``.

    ``blocking_threshold`` (seconds, or e.g. ``"50ms"``) turns the blocking detector on
    (``Loop.set_blocking_threshold``).
    """
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    if blocking_threshold is not None:
        blocking_threshold = parse_threshold(blocking_threshold)  # refuse before any loop

    def loop_factory() -> Loop:
        loop = new_event_loop()
        if blocking_threshold is not None:
            loop.set_blocking_threshold(blocking_threshold)
        return loop

    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(main)
    return _run_legacy(main, debug, loop_factory)


def _run_legacy(main: Coroutine[Any, Any, _T], debug: Optional[bool], loop_factory) -> _T:
    """``asyncio.run`` for Python < 3.11, which has no ``Runner(loop_factory=...)``."""
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for task in pending:
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler(
                        {
                            "message": "unhandled exception during ferroloop.run() shutdown",
                            "exception": task.exception(),
                            "task": task,
                        }
                    )
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
