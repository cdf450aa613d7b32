"""Stream transports (TCP and Unix): ``close()`` and ``abort()``.

``close()`` flushes what is still buffered before the socket is shut and
``connection_lost(None)`` is called (never synchronously, once), with or without pending
data; ``abort()`` drops the buffer, also the one a ``close()`` was still flushing. Both
are idempotent and close the transport's socket.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``). The other stream-transport files are ``test_net_streams_io.py``,
``test_net_streams_flow.py`` and ``test_net_streams_errors.py`` (peer resets, writes
after the connection was lost).
"""

from __future__ import annotations

import os

from looptest_net import (  # noqa: F401 (kind is a fixture)
    MB,
    kind,
    read_until_eof,
    recorded_pair,
    run,
    spin,
)


def test_close_flushes_pending_writes(loop, kind):
    payload = os.urandom(4 * MB)

    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (a, b, tr, pr):
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
        async with recorded_pair(loop, kind) as (_, b, tr, pr):
            tr.write(b"bye")
            tr.close()
            assert pr.lost_calls == []  # connection_lost is never called synchronously
            await pr.lost
            return await read_until_eof(loop, b), pr.lost_calls, pr.eofs

    assert run(loop, main()) == (b"bye", [None], 0)


def test_abort_drops_pending_writes(loop, kind):
    payload = os.urandom(8 * MB)

    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (a, b, tr, pr):
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
        async with recorded_pair(loop, kind, small_buffers=True) as (_, b, tr, pr):
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
