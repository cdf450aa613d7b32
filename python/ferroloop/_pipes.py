"""Pipes on ferroloop: the Python side of the Rust pipe transports.

``connect_read_pipe``/``connect_write_pipe`` are asyncio's own (``BaseEventLoop``'s, taken
by name like the networking methods); they call the two factories here, which check the
file type as asyncio does, make the fd non-blocking, and build a Rust transport core
(``crates/ferroloop-py/src/transports/pipe.rs``) with its face. Reads and writes are Rust;
this module runs once per pipe.

Invariants: a pipe transport owns the pipe object and closes it after
``connection_lost``; pipe fds are not entered in ``loop._transports`` (asyncio lets
``add_reader`` take a pipe's fd too); each face is kept weakly in
``loop._pipe_transports`` (``stats()`` counts the open ones).
"""

from __future__ import annotations

import os
import stat
from asyncio import base_events

from ._ferroloop import ReadPipeTransport, WritePipeTransport
from ._transports import wrap_read_pipe, wrap_write_pipe

# asyncio.BaseEventLoop's pipe methods reused unchanged: they call the factories below.
PIPES_FROM_ASYNCIO = ("connect_read_pipe", "connect_write_pipe")


def _pipe_info(pipe, extra):
    info = {"pipe": pipe}
    if extra:
        info.update(extra)
    return info


class PipeMethods:
    """The pipe transport factories of ``ferroloop.Loop`` (a mixin)."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        fd = pipe.fileno()
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(fd, False)
        core = ReadPipeTransport(self, pipe, fd, protocol, _pipe_info(pipe, extra))
        transport = wrap_read_pipe(core)
        self._pipe_transports[id(transport)] = transport
        self._start_pipe_transport(transport, protocol, waiter)
        return transport

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        fd = pipe.fileno()
        mode = os.fstat(fd).st_mode
        is_fifo, is_socket = stat.S_ISFIFO(mode), stat.S_ISSOCK(mode)
        if not (is_fifo or is_socket or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        os.set_blocking(fd, False)
        # A FIFO's or socket's fd turns readable when the read end closes (not a tty's).
        watch_peer_close = is_fifo or is_socket
        core = WritePipeTransport(
            self, pipe, fd, protocol, _pipe_info(pipe, extra), watch_peer_close
        )
        transport = wrap_write_pipe(core)
        self._pipe_transports[id(transport)] = transport
        self._start_pipe_transport(transport, protocol, waiter)
        return transport

    def _start_pipe_transport(self, transport, protocol, waiter):
        """asyncio's order: connection_made, then watching starts, then the waiter."""
        self.call_soon(protocol.connection_made, transport)
        self.call_soon(transport._start_reading)
        if waiter is not None:
            self.call_soon(base_events.futures._set_result_unless_cancelled, waiter, None)


for _name in PIPES_FROM_ASYNCIO:
    setattr(PipeMethods, _name, getattr(base_events.BaseEventLoop, _name))
del _name
