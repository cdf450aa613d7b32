"""Stream transports (TCP and Unix) and asyncio streams.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``.
Servers and connecting are in ``test_net_servers.py``, the low-level ``sock_*``
coroutines in ``test_net_sock.py``, bulk transfers and many connections at once in
``test_net_load.py``.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import struct
import sys

import pytest

from looptest_net import (
    MB,
    Recorder,
    connected_pair,
    echo_handler,
    fill_kernel_buffers,
    read_until_eof,
    run,
    spin,
    unix_path,
    until,
    wrap,
)
from looptest_support import outcome

HIGH, LOW = 64 * 1024, 16 * 1024


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


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


# ------------------------------------------------------------- close / abort


def test_close_flushes_pending_writes(loop, kind):
    payload = os.urandom(4 * MB)

    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.close()
            assert tr.is_closing()
            tr.close()  # idempotent
            await spin()
            assert pr.lost_calls == []  # still flushing: the peer does not read yet
            received = await read_until_eof(loop, b)
            await pr.lost
            await spin(0.01)
            return received, pr.lost_calls, tr.is_closing(), tr.get_write_buffer_size(), a.fileno()

    received, lost_calls, closing, size, fileno = run(loop, main())
    assert received == payload
    assert lost_calls == [None]
    assert closing
    assert size == 0
    assert fileno == -1  # the transport closed its socket


def test_close_without_pending_data(loop, kind):
    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.write(b"bye")
            tr.close()
            assert pr.lost_calls == []  # connection_lost is never called synchronously
            await pr.lost
            return await read_until_eof(loop, b), pr.lost_calls, pr.eofs

    assert run(loop, main()) == (b"bye", [None], 0)


def test_abort_drops_pending_writes(loop, kind):
    payload = os.urandom(8 * MB)

    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            assert pr.lost_calls == []
            tr.abort()
            tr.close()
            await pr.lost
            try:
                received = await read_until_eof(loop, b)
            except ConnectionResetError:  # pragma: no cover - depends on the kernel
                received = b""
            await spin(0.01)
            return received, pr.lost_calls, tr.is_closing(), a.fileno()

    received, lost_calls, closing, fileno = run(loop, main())
    assert len(received) < len(payload)
    assert received == payload[: len(received)]
    assert lost_calls == [None]
    assert closing
    assert fileno == -1


def test_abort_after_close_drops_what_close_was_flushing(loop, kind):
    payload = os.urandom(8 * MB)

    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.write(payload)
            tr.close()
            await spin(0.01)
            assert pr.lost_calls == [] and tr.get_write_buffer_size() > 0
            tr.abort()
            assert tr.get_write_buffer_size() == 0
            await pr.lost
            try:
                received = await read_until_eof(loop, b)
            except ConnectionResetError:  # pragma: no cover - depends on the kernel
                received = b""
            await spin(0.01)
            return len(received) < len(payload), pr.lost_calls, tr.is_closing()

    assert run(loop, main()) == (True, [None], True)


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
    servers = []

    def factory():
        servers.append(HalfCloseServer(loop))
        return servers[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        async with server:
            tr, pr = await loop.create_connection(
                lambda: Recorder(loop), *server.sockets[0].getsockname()
            )
            await pr.made
            assert tr.can_write_eof() is True
            tr.write(b"hello ")
            tr.writelines([b"wor", bytearray(b"ld")])
            tr.write_eof()
            tr.write_eof()  # no-op
            assert not tr.is_closing()
            err = outcome(tr.write, b"more")
            await pr.lost
            await servers[0].lost
            return err, bytes(pr.data), pr.eofs, pr.lost_calls

    err, data, eofs, lost_calls = run(loop, main())
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
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
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
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop, keep_open=False))
            b.send(b"data")
            b.shutdown(socket.SHUT_WR)
            await pr.lost
            return bytes(pr.data), pr.eofs, pr.lost_calls, tr.is_closing()

    assert run(loop, main()) == (b"data", 1, [None], True)


def test_is_reading_after_keep_open_eof(compare):

    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            with b:
                tr, pr = await wrap(loop, a, lambda: Recorder(loop, keep_open=True))
                b.shutdown(socket.SHUT_WR)
                await until(lambda: pr.eofs)
                after_eof = tr.is_reading()
                tr.resume_reading()
                await spin()
                res = (after_eof, pr.eofs, tr.is_closing())
                tr.close()
                await pr.lost
                return res

        return run(loop, main())

    assert compare(scenario) == (True, 1, False)


# ------------------------------------------------------- pause/resume reading


def test_pause_resume_reading(loop, kind, loop_impl):
    if loop_impl == "asyncio" and sys.version_info < (3, 10):
        pytest.skip(
            "asyncio 3.9 undoes a pause_reading() made in connection_made: its transport "
            "starts reading from a callback scheduled after connection_made (fixed in 3.10)"
        )

    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop, pause_in_made=True))
            states = [tr.is_reading()]
            b.send(b"abc")
            await spin()
            states.append(bytes(pr.data))
            tr.pause_reading()  # already paused: no-op
            tr.resume_reading()
            states.append(tr.is_reading())
            await until(lambda: pr.data == b"abc")
            tr.pause_reading()
            states.append(tr.is_reading())
            b.send(b"def")
            await spin()
            states.append(bytes(pr.data))
            tr.resume_reading()
            tr.resume_reading()  # already reading: no-op
            await until(lambda: pr.data == b"abcdef")
            tr.close()
            states.append(tr.is_reading())
            tr.resume_reading()  # closing: no-op
            states.append(tr.is_reading())
            tr.pause_reading()
            await pr.lost
            return states

    assert run(loop, main()) == [False, b"", True, False, b"abc", False, False]


# --------------------------------------------------------------- flow control


def test_write_buffer_limits_values(compare):
    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            with b:
                tr, pr = await wrap(loop, a, lambda: Recorder(loop))
                res = [tr.get_write_buffer_limits()]
                for kwargs in (
                    {"high": 100, "low": 10},
                    {"low": 8},
                    {"high": 40},
                    {},
                    {"high": 0, "low": 0},
                    {"high": 10, "low": 20},
                    {"low": -1},
                    {"high": 5, "low": 6},
                ):
                    res.append((kwargs, outcome(tr.set_write_buffer_limits, **kwargs)))
                    res.append(tr.get_write_buffer_limits())
                tr.close()
                await pr.lost
                return res

        return run(loop, main())

    res = compare(scenario)
    assert res[0] == (LOW, HIGH)
    results = {str(res[i][0]): (res[i][1], res[i + 1]) for i in range(1, len(res), 2)}
    assert results[str({"high": 100, "low": 10})] == (("ok", None), (10, 100))
    assert results[str({"low": 8})] == (("ok", None), (8, 32))
    assert results[str({})] == (("ok", None), (LOW, HIGH))
    assert results[str({"high": 10, "low": 20})] == (
        ("raise", ValueError, "high (10) must be >= low (20) must be >= 0"),
        (0, 0),  # unchanged
    )


def test_write_buffer_limits_negative_high_message(compare):

    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            with b:
                tr, pr = await wrap(loop, a, lambda: Recorder(loop))
                res = outcome(tr.set_write_buffer_limits, high=-1)
                tr.close()
                await pr.lost
                return res

        return run(loop, main())

    assert compare(scenario) == (
        "raise",
        ValueError,
        "high (-1) must be >= low (-1) must be >= 0",
    )


def test_pause_resume_writing_at_water_marks(loop, kind):
    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.set_write_buffer_limits(high=HIGH, low=LOW)
            assert tr.get_write_buffer_limits() == (LOW, HIGH)
            written = 0
            while not pr.pauses:
                tr.write(b"w" * 16 * 1024)
                written += 16 * 1024
                assert written < 64 * MB
            for _ in range(8):  # already paused: no second pause_writing()
                tr.write(b"w" * 16 * 1024)
                written += 16 * 1024
            await spin()
            assert len(pr.pauses) == 1 and pr.resumes == []
            assert pr.pauses[0] > HIGH
            assert tr.get_write_buffer_size() > HIGH
            received = await read_until_eof(loop, b, limit=written)
            await until(lambda: tr.get_write_buffer_size() == 0)
            await spin(0.01)
            tr.close()
            await pr.lost
            return len(received) == written, pr.pauses, pr.resumes

    complete, pauses, resumes = run(loop, main())
    assert complete
    assert len(pauses) == 1
    assert len(resumes) == 1 and resumes[0] <= LOW


def test_pause_writing_threshold_is_strict(loop, kind):
    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.set_write_buffer_limits(high=16 * MB)
            fill_kernel_buffers(tr)
            size = tr.get_write_buffer_size()
            tr.set_write_buffer_limits(high=size + 100, low=0)
            steps = [len(pr.pauses)]
            tr.write(b"x" * 100)  # exactly at the high-water mark: not above it
            steps.append((len(pr.pauses), tr.get_write_buffer_size() - size))
            tr.write(b"x")
            steps.append((len(pr.pauses), tr.get_write_buffer_size() - size))
            tr.set_write_buffer_limits(high=size * 4)  # does not resume by itself
            steps.append(len(pr.resumes))
            tr.abort()
            await pr.lost
            return steps

    assert run(loop, main()) == [0, (0, 100), (1, 101), 0]


def test_set_write_buffer_limits_pauses_immediately(loop, kind):
    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.set_write_buffer_limits(high=16 * MB)
            fill_kernel_buffers(tr)
            assert pr.pauses == []
            tr.set_write_buffer_limits(high=0)
            res = (len(pr.pauses), tr.get_write_buffer_limits())
            tr.abort()
            await pr.lost
            return res

    assert run(loop, main()) == (1, (0, 0))


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
        a, b = connected_pair(kind)
        with b:
            tr, first = await wrap(loop, a, lambda: Recorder(loop))
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
    accepted = []

    def factory():
        accepted.append(Recorder(loop))
        return accepted[-1]

    async def main():
        if kind == "tcp":
            server = await loop.create_server(factory, "127.0.0.1", 0)
            server_addr = server.sockets[0].getsockname()
            tr, pr = await loop.create_connection(lambda: Recorder(loop), *server_addr)
        else:
            server_addr = unix_path(tmp_path)
            server = await loop.create_unix_server(factory, server_addr)
            tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), server_addr)
        async with server:
            await pr.made
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


# --------------------------------------------------------------- write errors


def _write_outcomes(loop, values):
    async def main():
        a, b = connected_pair("unix")
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            res = [outcome(tr.write, value) for value in values]
            tr.close()
            await pr.lost
            return res

    return run(loop, main())


def test_write_non_bytes_raises_type_error(loop):
    res = _write_outcomes(loop, ["abc", 1, None, [b"a"]])
    assert [r[:2] for r in res] == [("raise", TypeError)] * 4


def test_write_type_error_message(compare):
    res = compare(lambda lp: _write_outcomes(lp, ["abc", 1, [b"a"]]))
    assert res[0] == ("raise", TypeError, "data argument must be a bytes-like object, not 'str'")


def test_write_memoryview_of_non_byte_format(compare):

    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            with b:
                tr, pr = await wrap(loop, a, lambda: Recorder(loop))
                data = array.array("i", [1, 2, 3])
                res = [outcome(tr.write, memoryview(data)), outcome(tr.write, data)]
                tr.close()
                await pr.lost
                res.append(await read_until_eof(loop, b))
                return res

        return run(loop, main())

    ints = array.array("i", [1, 2, 3]).tobytes()
    assert compare(scenario) == [("ok", None), ("raise", TypeError, ANY_TEXT), ints]


class _AnyText:
    def __eq__(self, other):
        return isinstance(other, str)

    def __repr__(self):
        return "<any text>"


ANY_TEXT = _AnyText()


def test_empty_write_and_bytes_like_types(loop, kind):
    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
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


# ---------------------------------------------------------------- peer errors


@pytest.mark.parametrize("reading", [True, False], ids=["reading", "paused"])
def test_peer_reset_while_writing(compare, reading):
    # While reading, the reset is seen by recv(); paused, by the flush of the buffer.
    def scenario(loop):
        async def main():
            a, b = connected_pair("tcp", small_buffers=True)
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            if not reading:
                tr.pause_reading()
            tr.write(b"x" * (4 * MB))
            assert tr.get_write_buffer_size() > 0
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            b.close()  # RST
            exc = await pr.lost
            await spin(0.01)
            return (
                type(exc),
                getattr(exc, "errno", None),
                len(pr.lost_calls),
                tr.is_closing(),
                tr.get_write_buffer_size(),
            )

        return run(loop, main())

    assert compare(scenario) == (ConnectionResetError, 104, 1, True, 0)


def test_writes_after_connection_lost_are_dropped_and_logged(compare, caplog):
    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            b.close()
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.pause_reading()
            tr.write(b"x")  # EPIPE: fatal error, connection lost
            await pr.lost
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                res = [outcome(tr.write, b"y") for _ in range(7)]
            logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
            return [type(e) for e in pr.lost_calls], res, logged

        return run(loop, main())

    lost, res, logged = compare(scenario)
    assert lost == [BrokenPipeError]
    assert res == [("ok", None)] * 7
    assert logged == ["socket.send() raised exception."] * 3


# ------------------------------------------------------ fds owned by transports


def test_fd_of_transport_is_refused(compare):
    def scenario(loop):
        async def main():
            a, b = connected_pair("unix")
            with b:
                tr, pr = await wrap(loop, a, lambda: Recorder(loop))
                fd = a.fileno()
                res = [
                    outcome(method, fd, *args)
                    for method, args in (
                        (loop.add_reader, (print,)),
                        (loop.add_writer, (print,)),
                        (loop.remove_reader, ()),
                        (loop.remove_writer, ()),
                    )
                ]
                try:
                    await loop.sock_recv(a, 10)
                except RuntimeError as exc:
                    res.append(("sock_recv", type(exc), str(exc)))
                res = [
                    (r[0], r[1], str(r[2]).startswith(f"File descriptor {fd} is used by transport"))
                    for r in res
                ]
                tr.close()
                await pr.lost
                return res

        return run(loop, main())

    res = compare(scenario)
    assert res == [("raise", RuntimeError, True)] * 4 + [("sock_recv", RuntimeError, True)]


# ------------------------------------------------------------ protocol errors


class FailingProtocol(asyncio.Protocol):
    """data_received, eof_received or buffer_updated raise (chosen by ``where``)."""

    def __init__(self, loop, where):
        self.where = where
        self.lost = loop.create_future()

    def data_received(self, data):
        raise ValueError("data_received failed")

    def eof_received(self):
        raise KeyError("eof_received failed")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class FailingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, loop, where):
        self.where = where
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        if self.where == "get_buffer-empty":
            return bytearray()
        if self.where == "get_buffer-raises":
            raise ValueError("get_buffer failed")
        return bytearray(16)

    def buffer_updated(self, nbytes):
        raise ValueError("buffer_updated failed")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def _protocol_error_scenario(where):
    def scenario(loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        async def main():
            a, b = connected_pair("unix")
            with b:
                cls = FailingBufferedProtocol if "buffer" in where else FailingProtocol
                tr, pr = await loop.create_connection(lambda: cls(loop, where), sock=a)
                if where == "eof_received":
                    b.shutdown(socket.SHUT_WR)
                else:
                    b.send(b"data")
                exc = await pr.lost
                return (
                    (type(exc), str(exc)),
                    [
                        (
                            ctx["message"],
                            type(ctx["exception"]),
                            str(ctx["exception"]),
                            ctx["transport"] is tr,
                            ctx["protocol"] is pr,
                        )
                        for ctx in contexts
                    ],
                )

        return run(loop, main())

    return scenario


@pytest.mark.parametrize("where", ["data_received", "eof_received", "buffer_updated"])
def test_protocol_callback_errors_are_fatal(compare, where):
    lost, contexts = compare(_protocol_error_scenario(where))
    assert len(contexts) == 1
    assert contexts[0][0] == f"Fatal error: protocol.{where}() call failed."
    assert lost[0] is contexts[0][1]


@pytest.mark.parametrize("where", ["get_buffer-empty", "get_buffer-raises"])
def test_get_buffer_errors_are_fatal(compare, where):
    lost, contexts = compare(_protocol_error_scenario(where))
    assert contexts[0][0] == "Fatal error: protocol.get_buffer() call failed."
