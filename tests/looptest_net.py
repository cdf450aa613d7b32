"""Helpers shared by the networking tests (``test_net_*.py``).

Deliberately unusual module name (see ``looptest_support``) so that it cannot clash
with modules of other test directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time

import pytest

TIMEOUT = 10.0
MB = 1024 * 1024


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def spin(seconds=0.03):
    """Let the loop run several iterations (and poll its fds) for a while."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.002)


async def until(predicate, timeout=5.0):
    """Wait until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"condition never became true: {predicate}"
        await asyncio.sleep(0.002)


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    """The stream socket family of a test: "tcp" (loopback) or "unix".

    A fixture: a test module imports it (``from looptest_net import kind``).
    """
    return request.param


def connected_pair(kind, small_buffers=False):
    """Two connected non-blocking stream sockets (TCP over loopback or a Unix pair)."""
    if kind == "tcp":
        lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small_buffers:
            lsn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        with lsn:
            lsn.bind(("127.0.0.1", 0))
            lsn.listen(1)
            a.connect(lsn.getsockname())
            b, _ = lsn.accept()
    else:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if small_buffers:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def read_until_eof(loop, sock, limit=None):
    """All bytes from a raw socket until EOF (or until ``limit`` bytes)."""
    chunks = bytearray()
    while limit is None or len(chunks) < limit:
        data = await loop.sock_recv(sock, 256 * 1024)
        if not data:
            break
        chunks += data
    return bytes(chunks)


class Recorder(asyncio.Protocol):
    """Records every protocol callback."""

    def __init__(self, loop, keep_open=False, pause_in_made=False):
        self.loop = loop
        self.keep_open = keep_open
        self.pause_in_made = pause_in_made
        self.data = bytearray()
        self.eofs = 0
        self.lost_calls = []
        self.pauses = []  # buffer size seen by each pause_writing()
        self.resumes = []  # buffer size seen by each resume_writing()
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        if self.pause_in_made:
            transport.pause_reading()
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data

    def eof_received(self):
        self.eofs += 1
        return self.keep_open

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.pauses.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.resumes.append(self.transport.get_write_buffer_size())


async def wrap(loop, sock, factory):
    transport, protocol = await loop.create_connection(factory, sock=sock)
    await protocol.made
    return transport, protocol


@contextlib.asynccontextmanager
async def recorded_pair(loop, kind, small_buffers=False, **recorder_kwargs):
    """A ``Recorder`` transport over one end of ``connected_pair(kind, small_buffers)``.

    Yields ``(sock, peer, transport, protocol)``: ``sock`` is the socket the transport
    owns, ``peer`` the raw other end, closed on exit. The transport is left as the test
    left it (tests close or abort it themselves and wait for ``protocol.lost``).
    ``recorder_kwargs`` go to ``Recorder`` (``keep_open``, ``pause_in_made``).
    """
    sock, peer = connected_pair(kind, small_buffers)
    with peer:
        transport, protocol = await wrap(loop, sock, lambda: Recorder(loop, **recorder_kwargs))
        yield sock, peer, transport, protocol


def fill_kernel_buffers(transport, chunk=64 * 1024, limit=64 * MB):
    """Write until the transport had to buffer something (the peer does not read)."""
    sent = 0
    while transport.get_write_buffer_size() == 0:
        transport.write(b"f" * chunk)
        sent += chunk
        assert sent < limit, "kernel buffers never filled up"
    return sent


def unix_path(tmp_path, name="s.sock"):
    path = str(tmp_path / name)
    assert len(path) < 100, path  # sun_path limit
    return path


@contextlib.asynccontextmanager
async def served_client(loop, kind="tcp", tmp_path=None, server_protocol=Recorder):
    """A server (loopback TCP, or a Unix socket in ``tmp_path``) and a ``Recorder``
    client connected to it, whose ``connection_made`` has run.

    Each accepted connection gets a ``server_protocol(loop)``; yields ``(address,
    transport, protocol, accepted)``, where ``address`` is the server's and ``accepted``
    lists the server's protocols as they are made. The server is closed on exit.
    """
    accepted = []

    def factory():
        accepted.append(server_protocol(loop))
        return accepted[-1]

    if kind == "tcp":
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        connect, where = loop.create_connection, address
    else:
        address = unix_path(tmp_path)
        server = await loop.create_unix_server(factory, address)
        connect, where = loop.create_unix_connection, (address,)
    async with server:
        transport, protocol = await connect(lambda: Recorder(loop), *where)
        await protocol.made
        yield address, transport, protocol, accepted


async def echo_handler(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


class EchoProtocol(asyncio.Protocol):
    """Echo server with back-pressure: stop reading while the peer does not read."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return None  # close (after the echo is flushed)


class BulkPeer(asyncio.Protocol):
    """Sends ``payload`` (with back-pressure) and hashes what it receives.

    ``complete`` is set once ``expect`` bytes arrived, ``sent`` once the whole payload
    was handed to the transport. With ``half_close`` it then calls ``write_eof()`` and
    keeps its side open when the peer's EOF comes (``eof`` is set); a TLS transport has
    no ``write_eof`` (asyncio's ``SSLProtocol`` cannot half-close), so over TLS the end
    of the data is its expected length.
    """

    def __init__(self, loop, payload, expect, chunk=256 * 1024, half_close=False):
        self.loop = loop
        self.payload = payload
        self.expect = expect
        self.chunk = chunk
        self.half_close = half_close
        self.digest = hashlib.sha256()
        self.received = 0
        self.complete = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.sent = loop.create_future()  # a future from the start: a server's protocol
        self.can_write = None  # exists before its handshake is done
        self.pauses = self.resumes = 0

    def connection_made(self, transport):
        self.transport = transport
        self._sending = asyncio.ensure_future(self._send())

    async def _send(self):
        view = memoryview(self.payload)
        try:
            for start in range(0, len(view), self.chunk):
                self.transport.write(view[start : start + self.chunk])
                if self.can_write is not None and not self.can_write.done():
                    await self.can_write
            if self.half_close:
                self.transport.write_eof()
        except BaseException as exc:
            self.sent.set_exception(exc)
            raise
        self.sent.set_result(len(view))

    def data_received(self, data):
        self.digest.update(data)
        self.received += len(data)
        if self.received >= self.expect and not self.complete.done():
            self.complete.set_result(None)

    def eof_received(self):
        self.eof.set_result(None)
        return self.half_close  # if so, keep our half open until our own send is done

    def pause_writing(self):
        self.pauses += 1
        self.can_write = self.loop.create_future()

    def resume_writing(self):
        self.resumes += 1
        self.can_write.set_result(None)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class LineClient(asyncio.Protocol):
    """Sends ``line`` once connected; ``echoed`` resolves with what came back."""

    def __init__(self, loop, line):
        self.line = line
        self.data = b""
        self.echoed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.line)

    def data_received(self, data):
        self.data += data
        if len(self.data) >= len(self.line) and not self.echoed.done():
            self.echoed.set_result(self.data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)
