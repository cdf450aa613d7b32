"""Stream transports (TCP and Unix): errors and how they are reported.

``write()`` of what is not bytes-like (``TypeError`` and its message, memoryviews of
other formats); a peer reset while writing, seen by the reader or by the flush
(``connection_lost(ConnectionResetError)``); writes after the connection was lost
(dropped, logged a few times); the fd of a transport refused to ``add_reader()`` and
friends and to ``sock_recv()``; a protocol callback that raises (or a ``get_buffer()``
that gives nothing) is a fatal error reported to the exception handler.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); most use ``compare`` (asyncio's exact answer). The other
stream-transport files are ``test_net_streams_io.py``, ``test_net_streams_flow.py`` and
``test_net_streams_close.py``.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
import struct

import pytest

from looptest_dgram import on
from looptest_net import (
    MB,
    Recorder,
    connected_pair,
    read_until_eof,
    recorded_pair,
    run,
    spin,
    wrap,
)
from looptest_support import outcome


class _AnyText:
    def __eq__(self, other):
        return isinstance(other, str)

    def __repr__(self):
        return "<any text>"


ANY_TEXT = _AnyText()


# --------------------------------------------------------------- write errors


def _write_outcomes(loop, values):
    async def main():
        async with recorded_pair(loop, "unix") as (_, _, tr, pr):
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
    async def main(loop):
        async with recorded_pair(loop, "unix") as (_, b, tr, pr):
            data = array.array("i", [1, 2, 3])
            res = [outcome(tr.write, memoryview(data)), outcome(tr.write, data)]
            tr.close()
            await pr.lost
            res.append(await read_until_eof(loop, b))
            return res

    ints = array.array("i", [1, 2, 3]).tobytes()
    assert compare(on(main)) == [("ok", None), ("raise", TypeError, ANY_TEXT), ints]


# ---------------------------------------------------------------- peer errors


@pytest.mark.parametrize("reading", [True, False], ids=["reading", "paused"])
def test_peer_reset_while_writing(compare, reading):
    # While reading, the reset is seen by recv(); paused, by the flush of the buffer.
    async def main(loop):
        async with recorded_pair(loop, "tcp", small_buffers=True) as (_, b, tr, pr):
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

    assert compare(on(main)) == (ConnectionResetError, 104, 1, True, 0)


def test_writes_after_connection_lost_are_dropped_and_logged(compare, caplog):
    async def main(loop):
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

    lost, res, logged = compare(on(main))
    assert lost == [BrokenPipeError]
    assert res == [("ok", None)] * 7
    assert logged == ["socket.send() raised exception."] * 3


# ------------------------------------------------------ fds owned by transports


def test_fd_of_transport_is_refused(compare):
    async def main(loop):
        async with recorded_pair(loop, "unix") as (a, _, tr, pr):
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

    res = compare(on(main))
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
