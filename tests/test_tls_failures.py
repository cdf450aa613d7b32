"""TLS failures on stock asyncio and ferroloop, compared with asyncio's answers.

Every scenario runs on both loops with ``compare`` (exception types and messages,
``verify_code``, what a protocol sees). The certificates come from ``looptest_tls``.

Covered: an untrusted CA and a wrong hostname (``SSLCertVerificationError`` and its
``verify_code``), a client refused by a server that requires a client certificate,
``ssl_handshake_timeout`` against a silent server, a peer that answers with garbage, a
peer that closes during the handshake (client and server side), what a server reports
of failed handshakes in debug mode, ``ssl_shutdown_timeout`` against a peer that never
answers ``close_notify``, a peer that half-closes without ``close_notify`` (and, for
contrast, one that sends it), aborting during the handshake and right after ``close()``
(no call of the loop's exception handler, ``connection_lost`` once).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time

import pytest

from looptest_net import EchoProtocol, LineClient, Recorder, run, spin, until
from looptest_support import exc_info_tuple
from looptest_tls import (
    CLIENT_CN,
    TLS_TEST_MARKS,
    RawTLS,
    Served,
    client_context,
    raw_listener,
    server_context,
    tls_server,
)

pytest_plugins = ["looptest_tls"]
pytestmark = TLS_TEST_MARKS


# -------------------------------------------------------------------- verification


@pytest.mark.parametrize(
    "trust, hostname, verify_code",
    [
        ("other_ca", "localhost", 20),  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        ("ca", "wrong.example", 62),  # X509_V_ERR_HOSTNAME_MISMATCH
    ],
    ids=["untrusted-ca", "wrong-hostname"],
)
def test_certificate_verification_failure(compare, certs, trust, hostname, verify_code):
    def scenario(loop):
        made = []

        async def main():
            server, connect = await tls_server(loop, lambda: Recorder(loop), certs)
            async with server:
                try:
                    await connect(
                        lambda: made.append("client") or Recorder(loop),
                        ssl=client_context(certs, trust=trust),
                        server_hostname=hostname,
                    )
                except ssl.SSLCertVerificationError as exc:
                    return (
                        type(exc),
                        str(exc),
                        exc.verify_code,
                        exc.verify_message,
                        exc.reason,
                        exc.library,
                    )

        return run(loop, main()), made

    (result, made) = compare(scenario)
    exc_type, message, code, _, reason, _ = result
    assert exc_type is ssl.SSLCertVerificationError
    assert code == verify_code and reason == "CERTIFICATE_VERIFY_FAILED"
    assert message.startswith(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    assert made == ["client"]  # the protocol was made but never connected


def test_client_certificate_required(compare, certs):
    # A server with CERT_REQUIRED: a client without a certificate is refused (TLS 1.3:
    # the client's handshake is done before the server checks its certificate, so the
    # client is connected first and then loses the connection), one with a certificate
    # signed by the CA gets in.
    def scenario(loop):
        served = Served(loop)

        async def main():
            ctx = server_context(certs, require_client_cert=True)
            server, connect = await tls_server(loop, served, certs, ssl=ctx)
            async with server:
                tr, pr = await connect(lambda: Recorder(loop))
                lost = await pr.lost
                refused = (bytes(pr.data), pr.eofs, exc_info_tuple(lost))
                tr, pr = await connect(
                    lambda: Recorder(loop), ssl=client_context(certs, client_cert=True)
                )
                await until(lambda: served.connected)
                (peer,) = served.connected
                subject = peer.transport.get_extra_info("peercert")["subject"]
                tr.close()
                await pr.lost
                await peer.lost
                # The refused client's protocol was made, but never connected.
                return refused, subject, len(served.made), len(served.connected)

        return run(loop, main())

    refused, subject, made, connected = compare(scenario)
    # asyncio's client does not report the server's "certificate required" alert as an
    # error: it sees an EOF, then connection_lost(None).
    assert refused == (b"", 1, None)
    assert subject == ((("commonName", CLIENT_CN),),)
    assert (made, connected) == (2, 1)


# ------------------------------------------------------------------ misbehaving peers


def describe(exc):
    return (type(exc), str(exc), isinstance(exc, ssl.SSLError))


async def tls_client_failure(loop, certs, address):
    """How a TLS client trusting the test CA fails to connect to ``address``
    (``describe``d), or None if it connects."""
    try:
        await loop.create_connection(
            asyncio.Protocol, *address, ssl=client_context(certs), server_hostname="localhost"
        )
    except Exception as exc:  # noqa: BLE001 - compared with asyncio
        return describe(exc)
    return None


def test_handshake_timeout(compare, certs):
    # The server accepts the TCP connection and reads, but never answers the
    # ClientHello: the client gives up after ssl_handshake_timeout and closes the
    # connection (the silent server sees EOF).
    def scenario(loop):
        async def main():
            lsn = raw_listener()
            with lsn:
                silent = asyncio.ensure_future(loop.sock_accept(lsn))
                start = time.monotonic()
                try:
                    await loop.create_connection(
                        asyncio.Protocol,
                        *lsn.getsockname(),
                        ssl=client_context(certs),
                        server_hostname="localhost",
                        ssl_handshake_timeout=0.3,
                    )
                except BaseException as exc:  # noqa: BLE001 - compared with asyncio
                    failure = describe(exc)
                elapsed = time.monotonic() - start
                conn, _ = await silent
                with conn:
                    hello = await loop.sock_recv(conn, 65536)
                    rest = await loop.sock_recv(conn, 65536)
            # Generous upper bound: a shared 2-core VM may be slow, but not 5 s slow.
            return failure, 0.28 <= elapsed < 5, hello[:1], rest

        return run(loop, main())

    failure, in_time, first_byte, rest = compare(scenario)
    assert in_time
    assert first_byte == b"\x16"  # a TLS handshake record: the ClientHello
    assert rest == b""
    assert failure[1] == (
        "SSL handshake is taking longer than 0.3 seconds: aborting the connection"
    )


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x28",  # alert record: fatal, handshake_failure
        b"\x16\x03\x03\x00\x04\x02\xff\xff\xff",  # a ServerHello that is cut short
    ],
    ids=["http", "fatal-alert", "malformed-hello"],
)
def test_peer_answers_with_garbage(compare, certs, reply):
    # The server answers the ClientHello with bytes that are not TLS, with a fatal
    # alert, or with a malformed handshake message.
    def scenario(loop):
        async def main():
            lsn = raw_listener()
            with lsn:

                async def garbage_server():
                    conn, _ = await loop.sock_accept(lsn)
                    with conn:
                        await loop.sock_recv(conn, 65536)
                        await loop.sock_sendall(conn, reply)
                        # Keep the socket open until the client is done with it: the
                        # error must come from the bytes, not from an EOF.
                        while await loop.sock_recv(conn, 65536):
                            pass

                peer = asyncio.ensure_future(garbage_server())
                failure = await tls_client_failure(loop, certs, lsn.getsockname())
                await peer
            return failure

        return run(loop, main())

    failure = compare(scenario)
    assert failure[2], failure  # an ssl.SSLError (or a subclass)


def test_server_closes_during_handshake(compare, certs):
    # The server reads the ClientHello and closes the TCP connection.
    def scenario(loop):
        async def main():
            lsn = raw_listener()
            with lsn:

                async def vanishing_server():
                    conn, _ = await loop.sock_accept(lsn)
                    with conn:
                        return await loop.sock_recv(conn, 65536)

                peer = asyncio.ensure_future(vanishing_server())
                failure = await tls_client_failure(loop, certs, lsn.getsockname())
                hello = await peer
            return failure, hello[:1]

        return run(loop, main())

    failure, first_byte = compare(scenario)
    assert first_byte == b"\x16"
    assert issubclass(failure[0], ConnectionError)


def test_client_closes_during_handshake(compare, certs):
    # The other side: a client sends half a ClientHello and goes away. The server's
    # protocol for it is never connected, the exception handler is not called (not in
    # debug mode), and the server goes on serving: the next client gets its echo.
    def scenario(loop):
        made = []

        class Echo(EchoProtocol):
            def connection_made(self, transport):
                made.append("connected")
                super().connection_made(transport)

        async def main():
            server, connect = await tls_server(loop, Echo, certs)
            async with server:
                sock = socket.socket()
                sock.setblocking(False)
                with sock:
                    await loop.sock_connect(sock, server.sockets[0].getsockname())
                    ctx = client_context(certs)
                    raw = RawTLS(
                        loop, sock, ctx, server_side=False, server_hostname="localhost"
                    )
                    try:
                        raw.obj.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                    hello = raw.outgoing.read()
                    await loop.sock_sendall(sock, hello[: len(hello) // 2])
                    await spin(0.05)
                await spin(0.05)
                gone = list(made)
                tr, pr = await connect(lambda: LineClient(loop, b"still serving"))
                echoed = await pr.echoed
                tr.close()
                await pr.lost
                return gone, echoed

        return run(loop, main())

    gone, echoed = compare(scenario)
    assert gone == []  # the half-handshake never reached connection_made
    assert echoed == b"still serving"


def test_failed_server_handshakes_reported_in_debug_mode(compare, certs):
    # In debug mode (only), a TLS server reports each handshake that failed to the
    # loop's exception handler: the message, the exception, and the protocol and
    # transport made for the connection. Two failures whose cause does not depend on
    # timing: a plain-text HTTP request, and half a ClientHello followed by EOF.
    def scenario(loop):
        reported = []

        def handler(loop, context):
            reported.append(
                (
                    context["message"],
                    exc_info_tuple(context.get("exception")),
                    sorted(context),
                    type(context.get("protocol")).__name__,
                    type(context.get("transport")).__name__,
                )
            )

        loop.set_exception_handler(handler)

        async def main():
            server, _ = await tls_server(loop, Served(loop), certs)
            async with server:
                addr = server.sockets[0].getsockname()
                triggers = (b"GET / HTTP/1.0\r\n\r\n", "half-hello")
                for count, send in enumerate(triggers, 1):
                    sock = socket.socket()
                    sock.setblocking(False)
                    with sock:
                        await loop.sock_connect(sock, addr)
                        if send == "half-hello":
                            raw = RawTLS(
                                loop, sock, client_context(certs), server_side=False
                            )
                            try:
                                raw.obj.do_handshake()
                            except ssl.SSLWantReadError:
                                pass
                            send = raw.outgoing.read()[:40]
                        await loop.sock_sendall(sock, send)
                        await spin(0.02)
                    # Closed: the server waiting for the rest of the hello sees EOF.
                    await until(lambda count=count: len(reported) == count)
            return reported

        return run(loop, main())

    reported = compare(scenario, debug=True)
    assert [(message, exc[0]) for message, exc, *_ in reported] == [
        ("Error on transport creation for incoming connection", ssl.SSLError),
        ("Error on transport creation for incoming connection", ConnectionResetError),
    ]
    assert reported[0][2] == ["exception", "message", "protocol", "transport"]
    assert reported[0][3:] == ("Recorder", "_SSLProtocolTransport")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ssl_shutdown_timeout is 3.11+")
def test_shutdown_timeout(compare, certs):
    # The server's application does not read, so its TLS layer never answers the
    # client's close_notify: the client's close() gives up after ssl_shutdown_timeout,
    # and connection_lost gets asyncio's TimeoutError.
    def scenario(loop):
        served = Served(loop)

        async def main():
            server, connect = await tls_server(loop, served, certs)
            async with server:
                tr, pr = await connect(lambda: Recorder(loop), ssl_shutdown_timeout=0.3)
                await until(lambda: served.connected)
                (peer,) = served.connected
                peer.transport.pause_reading()
                start = time.monotonic()
                tr.close()
                exc = await pr.lost
                elapsed = time.monotonic() - start
                peer.transport.resume_reading()  # the server sees the end (see above)
                await peer.lost
            # Generous upper bound: a shared 2-core VM may be slow, but not 5 s slow.
            return exc_info_tuple(exc), pr.lost_calls == [exc], 0.28 <= elapsed < 5

        return run(loop, main())

    assert compare(scenario) == ((TimeoutError, "SSL shutdown timed out"), True, True)


@pytest.mark.parametrize(
    "close_notify", [False, True], ids=["no-close-notify", "close-notify"]
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_peer_closes_after_handshake(compare, certs, side, close_notify):
    # The raw peer finishes the handshake, sends one message, then either half-closes
    # the TCP connection without a close_notify alert (a truncation attack, or a sloppy
    # peer) or sends close_notify first; it then reads until the loop's side closes.
    # What the loop's protocol sees (data, eof_received, connection_lost's argument)
    # must be asyncio's.
    def scenario(loop):
        async def raw_peer(sock, ctx, server_side):
            raw = RawTLS(
                loop, sock, ctx, server_side=server_side, server_hostname="localhost"
            )
            await raw.handshake()
            await raw.send(b"last words")
            if close_notify:
                await raw.send_close_notify()
            sock.shutdown(socket.SHUT_WR)
            return await raw.drain_until_eof()

        async def main():
            if side == "client":
                # The loop's client against a raw TLS server.
                lsn = raw_listener()
                with lsn:

                    async def raw_server():
                        conn, _ = await loop.sock_accept(lsn)
                        with conn:
                            return await raw_peer(conn, server_context(certs), True)

                    # Started first: create_connection returns after the handshake.
                    peer = asyncio.ensure_future(raw_server())
                    _, pr = await loop.create_connection(
                        lambda: Recorder(loop),
                        *lsn.getsockname(),
                        ssl=client_context(certs),
                        server_hostname="localhost",
                    )
                    ending = await peer
            else:
                # The loop's server against a raw TLS client.
                served = Served(loop)
                server, _ = await tls_server(loop, served, certs)
                async with server:
                    sock = socket.socket()
                    sock.setblocking(False)
                    with sock:
                        await loop.sock_connect(sock, server.sockets[0].getsockname())
                        ending = await raw_peer(sock, client_context(certs), False)
                    (pr,) = served.made
            exc = await pr.lost
            await spin(0.02)
            return bytes(pr.data), pr.eofs, pr.lost_calls, exc_info_tuple(exc), ending

        return run(loop, main())

    data, _, lost_calls, _, ending = compare(scenario)
    # Whether eof_received is called depends on the Python version (3.9/3.10's
    # SSLProtocol skips it after a close_notify; 3.11+ calls it in every case here):
    # compare checks it. A missing close_notify is not reported as an error anywhere.
    assert data == b"last words"
    assert lost_calls == [None]
    assert ending == "eof"  # the loop's side closed the connection in the end


# ------------------------------------------------------------------- abort / cancel


def test_abort_during_handshake(compare, certs):
    # start_tls on a plain connection to a server that never answers; the plain
    # transport is aborted while the handshake waits. Then the same with
    # create_connection cancelled by a timeout. Neither reaches the loop's exception
    # handler (compare fails the test if it is called); the server sees EOF each time.
    def scenario(loop):
        async def main():
            lsn = raw_listener()
            results = []
            with lsn:
                addr = lsn.getsockname()
                accepted = asyncio.ensure_future(loop.sock_accept(lsn))
                tr, pr = await loop.create_connection(lambda: Recorder(loop), *addr)
                conn, _ = await accepted
                with conn:
                    upgrade = asyncio.ensure_future(
                        loop.start_tls(
                            tr, pr, client_context(certs), server_hostname="localhost"
                        )
                    )
                    hello = await loop.sock_recv(conn, 65536)
                    tr.abort()
                    try:
                        results.append(("start_tls", "ok", await upgrade))
                    except Exception as exc:  # noqa: BLE001 - compared with asyncio
                        results.append(("start_tls", describe(exc)))
                    results.append((hello[:1], await loop.sock_recv(conn, 65536)))
                    await spin(0.02)
                    results.append(("plain protocol", pr.lost_calls, tr.is_closing()))

                accepted = asyncio.ensure_future(loop.sock_accept(lsn))
                connecting = loop.create_connection(
                    asyncio.Protocol,
                    *addr,
                    ssl=client_context(certs),
                    server_hostname="localhost",
                )
                try:
                    await asyncio.wait_for(connecting, 0.2)
                except asyncio.TimeoutError as exc:
                    results.append(("create_connection", type(exc)))
                conn, _ = await accepted
                with conn:
                    hello = await loop.sock_recv(conn, 65536)
                    results.append((hello[:1], await loop.sock_recv(conn, 65536)))
            return results

        return run(loop, main())

    results = compare(scenario)
    # asyncio's start_tls() does not raise when the connection is lost during the
    # handshake: it returns None (the lost SSLProtocol's app transport), and the plain
    # protocol, replaced by the SSLProtocol, hears nothing (3.9 to 3.13 alike).
    assert results[0] == ("start_tls", "ok", None)
    assert results[2] == ("plain protocol", [], True)
    assert results[3] == ("create_connection", asyncio.TimeoutError)
    # Each time the server got a ClientHello, then EOF: the socket was really closed.
    assert results[1] == results[4] == (b"\x16", b"")


class TLSClientRecorder(Recorder):
    """Writes a burst as soon as it is connected (so that close() has data to flush)."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(b"x" * 200_000)


