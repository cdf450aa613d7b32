"""``loop.stats()``: a cheap snapshot of what a ferroloop loop has been doing.

The Rust core counts iterations and callbacks and sums the time spent waiting in the
poller (two clock reads per iteration, around the poll); ``Loop.run_forever`` sums the
time spent running; how late each timer fired is recorded for free (the core reads the
clock to find due timers anyway). Everything else is read from the queues when
``stats()`` is called. Safe to call from any thread; the numbers are a snapshot, not a
consistent cut.

Per-callback timing (the slowest recent callbacks, the busiest tasks) costs two clock
reads per callback, so it is off unless asked for: ``loop.set_callback_timing(True)``,
the environment variable ``FERROLOOP_CALLBACK_TIMING=1`` (read when a loop is created),
or a running monitor (``ferroloop.monitor``).

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
  child pidfds, the signal pipe), an fd with both a reader and a writer once;
* ``readers``, ``writers`` — ``add_reader``/``add_writer`` callbacks, the loop's own
  among them: a server's listening sockets (its accept loop) and pending ``sock_*``
  calls; not transports, child pidfds or the signal pipe;
* ``transports`` — live socket transports (stream and datagram; not pipes);
* ``pipe_transports`` — open pipe transports (``connect_read_pipe``/``connect_write_pipe``,
  a subprocess's stdin/stdout/stderr pipes included), i.e. not closed or closing;
* ``subprocess_transports`` — subprocess transports whose child's exit the loop has not
  seen yet;
* ``servers``, ``listening_sockets`` — servers serving (``create_server`` and the
  like), and their listening sockets;
* ``signal_handlers`` — signals with a handler;
* ``blocking_threshold`` — the blocking detector's threshold, or ``None``;
* ``timer_lag`` — how late the last 1024 timers fired, in seconds: ``{"timers": n,
  "p50": s, "p99": s, "max": s}`` (``None`` values before any timer fired);
* ``callback_timing`` — whether per-callback timing is on; when it is:
* ``slowest_callbacks`` — the 10 slowest callbacks of the last 60 s, slowest first:
  ``{"seconds", "ago", "handle", "task"}`` (``handle`` is the handle's repr, ``task``
  the repr of the task it was a step of, or ``None``), else ``None``;
* ``busiest_tasks`` — the 10 live tasks that ran longest since timing was turned on:
  ``{"task" (its name), "seconds", "steps", "done"}``, else ``None``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict

ENV_CALLBACK_TIMING = "FERROLOOP_CALLBACK_TIMING"


def _count(transports, predicate) -> int:
    """How many live transports of a ``WeakValueDictionary`` satisfy ``predicate``.
    ``valuerefs()`` copies the references in one C call, so another thread adding
    or losing a transport meanwhile does not break the iteration."""
    count = 0
    for ref in transports.valuerefs():
        transport = ref()
        if transport is not None and predicate(transport):
            count += 1
    return count


def _is_open(transport) -> bool:
    return not transport.is_closing()


def _child_running(transport) -> bool:
    return transport.get_returncode() is None


class StatsMethods:
    """``stats()`` of ``ferroloop.Loop`` (a mixin)."""

    _run_seconds = 0.0
    _run_started = None  # monotonic time run_forever was entered, while running

    def stats(self) -> Dict[str, Any]:
        """A snapshot of the loop's counters (see the ``ferroloop._stats`` module docs)."""
        (iterations, callbacks, polling, ready, timers, cancelled, fds, readers,
         writers) = self._stats_counters()
        timer_lag, slowest, busiest = self._stats_timing()
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
            "readers": readers,
            "writers": writers,
            "transports": len(self._transports),
            "pipe_transports": _count(self._pipe_transports, _is_open),
            "subprocess_transports": _count(self._subprocess_transports, _child_running),
            "servers": len({id(server) for server in list(self._serving.values())}),
            "listening_sockets": len(self._serving),
            "signal_handlers": len(self._signal_handlers),
            "blocking_threshold": self.get_blocking_threshold(),
            "timer_lag": timer_lag,
            "callback_timing": self._callback_timing,
            "slowest_callbacks": slowest,
            "busiest_tasks": busiest,
        }

    def set_callback_timing(self, enabled: bool) -> None:
        """Times every callback for ``stats()``' ``slowest_callbacks`` and
        ``busiest_tasks`` (two clock reads per callback); ``False`` turns it off and
        forgets what was measured."""
        self._set_callback_timing(bool(enabled))

    def _callback_timing_from_environment(self) -> None:
        if os.environ.get(ENV_CALLBACK_TIMING, "") not in ("", "0"):
            self._set_callback_timing(True)
