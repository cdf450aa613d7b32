"""Helpers shared by the pipe, subprocess and signal tests (``test_pipes*.py``,
``test_subprocess*.py``, ``test_signals*.py``).

Deliberately unusual module name (see ``looptest_support``) so that it cannot clash
with modules of other test directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import selectors
import socket
import tty
from asyncio import unix_events

from looptest_support import PY

MB = 1024 * 1024

#: The kinds of file a pipe transport accepts: a pipe, a FIFO, a socket, a tty (pty).
PIPE_KINDS = ("pipe", "fifo", "socketpair", "pty")

#: How ``PipeProto`` records a pty's end (``connection_lost(OSError(EIO))``).
EIO = ("OSError", errno.EIO)


def fd_list():
    """The fds this process has open, as a sorted list of numbers."""
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


def make_pipe(kind, tmp_path):
    """``(reader, writer)``: two blocking file objects (or sockets) of one ``kind`` of pipe.

    Bytes written to ``writer`` come out of ``reader`` unchanged (a pty is set to raw
    mode: no echo, no line discipline; ``reader`` is the master, ``writer`` the slave).
    """
    if kind == "pipe":
        r, w = os.pipe()
    elif kind == "fifo":
        path = str(tmp_path / f"fifo{len(os.listdir(tmp_path))}")
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # does not wait for a writer
        w = os.open(path, os.O_WRONLY)  # a reader exists: does not block
        os.set_blocking(r, True)
    elif kind == "socketpair":
        return socket.socketpair()
    elif kind == "pty":
        r, w = os.openpty()
        tty.setraw(w)
    else:  # pragma: no cover - a test bug
        raise ValueError(kind)
    return os.fdopen(r, "rb", buffering=0), os.fdopen(w, "wb", buffering=0)


def raw_write(pipe, data):
    """Blocking write of ``data`` to a pipe object (file object or socket)."""
    if isinstance(pipe, socket.socket):
        pipe.sendall(data)
    else:
        view = memoryview(data)
        while view:
            view = view[os.write(pipe.fileno(), view):]


def raw_read(pipe, n):
    """At most ``n`` bytes from a non-blocking pipe object; ``None`` when none are ready."""
    try:
        if isinstance(pipe, socket.socket):
            return pipe.recv(n)
        return os.read(pipe.fileno(), n)
    except BlockingIOError:
        return None


def close_quietly(*pipes):
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.close()


def exc_key(exc):
    """A comparable description of an exception (or ``None``)."""
    if exc is None:
        return None
    return (type(exc).__name__, getattr(exc, "errno", None))


class PipeProto(asyncio.Protocol):
    """Records every callback of a pipe transport, in order.

    ``events``: ``"made"``, ``"data"`` (consecutive data callbacks collapsed into one),
    ``"eof"``, ``("lost", exc_key)``, ``("pause", size)``, ``("resume", size)``.
    """

    def __init__(self, loop, eof_answer=None):
        self.loop = loop
        self.eof_answer = eof_answer
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.lost_exc = None
        self.lost = loop.create_future()
        self.can_write = loop.create_future()
        self.can_write.set_result(None)

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert type(data) is bytes, type(data)
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")
        return self.eof_answer

    def connection_lost(self, exc):
        self.lost_exc = exc
        self.events.append(("lost", exc_key(exc)))
        assert not self.lost.done(), "connection_lost called twice"
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append(("pause", self.transport.get_write_buffer_size()))
        self.can_write = self.loop.create_future()

    def resume_writing(self):
        self.events.append(("resume", self.transport.get_write_buffer_size()))
        if not self.can_write.done():
            self.can_write.set_result(None)


async def connect_read(loop, pipe, **kw):
    transport, proto = await loop.connect_read_pipe(lambda: PipeProto(loop, **kw), pipe)
    return transport, proto


async def connect_write(loop, pipe):
    transport, proto = await loop.connect_write_pipe(lambda: PipeProto(loop), pipe)
    return transport, proto


def blob(n, seed=b"ferroloop"):
    """``n`` deterministic bytes that do not repeat within 32 bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


@contextlib.contextmanager
def asyncio_log_records():
    """The records logged to the ``asyncio`` logger inside the block, as ``(level, msg)``."""
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))

    logger = logging.getLogger("asyncio")
    handler = Collect(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def child_status(pid):
    """What the kernel says about a child this process started, without reaping it.

    ``"reaped"``: nobody is left to wait for; ``"running"``; ``"zombie"``: it exited and
    nobody reaped it (``reap_leftover`` cleans it up after the check).
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "reaped"
    return "running" if info is None else "zombie"


def reap_leftover(pid):
    """Reap a zombie or kill-and-reap a running child that a failed check left behind."""
    status = child_status(pid)
    if status == "running":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    if status != "reaped":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


# ------------------------------------------------------------------ pipe helpers


def is_reading(transport):
    """``transport.is_reading()``, for a read pipe transport of either loop.

    asyncio's pipe transports have ``is_reading()`` only since 3.11: on 3.9 and 3.10
    ``_UnixReadPipeTransport`` inherits ``ReadTransport.is_reading()``, which raises
    ``NotImplementedError``. There the reference's answer is read from what that
    method reports since 3.11: whether the loop watches the pipe for reading (what the
    transport's repr shows as ``polling`` / ``idle``; its loop is ``None`` once
    ``connection_lost()`` ran).
    """
    if PY >= (3, 11) or not isinstance(transport, unix_events._UnixReadPipeTransport):
        return transport.is_reading()
    loop = transport._loop
    if loop is None:
        return False
    key = loop._selector.get_map().get(transport._fileno)
    return key is not None and bool(key.events & selectors.EVENT_READ)


def is_closed(pipe):
    if isinstance(pipe, socket.socket):
        return pipe.fileno() == -1
    return pipe.closed


async def read_all(pipe, limit=None, pace=0.0):
    """Everything readable from a raw (non-blocking) pipe object until end of file.

    ``pace``: sleep between reads (a slow reader). A pty master's ``EIO`` is its end.
    """
    got = bytearray()
    while limit is None or len(got) < limit:
        try:
            chunk = raw_read(pipe, 64 * 1024)
        except OSError as exc:
            assert exc.errno == errno.EIO, exc
            break
        if chunk == b"":
            break
        if chunk is None:
            await asyncio.sleep(0.001)
            continue
        got += chunk
        if pace:
            await asyncio.sleep(pace)
    return bytes(got)


def fill_pipe(transport, chunk=64 * 1024):
    """Write until the transport buffers something (the reader does not read)."""
    sent = 0
    while transport.get_write_buffer_size() == 0:
        transport.write(blob(chunk, seed=b"%d" % sent))
        sent += chunk
        assert sent < 64 * MB, "the pipe never filled up"
    return sent


def expected_fill(sent, chunk=64 * 1024):
    return b"".join(blob(chunk, seed=b"%d" % i) for i in range(0, sent, chunk))


def on_loop(main):
    """A ``compare`` scenario running the coroutine function ``main(loop)``."""
    from looptest_net import run

    return lambda loop: run(loop, main(loop))
