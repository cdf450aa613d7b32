"""``ferroloop.Loop``: the Python face of the Rust event loop.

``Loop`` derives from the Rust class ``LoopCore`` (``crates/ferroloop-py``), which owns the
ready queue, the timer heap, the poller and the run loop, and implements the hot methods
(``call_soon``, ``call_later``, ``call_at``, ``call_soon_threadsafe``, ``time``,
``create_future``, ``stop``, ``get_debug``). This module adds what is API shape:

* ``run_forever`` — the bookkeeping around the Rust run loop (running-loop registration,
  asyncgen hooks, coroutine-origin tracking), then ``LoopCore._run_forever_core``.
* ``close``, ``set_debug``, ``add_reader``/``add_writer``/``remove_*`` argument handling.
* Methods taken as they are from the running Python's ``asyncio.BaseEventLoop`` (listed
  in ``_FROM_ASYNCIO``): they are pure logic over the attributes set in ``Loop.__init__``
  and the methods above, so their semantics, errors and messages are asyncio's own on
  every supported Python version, with no copy of their code here.
* Networking (``_net``), pipes (``_pipes``), subprocesses (``_subprocess``) and signal
  handlers (``_signals``) are mixins over the Rust transports, child watching and
  signal wake-up pipe; TLS (``_tls``) is asyncio's ``SSLProtocol`` over the Rust
  stream transport.
* The pitfall tools are mixins too: the blocking detector (``_blocking``), ``stats()``
  (``_stats``) and the monitor socket (``monitor``), which ``close()`` stops.

Invariants: ``_thread_id`` is the id of the thread inside ``run_forever`` and ``None``
otherwise (``is_running`` reads it); ``_default_executor`` is ``None`` or the executor
created lazily by ``run_in_executor``; once ``close()`` returned, every queue in the core
is empty and the core refuses new work with ``RuntimeError('Event loop is closed')``.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import sys
import threading
import time
import weakref
from asyncio import base_events, coroutines, events

from ._blocking import BlockingMethods
from ._ferroloop import LoopCore
from ._net import NetworkMethods
from ._pipes import PipeMethods
from ._signals import SignalMethods
from ._origins import TaskOriginMethods
from ._stats import StatsMethods
from ._subprocess import SubprocessMethods
from ._tls import TLSMethods
from .monitor import MonitorMethods

__all__ = ("Loop",)

_BaseEventLoop = base_events.BaseEventLoop

# asyncio.BaseEventLoop methods reused unchanged (see the module docstring).
_FROM_ASYNCIO = (
    "__del__",
    "__repr__",
    "_asyncgen_finalizer_hook",
    "_asyncgen_firstiter_hook",
    "_check_callback",
    "_check_default_executor",
    "_check_running",
    "_check_thread",
    "_do_shutdown",
    "_getaddrinfo_debug",
    "_set_coroutine_origin_tracking",
    "default_exception_handler",
    "get_exception_handler",
    "get_task_factory",
    "getnameinfo",
    "is_running",
    "run_in_executor",
    "run_until_complete",
    "set_default_executor",
    "set_exception_handler",
    "set_task_factory",
    "shutdown_asyncgens",
    "shutdown_default_executor",
)


# Rust methods that C code (asyncio's Task and Future) looks up on the loop for every
# step. ``PyObject_GetAttr(loop, "call_soon")`` allocates a new bound method each time;
# an instance-dict entry (which wins over a method descriptor) hands out a cached one.
# Measured: sleep(0) ping-pong +7%. ``close()`` removes them again (they reference the
# loop, so they would otherwise keep it in a reference cycle).
_BOUND_ONCE = (
    "call_soon",
    "call_later",
    "call_at",
    "create_future",
    "create_task",
    "get_debug",
    "time",
)


# Every loop not yet garbage, so that a forked child can give each one its own epoll
# instance and eventfd (see LoopCore._after_fork_in_child).
_live_loops: "weakref.WeakSet[Loop]" = weakref.WeakSet()


def _give_loops_own_fds_in_child() -> None:
    for loop in list(_live_loops):
        wakeup_fds = loop._after_fork_in_child()
        if wakeup_fds is not None:
            _move_wakeup_fd(*wakeup_fds)
        loop._restart_blocking_detector_in_child()


def _move_wakeup_fd(old: int, new: int) -> None:
    """Points ``signal.set_wakeup_fd`` at a forked child's own signal pipe, if it was
    at the loop's inherited one (only possible when the fork came from the main thread)."""
    try:
        previous = signal.set_wakeup_fd(new, warn_on_full_buffer=False)  # as _signals sets it
    except ValueError:  # forked from another thread: the wake-up fd cannot be set here
        return
    if previous != old:
        signal.set_wakeup_fd(previous)  # it was not ours: leave it as it was


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_give_loops_own_fds_in_child)


