"""The TLS record pump's write side on stock asyncio and ferroloop (the path ferroloop
runs in Rust on Python 3.11+, ``crates/ferroloop-py/src/transports/tls.rs``; the read
side: ``test_tls_pump_reads.py``).

On 3.11+ ferroloop's TLS protocol is ``ferroloop._tls.SSLProtocol`` (asyncio's
``SSLProtocol``): while a connection is established (the ``WRAPPED`` state), the records
its transport reads go to a Rust pump (decrypt, ``data_received``, write what TLS has to
send, read flow control) and ``write()`` on the application's transport
(``ferroloop._tls._SSLProtocolTransport``) encrypts and writes in Rust; every other
state and every less common branch calls asyncio's method. Each test drives one of
those branches through public API (plus ``SSLContext.sslobject_class`` to make the TLS
object refuse or cut writes) and runs on both loops, most of them with ``compare``.
Helpers: ``looptest_tls_pump.py``.

Covered:

* ``write()``: asyncio's ``TypeError`` for what is not bytes-like, empty buffers as
  no-ops, ``bytes``/``bytearray``/``memoryview`` (slices, subclasses, a non-byte format)
  arriving intact and in order, a buffer mutated after ``write()`` returned;
* writes from ``connection_made`` (asyncio calls it once the handshake is done: the
  data is encrypted at once) on both ends;
* 1,000 small writes in one callback, echoed from ``data_received`` (a write made
  inside the pump);
* the write backlog: a TLS object that refuses writes (``SSLWantReadError``, what a
  renegotiation raises) or takes a few bytes at a time; data from the peer or the next
  write flushes the backlog first;
* write flow control: a zero high-water mark (``pause_writing``/``resume_writing`` on
  every write, none for empty ones), small write limits against a peer that stops
  reading;
* writes after ``close()`` (dropped; asyncio's "SSL connection is closed" warnings,
  counted) and after a second ``close()``.

Not covered, because no public API reaches it: a write while the handshake is still
running (the ``DO_HANDSHAKE`` branch of the Rust ``write``). The application gets its
TLS transport in ``connection_made``, which asyncio calls after switching to
``WRAPPED``; ``create_connection``, ``create_server`` and ``start_tls`` hand it out
only once the handshake is done.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
import sys
from asyncio import constants

from looptest_net import run, spin, until
from looptest_support import outcome
from looptest_tls import TLS_TEST_MARKS, client_context, server_context
from looptest_tls_pump import (
    KB,
    BytesSubclass,
    Gate,
    Journal,
    close_both,
    gated_client_context,
    needs_311_sslproto,
    small_buffer_listener,
    tls_connection,
)

pytest_plugins = ["looptest_tls"]
pytestmark = TLS_TEST_MARKS


def test_write_argument_checks(compare, certs):
    class NotBytes:  # local: asyncio's message has the __name__, not the __qualname__
        pass

    def scenario(loop):
        async def main():
            async with tls_connection(loop, certs) as (tr, pr, peer):
                wrong = ("text", 7, None, [b"x"], NotBytes(), array.array("b", b"ab"))
                refused = [outcome(tr.write, arg) for arg in wrong]
                empties = (b"", bytearray(), memoryview(b""), memoryview(b"abc")[1:1])
                empty = [outcome(tr.write, arg) for arg in empties]
                after_empty = tr.get_write_buffer_size()
                mutable = bytearray(b"<bytearray>")
                backing = bytearray(b"<view of a bytearray>")
                writes = [
                    b"<bytes>",
                    mutable,
                    memoryview(b"<memoryview>"),
                    memoryview(backing),
                    memoryview(b"--<slice>--")[2:-2],
                    BytesSubclass(b"<bytes subclass>"),
                ]
                if sys.version_info >= (3, 11):
                    # len() 3, 12 bytes. asyncio 3.9/3.10's SSL pipe counts bytes written
                    # against len() and loops forever on it (both loops use that
                    # SSLProtocol there).
                    writes.append(memoryview(array.array("I", [1, 2, 3])))
                expected = b"".join(bytes(data) for data in writes)
                for data in writes:
                    tr.write(data)
                # Encrypted when write() returned: changing the buffers now changes
                # nothing (same sizes: a bytearray with a view cannot be resized).
                mutable[:] = b"X" * len(mutable)
                backing[:] = b"Y" * len(backing)
                await until(lambda: len(peer.data) >= len(expected))
                await spin(0.02)
                received = bytes(peer.data)
                lost = await close_both(tr, pr, peer)
                return refused, empty, after_empty, received == expected, lost

        return run(loop, main())

    refused, empty, after_empty, intact, lost = compare(scenario)
    assert [result[:2] for result in refused] == [("raise", TypeError)] * 6
    assert [result[2] for result in refused] == [
        f"data: expecting a bytes-like instance, got {name}"
        for name in ("str", "int", "NoneType", "list", "NotBytes", "array")
    ]
    assert empty == [("ok", None)] * 4
    assert after_empty == 0
    assert intact
    assert lost == (None, None)


@needs_311_sslproto
def test_writes_from_connection_made(compare, certs):
    # Both ends write from connection_made: asyncio calls it once the state is WRAPPED,
    # so the data is encrypted and handed to the socket at once (nothing buffered).
    def scenario(loop):
        async def main():
            async with tls_connection(
                loop,
                certs,
                client=lambda loop: Journal(loop, greeting=b"client hello"),
                server=lambda loop: Journal(loop, greeting=b"server hello"),
            ) as (tr, pr, peer):
                tr.write(b", more from the client")
                peer.transport.write(b", more from the server")
                await until(lambda: len(pr.data) >= 34 and len(peer.data) >= 34)
                await spin(0.02)
                await close_both(tr, pr, peer)
                return (
                    pr.buffered_in_made,
                    peer.buffered_in_made,
                    bytes(pr.data),
                    bytes(peer.data),
                )

        return run(loop, main())

    assert compare(scenario) == (
        0,
        0,
        b"server hello, more from the server",
        b"client hello, more from the client",
    )


def test_many_small_writes_in_one_callback(compare, certs):
    # 1,000 writes of 10 bytes (bytes, bytearray, memoryview in turn) without yielding;
    # the server echoes each data_received from inside it (a write made in the pump).
    # The reader may get them coalesced, never split into more calls than writes.
    pieces = [b"%09d|" % i for i in range(1000)]
    expected = b"".join(pieces)
    kinds = (bytes, bytearray, memoryview)

    def scenario(loop):
        async def main():
            async with tls_connection(
                loop, certs, server=lambda loop: Journal(loop, echo=True)
            ) as (tr, pr, peer):
                for i, piece in enumerate(pieces):
                    tr.write(kinds[i % 3](piece))
                await until(lambda: len(pr.data) >= len(expected))
                await spin(0.02)
                lost = await close_both(tr, pr, peer)
                return (
                    bytes(peer.data) == expected,
                    bytes(pr.data) == expected,
                    1 <= peer.data_calls <= len(pieces),
                    1 <= pr.data_calls <= len(pieces),
                    lost,
                )

        return run(loop, main())

    assert compare(scenario) == (True, True, True, True, (None, None))


@needs_311_sslproto
def test_write_backlog(compare, certs):
    # The client's TLS object refuses writes for a while (SSLWantReadError): what is
    # written meanwhile waits in the backlog (counted in get_write_buffer_size) and goes
    # out, first and in order, when data comes from the peer or on the next write. Then
    # the TLS object takes at most 3 bytes per call: the rest of each write is retried
    # at once until all of it is taken.
    def scenario(loop):
        gate = Gate()

        async def main():
            async with tls_connection(
                loop,
                certs,
                server=lambda loop: Journal(loop, greeting=b"ready"),
                ssl=gated_client_context(certs, gate),
            ) as (tr, pr, peer):
                # The greeting comes after the server's session tickets: nothing else
                # arrives for the client until the server writes again.
                await until(lambda: pr.data == b"ready")
                gate.stalled, gate.calls = True, 0
                tr.write(b"one ")
                tr.write(bytearray(b"two "))
                tr.writelines([b"three "])
                tr.write(memoryview(b"four "))
                stalled = (gate.calls, tr.get_write_buffer_size())
                await spin(0.05)
                held = bytes(peer.data)
                gate.stalled = False
                peer.transport.write(b"ping")
                await until(lambda: len(peer.data) >= 19)
                flushed_by_read = (
                    bytes(peer.data),
                    bytes(pr.data),
                    tr.get_write_buffer_size(),
                )

                gate.stalled = True
                tr.write(b"five ")
                waiting = tr.get_write_buffer_size()
                gate.stalled = False
                tr.write(b"six ")
                flushed_by_write = tr.get_write_buffer_size()

                gate.limit, gate.calls = 3, 0
                tail = bytes(range(256)) * 4
                tr.write(tail)
                cut = (gate.calls, tr.get_write_buffer_size())
                gate.limit = None
                total = 19 + len(b"five six ") + len(tail)
                await until(lambda: len(peer.data) >= total)
                await spin(0.02)
                received = bytes(peer.data)
                lost = await close_both(tr, pr, peer)
                return (
                    stalled,
                    held,
                    flushed_by_read,
                    (waiting, flushed_by_write),
                    cut,
                    received == b"one two three four five six " + tail,
                    pr.events,
                    lost,
                )

        return run(loop, main())

    stalled, held, by_read, by_write, cut, intact, events, lost = compare(scenario)
    assert stalled == (4, 19)  # each write tried once, all 19 bytes in the backlog
    assert held == b""
    assert by_read == (b"one two three four ", b"readyping", 0)
    assert by_write == (5, 0)
    assert cut == (342, 0)  # ceil(1024 / 3) calls, nothing left over
    assert intact
    assert events == ["made", "data", "eof", ("lost", None)]
    assert lost == (None, None)


# ----------------------------------------------------------------------- flow control


@needs_311_sslproto
def test_zero_high_water_mark(compare, certs):
    # high=0 (and so low=0): setting the limits pauses the protocol; then each
    # non-empty write crosses a mark (the Rust write's check), alternately resuming and
    # pausing it; empty writes change nothing. Restoring the defaults after an odd
    # number of writes finds it resumed: nothing more.
    def scenario(loop):
        async def main():
            async with tls_connection(loop, certs) as (tr, pr, peer):
                start = len(pr.events)
                tr.set_write_buffer_limits(high=0)
                limits = tr.get_write_buffer_limits()
                for empty in (b"", bytearray(), memoryview(b"")):
                    tr.write(empty)
                after_empty = list(pr.events[start:])
                tr.write(b"a")
                tr.write(memoryview(b"b"))
                tr.write(bytearray(b"c"))
                tr.writelines([b"d"])  # asyncio's Python method, same checks
                tr.write(b"e")
                tr.set_write_buffer_limits()
                seen = (limits, after_empty, pr.events[start:], pr.pauses, pr.resumes)
                await until(lambda: len(peer.data) >= 5)
                await close_both(tr, pr, peer)
                return seen, bytes(peer.data)

        return run(loop, main())

    (limits, after_empty, events, pauses, resumes), received = compare(scenario)
    assert limits == (0, 0)
    assert after_empty == ["pause"]
    assert events == ["pause", "resume"] * 3
    assert pauses == [0, 0, 0] and resumes == [0, 0, 0]
    assert received == b"abcde"



@needs_311_sslproto
def test_write_flow_control_with_small_limits(compare, certs):
    # Small socket buffers, small TLS write limits, a server whose application does not
    # read: the client's writes pile up until pause_writing (at or above the high mark),
    # and it stays paused once the server's TLS layer stops reading its socket; once
    # the server reads, resume_writing (at or below the low mark), as often as it
    # paused, and every byte arrives in order.
    high, low = 32 * KB, 8 * KB
    chunks = [(b"%07d|" % i) * (2 * KB) for i in range(2048)]  # 16 KB each, 32 MB max

    def scenario(loop):
        served = []

        def factory():
            served.append(Journal(loop, pause_in_made=True))
            return served[-1]

        async def main():
            lsn = small_buffer_listener()
            server = await loop.create_server(
                factory, sock=lsn, ssl=server_context(certs)
            )
            async with server:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * KB)
                sock.setblocking(False)
                await loop.sock_connect(sock, lsn.getsockname())
                tr, pr = await loop.create_connection(
                    lambda: Journal(loop),
                    sock=sock,
                    ssl=client_context(certs),
                    server_hostname="localhost",
                )
                await until(lambda: served and served[0].transport is not None)
                (peer,) = served
                tr.set_write_buffer_limits(high=high, low=low)
                limits = tr.get_write_buffer_limits()
                sent = 0
                while True:
                    while len(pr.pauses) == len(pr.resumes):
                        assert sent < len(chunks), "pause_writing was never called"
                        tr.write(chunks[sent])
                        sent += 1
                        await asyncio.sleep(0)
                    # While the server's TLS layer still reads its socket, the client
                    # drains and resumes: go on until it stays paused.
                    await spin(0.05)
                    if len(pr.pauses) > len(pr.resumes):
                        break
                before_reading = len(peer.data)
                peer.transport.resume_reading()
                await until(lambda: len(pr.resumes) == len(pr.pauses))
                expected = b"".join(chunks[:sent])
                await until(lambda: len(peer.data) >= len(expected))
                await spin(0.02)
                received = bytes(peer.data)
                drained = tr.get_write_buffer_size()
                lost = await close_both(tr, pr, peer)
                return (
                    limits,
                    all(size >= high for size in pr.pauses),
                    before_reading,
                    all(size <= low for size in pr.resumes),
                    len(pr.pauses) == len(pr.resumes),
                    received == expected,
                    drained,
                    lost,
                )

        return run(loop, main())

    assert compare(scenario) == (
        (low, high),
        True,
        0,
        True,
        True,
        True,
        0,
        (None, None),
    )


@needs_311_sslproto
def test_writes_after_close(compare, certs, caplog):
    # After close() (TLS shutdown under way) writes are dropped; asyncio counts them
    # and logs "SSL connection is closed" for each one past LOG_THRESHOLD_FOR_CONNLOST_
    # WRITES (connection_lost counts as one). Empty writes are not counted; the type
    # check still applies. After a second close() the transport has no SSL protocol
    # left: asyncio's AttributeError.
    caplog.set_level(logging.WARNING, logger="asyncio")

    def closed_warnings():
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        return messages.count("SSL connection is closed")

    def scenario(loop):
        caplog.clear()

        async def main():
            async with tls_connection(loop, certs) as (tr, pr, peer):
                tr.write(b"before close")
                tr.close()
                seen = [tr.is_closing(), outcome(tr.write, "text")]
                for _ in range(20):
                    tr.write(b"")
                seen.append(closed_warnings())
                for i in range(8):
                    tr.write(b"dropped %d" % i)
                seen.append(closed_warnings())
                await pr.lost
                await peer.lost
                for _ in range(4):
                    tr.write(memoryview(b"late"))
                seen.append(closed_warnings())
                tr.close()
                seen += [outcome(tr.write, b"x"), outcome(tr.write, b"")]
                seen.append(closed_warnings())
                return seen, bytes(peer.data), peer.events, pr.lost_calls

        return run(loop, main())

    seen, received, events, lost_calls = compare(scenario)
    threshold = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
    assert seen == [
        True,
        ("raise", TypeError, "data: expecting a bytes-like instance, got str"),
        0,
        8 - threshold,
        8 - threshold + 4,
        (
            "raise",
            AttributeError,
            "'NoneType' object has no attribute '_write_appdata'",
        ),
        ("ok", None),
        8 - threshold + 4,
    ]
    assert received == b"before close"
    assert events == ["made", "data", "eof", ("lost", None)]
    assert lost_calls == [None]
