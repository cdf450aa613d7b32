"""Signal handlers on ferroloop (``add_signal_handler``/``remove_signal_handler``).

As in asyncio's Unix loop: a handler is a ``Handle`` kept in ``loop._signal_handlers``;
Python's own signal machinery catches the signal (``signal.signal`` with a no-op Python
handler) and its C-level handler writes the signal number to the wake-up fd
(``signal.set_wakeup_fd``). That fd is the write end of a pipe owned by the Rust core,
which watches the read end and calls ``_handle_signal(signum)`` for each signal number,
in order: the handler is queued as a loop callback and runs in the context it was added
in. Handlers installed with ``signal.signal`` by other code keep working beside these.

Bursts: the pipe holds 64 KiB of pending signal numbers, so each signal gets its own
handler call as long as fewer arrive while the loop cannot read (asyncio's self-socket
holds a few hundred, so it coalesces bursts). Beyond that the C handler's write fails
and that signal's byte is dropped; the wake-up fd is set with
``warn_on_full_buffer=False`` so that nothing is printed (else CPython prints
"Exception ignored when trying to write to the signal wakeup fd" per dropped byte).
Every signal number with a byte in the pipe is still handled; one whose bytes all came
while the pipe was full is not (as in asyncio).

Checks and messages are asyncio's: main thread only (``set_wakeup_fd``'s ``ValueError``
becomes ``RuntimeError``), valid signal numbers, coroutine callbacks refused, SIGKILL and
SIGSTOP refused ("cannot be caught").

Invariants: ``_signal_handlers`` maps each signal with a handler of this loop to its
Handle; while it is non-empty the process's wake-up fd is this loop's pipe (the last loop
that added a handler wins, as in asyncio); ``close()`` removes every handler.
"""

from __future__ import annotations

import errno
import signal
import sys
import warnings
from asyncio import coroutines, events
from asyncio.log import logger


def _sighandler_noop(signum, frame):
    """Python-level handler: the work happens through the wake-up fd."""


class SignalMethods:
    """``add_signal_handler``/``remove_signal_handler`` of ``ferroloop.Loop`` (a mixin)."""

    def add_signal_handler(self, sig, callback, *args):
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # set_wakeup_fd() raises ValueError outside the main thread of the main
            # interpreter.
            signal.set_wakeup_fd(self._signal_wakeup_fd(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            signal.signal(sig, _sighandler_noop)
            # SA_RESTART: fewer EINTRs in other code while handlers are installed.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers:
            self._clear_wakeup_fd()
        return True

    def _handle_signal(self, sig):
        """Called by the core for each caught signal number."""
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # not ours (another handler, or already removed)
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self.call_soon(handle._run)  # the Handle runs in the context it was added in

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _clear_wakeup_fd(self):
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    def _remove_all_signal_handlers(self):
        """At ``close()``: as asyncio, unless the interpreter is shutting down."""
        if not self._signal_handlers:
            return
        if sys.is_finalizing():
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, skipping "
                "signal handlers removal",
                ResourceWarning,
                source=self,
            )
            self._signal_handlers.clear()
            return
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