@pytest.mark.parametrize("when", ["abort-after-close", "close-then-abort-later"])
def test_abort_during_shutdown(compare, certs, when):
    # close() starts the TLS shutdown (flush, close_notify, wait for the peer's);
    # abort() right after (or a little later, while the peer has not answered) must
    # end the connection at once: connection_lost exactly once, with None, and no
    # exception handler call on either side.
    def scenario(loop):
        served = Served(loop)

        async def main():
            server, connect = await tls_server(loop, served, certs)
            async with server:
                tr, pr = await connect(lambda: TLSClientRecorder(loop))
                await until(lambda: served.connected)
                (peer,) = served.connected
                if when == "abort-after-close":
                    tr.close()
                    tr.abort()
                else:
                    # The server does not read, so it never answers our close_notify:
                    # the client waits in its shutdown when abort() comes.
                    peer.transport.pause_reading()
                    tr.close()
                    await spin(0.05)
                    tr.abort()
                tr.abort()  # idempotent
                exc = await pr.lost
                await spin(0.05)
                # A TLS transport whose protocol paused reading keeps the connection
                # open at EOF (asyncio's SSLProtocol.eof_received returns True then):
                # resume, so that the server sees the end.
                if when == "close-then-abort-later":
                    peer.transport.resume_reading()
                peer_lost = await peer.lost
                return (
                    exc,
                    pr.lost_calls,
                    tr.is_closing(),
                    len(peer.lost_calls),
                    # What the server received and how it ended may depend on timing (how
                    # much of the burst got through before the abort): only its type.
                    peer_lost is None or isinstance(peer_lost, ConnectionError),
                )

        return run(loop, main())

    exc, lost_calls, closing, peer_lost_calls, peer_ok = compare(scenario)
    assert exc is None and lost_calls == [None]
    assert closing
    assert peer_lost_calls == 1 and peer_ok
