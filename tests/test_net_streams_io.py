"""Stream transports (TCP and Unix): data in and out.

asyncio streams (``start_server``/``open_connection`` and their Unix twins) echoing
lines and 2 MB, the bytes-like types ``write()``/``writelines()`` accept,
``write_eof()`` half-close and what ``eof_received()``'s answer does, ``BufferedProtocol``
(also switched to with ``set_protocol()``) and ``get_extra_info()``.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``. Flow control is
in ``test_net_streams_flow.py``, ``close()``/``abort()`` in ``test_net_streams_close.py``,
errors in ``test_net_streams_errors.py``. Servers and connecting are in
``test_net_servers.py``, the low-level ``sock_*`` coroutines in ``test_net_sock.py``,
bulk transfers and many connections at once in ``test_net_load.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest

from looptest_dgram import on
from looptest_net import (  # noqa: F401 (kind is a fixture)
    MB,
    Recorder,
    connected_pair,
    echo_handler,
    fill_kernel_buffers,
    kind,
    read_until_eof,
    recorded_pair,
    run,
    served_client,
    spin,
    unix_path,
    until,
)
from looptest_support import outcome

# ------------------------------------------------------------ asyncio streams


async def _streams_roundtrip(reader, writer):
    got = []
    for i in range(20):
        msg = f"line {i}\n".encode()
        writer.write(msg)
        got.append(await reader.readline() == msg)
    big = b"".join(os.urandom(512).hex().encode() + b"\n" for _ in range(2048))  # 2 MB

    async def send_big():
        writer.write(big)
        await writer.drain()

    # Read while writing: the echo server blocks in drain() if nobody reads.
    _, echoed = await asyncio.gather(send_big(), reader.readexactly(len(big)))
    got.append(echoed == big)
    writer.write_eof()
    got.append(await reader.read() == b"")
    writer.close()
    await writer.wait_closed()
    return got


def test_streams_echo_tcp(loop):
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            reader, writer = await asyncio.open_connection(host, port)
            assert writer.get_extra_info("peername") == (host, port)
            return await _streams_roundtrip(reader, writer)

    assert run(loop, main()) == [True] * 22


def test_streams_echo_unix(loop, tmp_path):
    path = unix_path(tmp_path)

    async def main():
        server = await asyncio.start_unix_server(echo_handler, path)
        async with server:
            assert server.sockets[0].getsockname() == path
            reader, writer = await asyncio.open_unix_connection(path)
            assert writer.get_extra_info("peername") == path
            return await _streams_roundtrip(reader, writer)

    assert run(loop, main()) == [True] * 22


# -------------------------------------------------------- write / writelines


def test_empty_write_and_bytes_like_types(loop, kind):
    async def main():
        async with recorded_pair(loop, kind) as (_, b, tr, pr):
            tr.write(b"")
            tr.write(b"a")
            tr.write(bytearray(b"b"))
            tr.write(memoryview(b"xcx")[1:2])
            tr.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
            tr.writelines([])
            tr.close()
            await pr.lost
            return await read_until_eof(loop, b)

    assert run(loop, main()) == b"abcdef"


def test_buffered_writes_arrive_in_order_and_are_let_go(loop, kind):
    # With the kernel's buffers full, large writes wait in the transport's buffer
    # (ferroloop holds an exact `bytes` by reference instead of copying it; anything else
    # is copied): a bytes subclass, a bytearray, slices, writelines; all arrive in order,
    # and once flushed the transport holds no reference to what was written. (A buffer
    # changed after write() returned is not checked: asyncio 3.12+ sends what it holds
    # then, earlier versions and ferroloop what it held at the call.)
    class Subclass(bytes):
        pass

    async def main():
        async with recorded_pair(loop, kind) as (_, b, tr, pr):
            filled = fill_kernel_buffers(tr)
            big = os.urandom(300_000)
            sub = Subclass(os.urandom(50_000))
            mutable = bytearray(os.urandom(40_000))
            before = sys.getrefcount(big), sys.getrefcount(sub)
            tr.write(big)
            tr.write(b"small")
            tr.write(sub)
            tr.write(mutable)
            tr.writelines([big[:10_000], memoryview(big)[10_000:20_000], b"end"])
            waiting = tr.get_write_buffer_size()
            tr.close()
            received = await read_until_eof(loop, b)
            await pr.lost
            after = sys.getrefcount(big), sys.getrefcount(sub)
            return filled, waiting, received, before, after, big, sub, bytes(mutable)

    filled, waiting, received, before, after, big, sub, mutable = run(loop, main())
    expected = big + b"small" + sub + mutable + big[:20_000] + b"end"
    assert received[filled:] == expected
    assert set(received[:filled]) == {ord("f")}
    assert waiting >= len(expected)  # all of it waited behind the filled buffers
    assert after == before


# ---------------------------------------------------------- write_eof / EOF


class HalfCloseServer(Recorder):
    """Keeps the transport open on EOF and answers with what it got, then closes."""

    def eof_received(self):
        super().eof_received()
        self.closing_at_eof = self.transport.is_closing()
        self.loop.call_soon(self._answer)
        return True

    def _answer(self):
        self.still_open = not self.transport.is_closing()
        self.transport.write(b"got:" + bytes(self.data))
        self.transport.close()


def test_write_eof_half_close_keep_open(loop):
    async def main():
        async with served_client(loop, server_protocol=HalfCloseServer) as (_, tr, pr, servers):
            assert tr.can_write_eof() is True
            tr.write(b"hello ")
            tr.writelines([b"wor", bytearray(b"ld")])
            tr.write_eof()
            tr.write_eof()  # no-op
            assert not tr.is_closing()
            err = outcome(tr.write, b"more")
            await pr.lost
            await servers[0].lost
            return err, bytes(pr.data), pr.eofs, pr.lost_calls, servers

    err, data, eofs, lost_calls, servers = run(loop, main())
    assert err == ("raise", RuntimeError, "Cannot call write() after write_eof()")
    assert data == b"got:hello world"
    assert eofs == 1 and lost_calls == [None]
    srv = servers[0]
    assert srv.eofs == 1
    assert srv.closing_at_eof is False and srv.still_open is True
    assert srv.lost_calls == [None]


def test_write_eof_waits_for_pending_data(loop, kind):
    payload = os.urandom(4 * MB)

    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (_, b, tr, pr):
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.write_eof()  # the shutdown waits until the buffer is flushed
            assert not tr.is_closing()
            received = await read_until_eof(loop, b)
            await loop.sock_sendall(b, b"still readable")
            await until(lambda: pr.data == b"still readable")
            b.shutdown(socket.SHUT_WR)
            await pr.lost
            return received == payload, tr.get_write_buffer_size(), pr.eofs, pr.lost_calls

    assert run(loop, main()) == (True, 0, 1, [None])


def test_eof_received_false_closes_transport(loop, kind):
    async def main():
        async with recorded_pair(loop, kind, keep_open=False) as (_, b, tr, pr):
            b.send(b"data")
            b.shutdown(socket.SHUT_WR)
            await pr.lost
            return bytes(pr.data), pr.eofs, pr.lost_calls, tr.is_closing()

    assert run(loop, main()) == (b"data", 1, [None], True)


def test_is_reading_after_keep_open_eof(compare):
    async def main(loop):
        async with recorded_pair(loop, "unix", keep_open=True) as (_, b, tr, pr):
            b.shutdown(socket.SHUT_WR)
            await until(lambda: pr.eofs)
            after_eof = tr.is_reading()
            tr.resume_reading()
            await spin()
            res = (after_eof, pr.eofs, tr.is_closing())
            tr.close()
            await pr.lost
            return res

    assert compare(on(main)) == (True, 1, False)


# ------------------------------------------------------------ BufferedProtocol


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.hints = set()
        self.eofs = 0
        self.lost_calls = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.add(sizehint)
        return memoryview(self.buf)[1:]  # a view into a bigger buffer

    def buffer_updated(self, nbytes):
        assert 0 < nbytes < len(self.buf)
        self.data += self.buf[1 : 1 + nbytes]

    def eof_received(self):
        self.eofs += 1

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        self.lost.set_result(exc)


@pytest.mark.parametrize("size,total", [(8, 10_000), (64 * 1024, 3 * MB)])
def test_buffered_protocol_receives_everything(loop, kind, size, total):
    payload = os.urandom(total)

    async def main():
        a, b = connected_pair(kind)
        tr, pr = await loop.create_connection(lambda: BufferedRecorder(loop, size), sock=a)
        with b:
            b.setblocking(True)
            await loop.run_in_executor(None, b.sendall, payload)
            b.shutdown(socket.SHUT_WR)
            await pr.lost
        return bytes(pr.data) == payload, pr.hints, pr.eofs, pr.lost_calls

    assert run(loop, main()) == (True, {-1}, 1, [None])


def test_set_protocol_switches_to_buffered_protocol(loop, kind):
    async def main():
        async with recorded_pair(loop, kind) as (_, b, tr, first):
            b.send(b"first")
            await until(lambda: first.data == b"first")
            second = BufferedRecorder(loop, 1024)
            tr.set_protocol(second)
            assert tr.get_protocol() is second
            b.send(b"second")
            b.shutdown(socket.SHUT_WR)
            await second.lost
            return bytes(first.data), bytes(second.data), second.eofs, first.lost_calls

    assert run(loop, main()) == (b"first", b"second", 1, [])


# ------------------------------------------------------------------ extra info


def test_get_extra_info(loop, tmp_path, kind):
    async def main():
        async with served_client(loop, kind, tmp_path) as (server_addr, tr, pr, accepted):
            await until(lambda: accepted)
            srv_tr = await accepted[0].made
            sock = tr.get_extra_info("socket")
            res = {
                "peername": tr.get_extra_info("peername") == server_addr,
                "sockname": tr.get_extra_info("sockname") == sock.getsockname(),
                "socket-type": isinstance(sock, asyncio.trsock.TransportSocket),
                "socket-family": sock.family
                == (socket.AF_INET if kind == "tcp" else socket.AF_UNIX),
                "server-peername": srv_tr.get_extra_info("peername")
                == tr.get_extra_info("sockname"),
                "server-sockname": srv_tr.get_extra_info("sockname") == server_addr,
                "unknown": tr.get_extra_info("no-such-key"),
                "unknown-default": tr.get_extra_info("no-such-key", 42),
                "known-with-default": tr.get_extra_info("peername", 42) == server_addr,
            }
            tr.close()
            await pr.lost
            await accepted[0].lost
            return res

    res = run(loop, main())
    assert res == {
        "peername": True,
        "sockname": True,
        "socket-type": True,
        "socket-family": True,
        "server-peername": True,
        "server-sockname": True,
        "unknown": None,
        "unknown-default": 42,
        "known-with-default": True,
    }