class Loop(
    LoopCore,
    NetworkMethods,
    PipeMethods,
    SubprocessMethods,
    SignalMethods,
    TLSMethods,
    BlockingMethods,
    StatsMethods,
    TaskOriginMethods,
    MonitorMethods,
    asyncio.AbstractEventLoop,
):
    """An asyncio event loop whose run loop, queues, timers and poller are Rust."""

    # Read by asyncio's default_exception_handler. The core sets it around each callback
    # in debug mode only (outside debug mode it would cost a Python write per callback).
    _current_handle = None

    def __init__(self) -> None:
        self._thread_id = None
        self._task_factory = None
        self._exception_handler = None
        self._signal_handlers = {}
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        # Callbacks running longer than this (seconds) are logged in debug mode.
        self.slow_callback_duration = 0.1
        # fd -> the live transport owning it (asyncio's bookkeeping, read by add_reader).
        self._transports = weakref.WeakValueDictionary()
        # id -> pipe / subprocess transport of this loop, while alive (for stats()).
        self._pipe_transports = weakref.WeakValueDictionary()
        self._subprocess_transports = weakref.WeakValueDictionary()
        self._serving = {}  # listening socket's fd -> its asyncio.Server (see _net)
        # Unix server socket -> inode of its path, so closing it removes only our file.
        self._unix_server_sockets = {}
        self.set_debug(coroutines._is_debug_mode())
        for name in _BOUND_ONCE:
            self.__dict__[name] = getattr(self, name)
        _live_loops.add(self)
        self._blocking_from_environment()
        self._callback_timing_from_environment()
        self._task_origins_from_environment()
        self._monitor_from_environment()

    # -- running and stopping ---------------------------------------------------------

    def run_forever(self) -> None:
        """Run until ``stop()`` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        self._apply_task_origins()
        saved_hooks = sys.get_asyncgen_hooks()
        try:
            self._run_started = time.monotonic()
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._run_seconds += time.monotonic() - self._run_started
            self._run_started = None
            self._thread_id = None
            events._set_running_loop(None)
            self._restore_origin_depth()
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*saved_hooks)

    def close(self) -> None:
        """Close the loop: drop pending callbacks, shut the default executor down.

        Idempotent; refuses to close a running loop, like asyncio.
        """
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            base_events.logger.debug("Close %r", self)
        self.stop_monitor()
        self._remove_all_signal_handlers()
        self._close_core()  # stops the blocking detector too
        self._blocking_threshold = None
        for name in _BOUND_ONCE:
            # Leave alone what a user (or a mock) put there in the meantime.
            if getattr(self.__dict__.get(name), "__self__", None) is self:
                del self.__dict__[name]
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def set_debug(self, enabled: bool) -> None:
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, bool(enabled))

    def _log_slow_callback(self, handle, seconds: float) -> None:
        """Debug mode: called by the core after a callback ran for too long."""
        base_events.logger.warning(
            "Executing %s took %.3f seconds", base_events._format_handle(handle), seconds
        )

    # -- file descriptors -----------------------------------------------------------------

    def _fd_without_transport(self, fileobj) -> int:
        fd = selectors._fileobj_to_fd(fileobj)
        self._ensure_fd_no_transport(fd)
        return fd

    def add_reader(self, fd, callback, *args) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable (level-triggered)."""
        self._add_fd_callback(self._fd_without_transport(fd), False, callback, args)

    def add_writer(self, fd, callback, *args) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable (level-triggered)."""
        self._add_fd_callback(self._fd_without_transport(fd), True, callback, args)

    def remove_reader(self, fd) -> bool:
        """Stop watching ``fd`` for reading; return whether it was watched."""
        return self._remove_fd_callback(self._fd_without_transport(fd), False)

    def remove_writer(self, fd) -> bool:
        """Stop watching ``fd`` for writing; return whether it was watched."""
        return self._remove_fd_callback(self._fd_without_transport(fd), True)

    # asyncio's create_task, for the cases the Rust fast path hands over (a task factory
    # is set, or debug mode wants the source traceback trimmed).
    _create_task_general = _BaseEventLoop.create_task

    for _name in _FROM_ASYNCIO:
        locals()[_name] = getattr(_BaseEventLoop, _name)
    del _name
