"""Subprocesses on ferroloop.

``subprocess_exec``/``subprocess_shell`` (and so ``asyncio.create_subprocess_*``) are
asyncio's own (``BaseEventLoop``'s, taken by name): argument checks and messages are the
running Python's. They call ``_make_subprocess_transport`` here, which builds asyncio's
Unix subprocess transport (``subprocess.Popen`` plus the child's pipes, connected through
``connect_read_pipe``/``connect_write_pipe``, i.e. ferroloop's Rust pipe transports) and
asks the Rust core to report the child's exit: a pidfd watched by the loop, reaped in
Rust (``crates/ferroloop-py/src/process.rs``). No SIGCHLD handler, no thread per child,
no global child watcher, so loops in any thread can spawn. Without pidfds (Linux < 5.3,
a seccomp profile that refuses them, or ``FERROLOOP_CHILD_WATCHER=sigchld``) one
process-wide ``SIGCHLD`` handler and reaper thread in Rust take their place
(``ferroloop._ferroloop.child_watcher()`` says which is in use).

A ``preexec_fn`` runs in the child between ``fork`` and ``exec``, and ``Popen`` waits for
the ``exec``: with one given, ``Popen`` runs in a thread of its own so that a slow
``preexec_fn`` does not stall the loop (asyncio's and uvloop's do); without one, ``Popen``
runs in the loop thread as in asyncio (a plain ``fork``/``exec`` takes about a
millisecond).

Invariants: every spawned child is reaped exactly once (by the core, or by ``Popen``
itself when ``send_signal`` polls it first; then the exit status is taken from
``Popen.returncode``); ``transport._process_exited`` runs once per child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import subprocess
import threading
from asyncio import base_events, unix_events
from asyncio.log import logger

SUBPROCESS_FROM_ASYNCIO = ("subprocess_exec", "subprocess_shell")

# What asyncio reports for a child whose exit status is lost.
_UNKNOWN_RETURNCODE = 255


class _SubprocessTransport(unix_events._UnixSubprocessTransport):
    """asyncio's Unix subprocess transport, optionally over a ``Popen`` made beforehand
    (in the executor, when a ``preexec_fn`` could be slow)."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, _popen=None, **kwargs):
        if _popen is None:
            super()._start(args, shell, stdin, stdout, stderr, bufsize, **kwargs)
        else:
            self._proc = _popen


class SubprocessMethods:
    """The subprocess transport factory of ``ferroloop.Loop`` (a mixin)."""

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        if kwargs.get("preexec_fn") is not None:
            spawn = functools.partial(
                subprocess.Popen, args, shell=shell, stdin=stdin, stdout=stdout,
                stderr=stderr, universal_newlines=False, bufsize=bufsize, **kwargs,
            )  # fmt: skip
            kwargs = {"_popen": await _spawn_in_thread(self, spawn)}
        waiter = self.create_future()
        transport = _SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )
        self._subprocess_transports[id(transport)] = transport  # weakly, for stats()
        self._report_child_exit(transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _report_child_exit(self, transport):
        """Calls ``transport._process_exited(returncode)`` when the child exits."""
        pid = transport.get_pid()

        def exited(pid, returncode):
            if returncode is None:  # reaped elsewhere: Popen.poll() saw it first
                returncode = transport._proc.returncode
            if returncode is None:
                logger.warning(
                    "Unknown child process pid %d, will report returncode 255", pid
                )
                returncode = _UNKNOWN_RETURNCODE
            transport._process_exited(returncode)

        self._watch_child(pid, exited)


async def _spawn_in_thread(loop, spawn):
    """``spawn()`` (a ``Popen``) in a thread of its own. If the caller is cancelled
    meanwhile, the child it still starts is killed and reaped there."""
    done = concurrent.futures.Future()

    def run():
        done.set_running_or_notify_cancel()  # from now on, cancel() cannot undo it
        try:
            done.set_result(spawn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            done.set_exception(exc)

    threading.Thread(target=run, name="ferroloop-spawn", daemon=True).start()
    try:
        return await asyncio.wrap_future(done, loop=loop)
    except BaseException:
        done.add_done_callback(_discard_child)
        raise


def _discard_child(done):
    if done.cancelled() or done.exception() is not None:
        return
    proc = done.result()
    proc.kill()
    proc.wait()


for _name in SUBPROCESS_FROM_ASYNCIO:
    setattr(SubprocessMethods, _name, getattr(base_events.BaseEventLoop, _name))
del _name
