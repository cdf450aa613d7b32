"""The blocking detector: see a callback that blocks the event loop while it blocks.

``loop.set_blocking_threshold(seconds, callback=None)`` starts the Rust watchdog thread
(``crates/ferroloop-py/src/watchdog.rs``), which samples the loop's callback counter and
polling flag without touching the loop thread. When one callback or task step has run
for ``seconds``, the watchdog takes the GIL and calls ``_Reporter`` here with the handle
the loop thread is running (read from the core); it reads the loop thread's current
Python stack (``sys._current_frames``) and the running task, and
reports a :class:`BlockingReport`: to ``callback`` if one was given (called on the
watchdog thread), else as a warning on the ``ferroloop`` logger. When the loop moves on,
a second report (``ended=True``) gives the stall's total duration.

Also set by ``ferroloop.run(main, blocking_threshold=...)``, by the environment
variable ``FERROLOOP_BLOCKING_THRESHOLD`` (seconds or e.g. ``50ms``, read when a loop is
created; empty or unset: off; a value that is not a positive duration makes creating a
loop raise ``ValueError`` naming the variable), by ``python -m ferroloop run
--blocking-threshold`` (which sets that variable for the program) and, for the loops of
pytest-asyncio tests, by ``pytest --ferroloop --ferroloop-fail-on-blocking=DURATION``.

Timing: the watchdog samples every quarter of the threshold (1 ms to 250 ms), so a stall
is reported between ``threshold`` and ``threshold`` plus one interval after it began; a
stall that lasts less than that may go unreported. ``duration`` of a "blocked" report is
a lower bound of the time blocked so far; the total of an "ended" report is within one
interval of the real stall, either way.

Limit: the stack is read with the GIL. Code that blocks while holding it (a long C call
that never releases it, e.g. ``sum(range(10**9))`` or a regex that backtracks) can be
seen only once it lets go; by then the loop has moved on, so the watchdog reports the
stall as ended only, with no stack and no task, rather than blame the next callback
(``tests/test_blocking.py::test_report_blames_only_code_that_blocked``). Stopping the
detector (``set_blocking_threshold(None)``, ``close()``) during a stall still gives the
stall's "ended" report.

Invariants: one watchdog per loop; ``set_blocking_threshold(None)`` and ``close()`` stop
it (joined); the reporter holds the loop weakly; a report never raises into the watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

logger = logging.getLogger("ferroloop")

ENV_THRESHOLD = "FERROLOOP_BLOCKING_THRESHOLD"


@dataclass(frozen=True)
class BlockingReport:
    """One stall of an event loop, as the blocking detector saw it.

    ``ended`` is False while the loop is still blocked (``duration`` is how long so far)
    and True once it moved on (``duration`` is the total). Durations come from samples
    a quarter of the threshold apart: ``duration`` while blocked is a lower bound, the
    total is within that of the real stall. ``stack`` is the loop thread's Python stack when
    the stall was first reported, innermost frame last; ``task`` is the task whose step
    was running, if any; ``handle`` is what the loop was running: the ``Handle`` or
    ``TimerHandle`` of the callback (a task step's too), or the transport whose I/O
    callback (e.g. ``data_received``) blocks; None when the stall was seen only after it
    ended.
    """

    loop: asyncio.AbstractEventLoop
    ended: bool
    duration: float
    threshold: float
    stack: Tuple[traceback.FrameSummary, ...]
    task: Optional["asyncio.Task[Any]"]
    handle: Optional[object] = None

    def format(self) -> str:
        """The report as the default warning shows it."""
        if self.task is not None:
            owner = f"task {self.task.get_name()!r}"
        elif self.handle is not None:
            owner = f"{self.handle!r}"
        else:
            owner = "a callback"
        if self.ended:
            return (
                f"the event loop was blocked for {self.duration:.3f} s in total by {owner} "
                f"(threshold {self.threshold:.3f} s)"
            )
        where = "".join(traceback.format_list(list(self.stack))).rstrip()
        return (
            f"the event loop has been blocked for {self.duration:.3f} s by {owner} "
            f"(threshold {self.threshold:.3f} s); the loop thread is at (innermost last):\n"
            f"{where}"
        )


class _Reporter:
    """Called by the watchdog thread, with the GIL: ``("blocked" | "unblocked", seconds,
    running)``, ``running`` the entry the loop runs (None for "unblocked")."""

    def __init__(self, loop, threshold: float, callback: Optional[Callable[[BlockingReport], Any]]):
        self._loop_ref = weakref.ref(loop)
        self._threshold = threshold
        self._callback = callback
        self._stall: Optional[BlockingReport] = None

    def __call__(self, event: str, duration: float, running: Optional[object] = None) -> None:
        loop = self._loop_ref()
        if loop is None:
            return
        if event == "blocked":
            frame = sys._current_frames().get(loop._thread_id)
            stack = tuple(traceback.extract_stack(frame)) if frame is not None else ()
            del frame
            task = asyncio.current_task(loop) if loop._thread_id is not None else None
            report = BlockingReport(loop, False, duration, self._threshold, stack, task, running)
            self._stall = report
        else:
            stall = self._stall
            self._stall = None
            stack, task, handle = (
                (stall.stack, stall.task, stall.handle) if stall is not None else ((), None, None)
            )
            report = BlockingReport(loop, True, duration, self._threshold, stack, task, handle)
        if self._callback is not None:
            self._callback(report)
        else:
            logger.warning("%s", report.format())


def parse_threshold(value: Any) -> float:
    """Seconds as a positive float; accepts ``"50ms"``, ``"0.05"``, ``"0.05s"``."""
    text = str(value).strip().lower()
    scale = 1.0
    if text.endswith("ms"):
        text, scale = text[:-2], 1e-3
    elif text.endswith("s"):
        text = text[:-1]
    try:
        seconds = float(text) * scale
    except ValueError:
        raise ValueError(f"not a duration: {value!r} (seconds, or e.g. '50ms')") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"the blocking threshold must be a positive duration, not {value!r}")
    return seconds


class BlockingMethods:
    """``set_blocking_threshold``/``get_blocking_threshold`` of ``ferroloop.Loop``."""

    _blocking_threshold: Optional[float] = None
    _blocking_callback: Optional[Callable[[BlockingReport], Any]] = None

    def set_blocking_threshold(
        self,
        seconds: Optional[float],
        callback: Optional[Callable[[BlockingReport], Any]] = None,
    ) -> None:
        """Report callbacks that block the loop for ``seconds`` or more (``None``: off).

        Reports go to ``callback(report)`` (on the watchdog thread) or, by default, to
        the ``ferroloop`` logger as warnings; see :class:`BlockingReport`.
        """
        if seconds is None:
            self._stop_watchdog()
            self._blocking_threshold = None
            self._blocking_callback = None
            return
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, not {callback!r}")
        threshold = parse_threshold(seconds)
        self._start_watchdog(threshold, _Reporter(self, threshold, callback))
        self._blocking_threshold = threshold
        self._blocking_callback = callback

    def get_blocking_threshold(self) -> Optional[float]:
        """The blocking detector's threshold in seconds, or ``None`` when it is off."""
        return self._blocking_threshold

    def _blocking_from_environment(self) -> None:
        """Called last by ``Loop.__init__``: a bad value refuses to make the loop."""
        value = os.environ.get(ENV_THRESHOLD)
        if not value:
            return
        try:
            threshold = parse_threshold(value)
        except ValueError as exc:
            self.close()  # nobody gets this loop: do not leave it unclosed
            raise ValueError(f"environment variable {ENV_THRESHOLD}: {exc}") from None
        self.set_blocking_threshold(threshold)

    def _restart_blocking_detector_in_child(self) -> None:
        """After ``fork()``: the parent's watchdog thread is not in the child."""
        if self._blocking_threshold is not None:
            self.set_blocking_threshold(self._blocking_threshold, self._blocking_callback)
