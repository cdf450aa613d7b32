"""``loop.stats()``: a cheap snapshot of what a ferroloop loop has been doing.

The Rust core counts iterations and callbacks and sums the time spent waiting in the
poller (two clock reads per iteration, around the poll); ``Loop.run_forever`` sums the
time spent running. Everything else is read from the queues when ``stats()`` is called.
Safe to call from any thread; the numbers are a snapshot, not a consistent cut.

Keys of the returned dict:

* ``iterations`` — loop iterations run (asyncio's ``_run_once`` calls);
* ``callbacks`` — callbacks and task steps started (fd readiness of native transports
  included);
* ``running_seconds`` — time spent inside ``run_forever``/``run_until_complete``;
* ``polling_seconds`` — of that, time spent waiting for I/O or timers (idle);
* ``busy_seconds`` — the rest: running callbacks and the loop's own work;
* ``ready`` — callbacks queued for the next iteration;
* ``timers``, ``cancelled_timers`` — scheduled timers, and how many of them are cancelled;
* ``watched_fds`` — fds registered with the poller (readers, writers, transports,
  child pidfds, the signal pipe);
* ``transports`` — live socket transports;
* ``signal_handlers`` — signals with a handler;
* ``blocking_threshold`` — the blocking detector's threshold, or ``None``.
"""

from __future__ import annotations

import time
from typing import Any, Dict


class StatsMethods:
    """``stats()`` of ``ferroloop.Loop`` (a mixin)."""

    _run_seconds = 0.0
    _run_started = None  # monotonic time run_forever was entered, while running

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the loop's counters (see the ``ferroloop._stats`` module docs)."""
        iterations, callbacks, polling, ready, timers, cancelled, fds = self._stats_counters()
        running = self._run_seconds
        started = self._run_started
        if started is not None:
            running += time.monotonic() - started
        return {
            "iterations": iterations,
            "callbacks": callbacks,
            "running_seconds": running,
            "polling_seconds": polling,
            "busy_seconds": max(running - polling, 0.0),
            "ready": ready,
            "timers": timers,
            "cancelled_timers": cancelled,
            "watched_fds": fds,
            "transports": len(self._transports),
            "signal_handlers": len(self._signal_handlers),
            "blocking_threshold": self.get_blocking_threshold(),
        }
