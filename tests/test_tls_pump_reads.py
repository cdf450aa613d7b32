"""The TLS record pump's read side on stock asyncio and ferroloop (the path ferroloop
runs in Rust on Python 3.11+, ``crates/ferroloop-py/src/transports/tls.rs``; the write
side: ``test_tls_pump_writes.py``).

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

* ``pause_reading``/``resume_reading``/``is_reading`` (nothing delivered while paused,
  everything after), a paused application stopping the raw transport (read limits);
* the peer's close_notify: ``data_received`` (all of it), ``eof_received``,
  ``connection_lost(None)``, in that order (and asyncio's warning when
  ``eof_received`` returns true);
* errors inside the pump (the application's ``data_received``, the TLS object's
  ``write``): asyncio's "Fatal error on SSL protocol" report and ``connection_lost``;
* ferroloop only: the application's transport has the Rust ``write`` and the raw
  transport's protocol is ``ferroloop._tls.SSLProtocol``, also after a ``start_tls``
  upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys

import pytest

from looptest_net import run, spin, until
from looptest_support import exc_info_tuple, outcome
from looptest_tls import TLS_TEST_MARKS, client_context, server_context
from looptest_tls_pump import (
    KB,
    Gate,
    Journal,
    close_both,
    gated_client_context,
    needs_311_sslproto,
    tls_connection,
)

pytest_plugins = ["looptest_tls"]
pytestmark = TLS_TEST_MARKS


@needs_311_sslproto
def test_pause_reading(compare, certs):
    # The server's application pauses reading in connection_made: the records the
    # client sends pile up, undecrypted (get_read_buffer_size), nothing reaches
    # data_received (also for records arriving while paused) until resume_reading, and
    # then all of it does, in one call. is_reading() follows; a second pause_reading
    # or resume_reading changes nothing.
    def scenario(loop):
        async def main():
            async with tls_connection(
                loop, certs, server=lambda loop: Journal(loop, pause_in_made=True)
            ) as (tr, pr, peer):
                st = peer.transport
                states = [st.is_reading(), tr.is_reading()]
                first = b"".join(bytes([65 + i]) * 5000 for i in range(4))
                for i in range(4):
                    tr.write(first[i * 5000 : (i + 1) * 5000])
                await until(lambda: st.get_read_buffer_size() >= len(first))
                await spin(0.05)
                held = (bytes(peer.data), st.get_read_buffer_size())
                tr.write(b"E" * 5000)
                await until(lambda: st.get_read_buffer_size() >= held[1] + 5000)
                await spin(0.02)
                held_more = (bytes(peer.data), st.get_read_buffer_size())
                st.pause_reading()
                states.append(st.is_reading())
                st.resume_reading()
                states.append(st.is_reading())
                right_after = bytes(peer.data)  # asyncio resumes on the next iteration
                st.resume_reading()
                await until(lambda: len(peer.data) >= 25000)
                await spin(0.02)
                resumed = (
                    bytes(peer.data) == first + b"E" * 5000,
                    peer.data_calls,
                    st.get_read_buffer_size(),
                )
                # Once more, mid-connection.
                st.pause_reading()
                states.append(st.is_reading())
                tr.write(b"late")
                await until(lambda: st.get_read_buffer_size() > 0)
                await spin(0.02)
                held_late = bytes(peer.data)[25000:]
                st.resume_reading()
                await until(lambda: len(peer.data) >= 25004)
                states.append(st.is_reading())
                lost = await close_both(tr, pr, peer)
                return (
                    states,
                    held,
                    held_more,
                    right_after,
                    resumed,
                    held_late,
                    bytes(peer.data)[25000:],
                    peer.events,
                    lost,
                )

        return run(loop, main())

    (states, held, held_more, right_after, resumed, held_late, late, events, lost) = (
        compare(scenario)
    )
    assert states == [False, True, False, True, False, True]
    assert held[0] == b"" and held[1] >= 20000  # the records, with their overhead
    assert held_more[0] == b"" and held_more[1] >= held[1] + 5000
    assert right_after == b""
    assert resumed == (True, 1, 0)
    assert (held_late, late) == (b"", b"late")
    assert events == ["made", "data", "eof", ("lost", None)]
    assert lost == (None, None)


@needs_311_sslproto
def test_paused_application_stops_the_raw_transport(compare, certs):
    # While the application does not read, the TLS layer stops reading the socket once
    # its read buffer is over the high mark (set_read_buffer_limits): far less than the
    # 2 MB sent waits in it, and it stays so. After resume_reading everything arrives
    # and the socket is read again.
    high = 64 * KB
    payload = b"".join(b"%07d|" % i for i in range(2 * 1024 * 1024 // 8))

    def scenario(loop):
        async def main():
            async with tls_connection(
                loop, certs, server=lambda loop: Journal(loop, pause_in_made=True)
            ) as (tr, pr, peer):
                st = peer.transport
                st.set_read_buffer_limits(high=high)
                limits = st.get_read_buffer_limits()
                for start in range(0, len(payload), 64 * KB):
                    tr.write(payload[start : start + 64 * KB])
                await until(lambda: st.get_read_buffer_size() >= high)
                await spin(0.1)
                waiting = st.get_read_buffer_size()
                await spin(0.05)
                still = st.get_read_buffer_size()
                st.resume_reading()
                await until(lambda: len(peer.data) >= len(payload))
                await spin(0.02)
                received = bytes(peer.data)
                lost = await close_both(tr, pr, peer)
                return (
                    limits,
                    high <= waiting < 512 * KB,
                    still == waiting,
                    received == payload,
                    len(pr.pauses) == len(pr.resumes),
                    lost,
                )

        return run(loop, main())

    assert compare(scenario) == ((16 * KB, high), True, True, True, True, (None, None))


# ------------------------------------------------------------------ closing, errors


class WriteThenClose(Journal):
    """Writes ``payload`` in 40 KB pieces, then closes, all in ``connection_made``."""

    def __init__(self, loop, payload):
        super().__init__(loop)
        self.payload = payload

    def connection_made(self, transport):
        super().connection_made(transport)
        for start in range(0, len(self.payload), 40 * KB):
            transport.write(self.payload[start : start + 40 * KB])
        transport.close()


@needs_311_sslproto
@pytest.mark.parametrize("keep_open", [False, True], ids=["eof-none", "eof-true"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_peer_close_notify(compare, certs, caplog, closer, keep_open):
    # One end writes 200 KB and closes its TLS transport at once (close_notify after
    # the data). The other end's application gets all the data, then eof_received,
    # then connection_lost(None). Returning true from eof_received does not keep a TLS
    # connection open: asyncio logs a warning.
    caplog.set_level(logging.WARNING, logger="asyncio")
    payload = b"".join(b"%07d|" % i for i in range(200 * KB // 8))

    def scenario(loop):
        caplog.clear()

        async def main():
            receiver = lambda loop: Journal(loop, keep_open=keep_open)  # noqa: E731
            if closer == "client":
                connection = tls_connection(loop, certs, server=receiver)
                async with connection as (tr, pr, peer):
                    for start in range(0, len(payload), 40 * KB):
                        tr.write(payload[start : start + 40 * KB])
                    tr.close()
                    closing_lost, receiving = await pr.lost, peer
                    await peer.lost
            else:
                async with tls_connection(
                    loop,
                    certs,
                    client=receiver,
                    server=lambda loop: WriteThenClose(loop, payload),
                ) as (tr, pr, peer):
                    closing_lost, receiving = await peer.lost, pr
                    await pr.lost
            await spin(0.02)
            warnings = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
            return (
                bytes(receiving.data) == payload,
                receiving.events,
                receiving.lost_calls,
                closing_lost,
                warnings,
            )

        return run(loop, main())

    intact, events, lost_calls, closing_lost, warnings = compare(scenario)
    assert intact
    assert events == ["made", "data", "eof", ("lost", None)]
    assert lost_calls == [None] and closing_lost is None
    if keep_open:
        assert warnings == [
            "returning true from eof_received() has no effect when using ssl"
        ]
    else:
        assert warnings == []


class RefusingData(Journal):
    def data_received(self, data):
        raise RuntimeError("the application refused the data")


@needs_311_sslproto
@pytest.mark.parametrize(
    "failure", ["data_received", "tls-write", "tls-write-ssl-error"]
)
def test_errors_in_the_pump(compare, certs, failure):
    # An exception from the application's data_received (called by the pump) or from
    # the TLS object's write (in the Rust write) is asyncio's fatal error: reported as
    # "Fatal error on SSL protocol" (unless it is an OSError, such as ssl.SSLError: not
    # reported outside debug mode), and the connection is lost with it.
    def scenario(loop):
        reported = []

        def handler(loop, context):
            reported.append(
                (
                    context["message"],
                    exc_info_tuple(context.get("exception")),
                    sorted(context),
                    type(context.get("protocol")).__name__,
                )
            )

        loop.set_exception_handler(handler)
        gate = Gate()

        async def main():
            if failure == "data_received":
                connection = tls_connection(
                    loop, certs, server=lambda loop: RefusingData(loop, greeting=b"!")
                )
            else:
                connection = tls_connection(
                    loop,
                    certs,
                    server=lambda loop: Journal(loop, greeting=b"!"),
                    ssl=gated_client_context(certs, gate),
                )
            async with connection as (tr, pr, peer):
                # Once the greeting is in, what the client writes reaches the server in
                # the WRAPPED state (the pump), and nothing else comes for the client.
                await until(lambda: len(pr.data) > 0)
                if failure == "tls-write":
                    gate.broken = ValueError("the TLS object is broken")
                elif failure == "tls-write-ssl-error":
                    gate.broken = ssl.SSLError(1, "[SSL] the TLS object is broken")
                written = outcome(tr.write, b"payload")
                failed = peer if failure == "data_received" else pr
                other = pr if failure == "data_received" else peer
                exc = await failed.lost
                await other.lost
                await spin(0.02)
                return (
                    written,
                    exc_info_tuple(exc),
                    failed.events,
                    other.events,
                    failed.lost_calls == [exc],
                    reported,
                )

        return run(loop, main())

    written, exc, failed_events, other_events, once, reported = compare(scenario)
    assert written == ("ok", None)
    assert once
    expected_exc = {
        "data_received": (RuntimeError, "the application refused the data"),
        "tls-write": (ValueError, "the TLS object is broken"),
        "tls-write-ssl-error": (ssl.SSLError, "[SSL] the TLS object is broken"),
    }[failure]
    assert exc == expected_exc
    assert failed_events[-1] == ("lost", expected_exc)
    assert other_events[-1] == ("lost", None)
    if failure == "tls-write-ssl-error":
        assert reported == []
    else:
        assert reported == [
            (
                "Fatal error on SSL protocol",
                expected_exc,
                ["exception", "message", "protocol", "transport"],
                "SSLProtocol",
            )
        ]


# ---------------------------------------------------------------- ferroloop's classes


def ferroloop_pump_only(test):
    """Runs ``test`` on ferroloop only, on the Pythons where it has the Rust pump."""
    only_ferroloop = pytest.mark.parametrize("loop_impl", ["ferroloop"])
    pump_exists = pytest.mark.skipif(
        sys.version_info < (3, 11),
        reason="ferroloop's Rust TLS pump exists on Python 3.11+ only (3.9/3.10 use "
        "asyncio's start_tls and SSLProtocol unchanged)",
    )
    return pump_exists(only_ferroloop(test))


@ferroloop_pump_only
def test_fast_path_in_place(loop, certs):
    from asyncio import sslproto

    from ferroloop import _ferroloop, _tls

    async def main():
        async with tls_connection(loop, certs) as (tr, pr, peer):
            ends = [
                (
                    isinstance(transport, _tls._SSLProtocolTransport),
                    isinstance(transport, sslproto._SSLProtocolTransport),
                    type(transport).write is not sslproto._SSLProtocolTransport.write,
                    type(transport).write is _ferroloop._tls_app_write.__func__,
                    # The protocol under the application's transport: the one whose
                    # records the Rust transport hands to the pump.
                    type(transport._ssl_protocol) is _tls.SSLProtocol,
                )
                for transport in (tr, peer.transport)  # client and server ends
            ]
            tr.write(b"through the fast path")
            await until(lambda: len(peer.data) >= 21)
            lost = await close_both(tr, pr, peer)
        return ends, bytes(peer.data), lost

    ends, received, lost = run(loop, main())
    assert _tls.TLS_PROTOCOL is _tls.SSLProtocol
    assert ends == [(True, True, True, True, True)] * 2
    assert received == b"through the fast path"
    assert lost == (None, None)


@ferroloop_pump_only
def test_start_tls_upgrades_onto_the_fast_path(loop, certs):
    # A plain connection upgraded by StreamWriter.start_tls on both ends (what asyncpg
    # does after its SSLRequest): both TLS transports are ferroloop's, and the upgraded
    # connection carries data both ways.
    from ferroloop import _tls

    async def main():
        upgraded = []

        async def handle(reader, writer):
            assert await reader.readexactly(8) == b"STARTTLS"
            writer.write(b"GO")  # the client starts its handshake only after this
            await writer.start_tls(server_context(certs))
            upgraded.append(writer.transport)
            writer.write(await reader.readexactly(5) + b" back")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS")
        assert await asyncio.wait_for(reader.readexactly(2), 10) == b"GO"
        await asyncio.wait_for(
            writer.start_tls(client_context(certs), server_hostname="localhost"), 10
        )
        upgraded.append(writer.transport)
        writer.write(b"hello")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return reply, [type(t) is _tls._SSLProtocolTransport for t in upgraded]

    reply, fast = run(loop, main())
    assert reply == b"hello back"
    assert fast == [True, True]
