"""TLS (``ssl=`` on connections and servers, ``start_tls``) on stock asyncio and
ferroloop: data, upgrades, many connections, transport information, resources.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); where asyncio's exact answer matters the test runs the same scenario
on both loops with ``compare``. The certificates are made once per session with the
``openssl`` command line (``looptest_tls``). Failures (verification, misbehaving peers,
aborts) are in ``test_tls_failures.py``.

Covered:

* data: 10 MB each way at once over TCP and Unix sockets (hashed), a
  ``BufferedProtocol`` on a TLS transport (hashed), flow control with a slow reader
  (each ``pause_writing`` has its ``resume_writing``), ``loop.sendfile`` (asyncio's
  fallback: a TLS transport cannot use ``os.sendfile``), 100 concurrent TLS clients;
* upgrading: STARTTLS in the middle of a plain-text exchange (client
  ``StreamWriter.start_tls``, server ``loop.start_tls``);
* ``get_extra_info`` on TLS transports (both sides, with a client certificate) and ALPN;
* resources: no fd left open after 200 connections, RSS that does not keep growing
  over thousands of connections.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import ssl
import sys
import time

import pytest

from looptest_net import (
    MB,
    BulkPeer,
    EchoProtocol,
    LineClient,
    Recorder,
    run,
    spin,
    until,
)
from looptest_support import open_fd_count
from looptest_tls import (
    CLIENT_CN,
    TLS_TEST_MARKS,
    HashingBuffered,
    Served,
    client_context,
    server_context,
    tls_server,
)

pytest_plugins = ["looptest_tls"]
pytestmark = TLS_TEST_MARKS


# ----------------------------------------------------------------------- bulk data


@pytest.fixture(scope="module")
def payloads():
    """Two different 10 MB payloads (one per direction) and their digests."""
    up, down = os.urandom(10 * MB), os.urandom(10 * MB)
    return up, down, hashlib.sha256(up).hexdigest(), hashlib.sha256(down).hexdigest()


def test_10mb_each_way_at_once(loop, kind, tmp_path, certs, payloads):
    # Both directions are full at the same time: the TLS layer encrypts and decrypts
    # interleaved on each side, and each side's back-pressure must not stall the other.
    up, down, up_hash, down_hash = payloads
    served = []

    def server_peer():
        served.append(BulkPeer(loop, down, expect=len(up)))
        return served[-1]

    async def main():
        server, connect = await tls_server(loop, server_peer, certs, kind, tmp_path)
        async with server:
            transport, client = await connect(
                lambda: BulkPeer(loop, up, expect=len(down))
            )
            (peer,) = served
            await asyncio.gather(client.complete, client.sent, peer.complete, peer.sent)
            # close() sends close_notify: the server's protocol sees EOF and closes too.
            transport.close()
            return client, peer, await client.lost, await peer.lost

    client, peer, client_exc, peer_exc = run(loop, main(), timeout=60)
    assert (client_exc, peer_exc) == (None, None)
    assert (client.received, peer.received) == (len(down), len(up))
    assert client.digest.hexdigest() == down_hash
    assert peer.digest.hexdigest() == up_hash
    assert (client.pauses, peer.pauses) == (client.resumes, peer.resumes)


def test_buffered_protocol_receives_everything(loop, kind, tmp_path, certs, payloads):
    # A BufferedProtocol on top of TLS: SSLProtocol decrypts into the application's
    # buffer (get_buffer/buffer_updated) instead of calling data_received.
    _, down, _, down_hash = payloads
    served = []

    def server_peer():
        served.append(BulkPeer(loop, down, expect=0))
        return served[-1]

    async def main():
        server, connect = await tls_server(loop, server_peer, certs, kind, tmp_path)
        async with server:
            transport, client = await connect(lambda: HashingBuffered(loop, len(down)))
            await asyncio.gather(client.complete, served[0].sent)
            transport.close()
            return client, await client.lost

    client, exc = run(loop, main(), timeout=60)
    assert exc is None
    assert client.received == len(down)
    assert client.digest.hexdigest() == down_hash
    # 8 KB buffers: the data really came through many get_buffer() rounds.
    assert client.get_buffer_calls >= len(down) // (8 * 1024)


class SlowReader(asyncio.Protocol):
    """Server side: does not read at first (pause_reading), hashes what it gets."""

    def __init__(self, loop):
        self.digest = hashlib.sha256()
        self.received = 0
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data):
        self.digest.update(data)
        self.received += len(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_flow_control_with_a_slow_reader(loop, certs):
    # The server does not read until the client has been told to stop writing: the
    # client's TLS transport must pause its protocol, then resume it once the server
    # reads, as often as it paused it; every byte arrives in order.
    payload = os.urandom(24 * MB)  # more than loopback's socket buffers can hold
    served = []

    def server_peer():
        served.append(SlowReader(loop))
        return served[-1]

    async def main():
        server, connect = await tls_server(loop, server_peer, certs)
        async with server:
            transport, client = await connect(lambda: BulkPeer(loop, payload, expect=0))
            (peer,) = served
            # TLS 1.3: the client is done with the handshake first and may fill the
            # socket before the server's protocol is even connected.
            await until(lambda: client.pauses > 0 and peer.transport, timeout=20)
            paused_with = transport.get_write_buffer_size()
            peer.transport.resume_reading()
            await client.sent
            await until(lambda: peer.received == len(payload), timeout=30)
            transport.close()
            return client, peer, paused_with, await client.lost, await peer.lost

    client, peer, paused_with, client_exc, peer_exc = run(loop, main(), timeout=60)
    assert (client_exc, peer_exc) == (None, None)
    high = 64 * 1024  # asyncio's default high-water mark, also the TLS transport's
    assert paused_with > high
    assert client.pauses >= 1 and client.pauses == client.resumes
    assert peer.digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_sendfile_uses_the_fallback(loop, certs, tmp_path):
    # A TLS transport cannot use os.sendfile: loop.sendfile reads the file and writes
    # it through the transport (asyncio's fallback); fallback=False refuses.
    data = os.urandom(3 * MB + 123)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    served = []

    def server_peer():
        served.append(BulkPeer(loop, b"", expect=len(data)))
        return served[-1]

    async def main():
        server, connect = await tls_server(loop, server_peer, certs)
        async with server:
            transport, client = await connect(lambda: Recorder(loop))
            try:
                await loop.sendfile(transport, f, fallback=False)
            except RuntimeError as exc:
                refused = str(exc)
            sent = await loop.sendfile(transport, f)
            position = f.tell()
            await served[0].complete
            transport.write(b"after")  # the transport is usable afterwards
            await until(lambda: served[0].received == len(data) + 5)
            transport.close()
            await client.lost
            return refused, sent, position, served[0].digest.hexdigest()

    with open(path, "rb") as f:
        refused, sent, position, digest = run(loop, main())
    assert refused.startswith(
        "fallback is disabled and native sendfile is not supported"
    )
    assert sent == position == len(data)
    assert digest == hashlib.sha256(data + b"after").hexdigest()


# ---------------------------------------------------------------------- STARTTLS


class StartTLSServer(asyncio.Protocol):
    """Line protocol: echoes lines; on ``STARTTLS`` answers ``GO`` and upgrades the
    connection with ``loop.start_tls(server_side=True)``, then echoes over TLS."""

    def __init__(self, loop, ctx):
        self.loop = loop
        self.ctx = ctx
        self.lines = []
        self.buffer = b""
        self.upgraded = None
        self.early = []  # decrypted lines that arrived before start_tls() returned
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(line)
            if line == b"STARTTLS":
                # Stop reading now: the client's ClientHello must reach the TLS layer,
                # not this plain-text parser.
                self.transport.pause_reading()
                self.transport.write(b"GO\n")
                self.upgraded = asyncio.ensure_future(self._upgrade())
            elif self.upgraded is not None and not self.upgraded.done():
                # SSLProtocol hands over the data that came with the handshake before
                # start_tls() returns the TLS transport: answering on self.transport
                # now would send plain text.
                self.early.append(line + b"\n")
            else:
                self.transport.write(line + b"\n")

    async def _upgrade(self):
        self.transport = await self.loop.start_tls(
            self.transport, self, self.ctx, server_side=True
        )
        for line in self.early:
            self.transport.write(line)
        return self.transport

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="StreamWriter.start_tls is 3.11+"
)
def test_starttls_upgrade_mid_stream(loop, certs):
    served = []

    def server_peer():
        served.append(StartTLSServer(loop, server_context(certs)))
        return served[-1]

    async def main():
        server = await loop.create_server(server_peer, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                *server.sockets[0].getsockname()
            )
            seen = [writer.get_extra_info("ssl_object")]
            writer.write(b"plain hello\n")
            seen.append(await reader.readline())
            writer.write(b"STARTTLS\n")
            seen.append(await reader.readline())
            await writer.start_tls(client_context(certs), server_hostname="localhost")
            client_obj = writer.get_extra_info("ssl_object")
            writer.write(b"secret hello\n")
            seen.append(await reader.readline())
            (peer,) = served
            server_tr = await peer.upgraded
            server_obj = server_tr.get_extra_info("ssl_object")
            seen.append(
                (
                    isinstance(client_obj, ssl.SSLObject),
                    isinstance(server_obj, ssl.SSLObject),
                    client_obj.version() == server_obj.version(),
                    client_obj.server_hostname,
                )
            )
            writer.close()
            await writer.wait_closed()
            seen.append(await peer.lost)
            return seen, peer.lines

    seen, lines = run(loop, main())
    assert seen == [
        None,
        b"plain hello\n",
        b"GO\n",
        b"secret hello\n",
        (True, True, True, "localhost"),
        None,
    ]
    # The server's parser saw exactly the plain-text lines and, after the upgrade, the
    # decrypted ones: no TLS record was taken for a line.
    assert lines == [b"plain hello", b"STARTTLS", b"secret hello"]


# ----------------------------------------------------------- many connections at once


def test_100_concurrent_clients(loop, certs):
    # 100 handshakes in flight at once on one server; each client gets its own bytes.
    async def main():
        server, connect = await tls_server(loop, EchoProtocol, certs)
        async with server:
            lines = [
                b"client %d " % i + os.urandom(64).hex().encode() for i in range(100)
            ]
            clients = await asyncio.gather(
                *(connect(lambda line=line: LineClient(loop, line)) for line in lines)
            )
            echoed = await asyncio.gather(*(client.echoed for _, client in clients))
            for transport, _ in clients:
                transport.close()
            lost = await asyncio.gather(*(client.lost for _, client in clients))
            return echoed == lines, lost

    same, lost = run(loop, main(), timeout=60)
    assert same
    assert lost == [None] * 100


# ------------------------------------------------------------------- extra info, ALPN


EXTRA_KEYS = (
    "sslcontext",
    "ssl_object",
    "peercert",
    "cipher",
    "compression",
    "socket",
    "peername",
    "sockname",
)


def test_get_extra_info(compare, certs):
    # Both ends of one connection, the server requiring a client certificate: each
    # sees the other's certificate, its own context, and the socket's addresses.
    def scenario(loop):
        served = Served(loop)

        def describe_end(transport, ctx):
            extra = {key: transport.get_extra_info(key) for key in EXTRA_KEYS}
            obj, sock = extra["ssl_object"], extra["socket"]
            return {
                "types": {key: type(value).__name__ for key, value in extra.items()},
                "own context": extra["sslcontext"] is ctx,
                "server_side": obj.server_side,
                "peer subject": extra["peercert"]["subject"],
                "version": extra["cipher"][1],
                "cipher is the object's": extra["cipher"] == obj.cipher(),
                "compression": extra["compression"],
                "socket": (sock.family, sock.type),
                "default": transport.get_extra_info("missing", "default"),
            }

        async def main():
            sctx = server_context(certs, require_client_cert=True)
            server, connect = await tls_server(loop, served, certs, ssl=sctx)
            async with server:
                cctx = client_context(certs, client_cert=True)
                tr, pr = await connect(lambda: Recorder(loop), ssl=cctx)
                await until(lambda: served.connected)
                peer_tr = served.connected[0].transport
                ends = {
                    "client": describe_end(tr, cctx),
                    "server": describe_end(peer_tr, sctx),
                    "addresses match": (
                        tr.get_extra_info("sockname")
                        == peer_tr.get_extra_info("peername"),
                        tr.get_extra_info("peername")
                        == peer_tr.get_extra_info("sockname"),
                        tr.get_extra_info("peername")
                        == server.sockets[0].getsockname(),
                    ),
                }
                tr.close()
                await pr.lost
                return ends

        return run(loop, main())

    ends = compare(scenario)
    client, server = ends["client"], ends["server"]
    assert (
        client["types"]
        == server["types"]
        == {
            "sslcontext": "SSLContext",
            "ssl_object": "SSLObject",
            "peercert": "dict",
            "cipher": "tuple",
            "compression": "NoneType",  # OpenSSL 1.1+ never compresses
            "socket": "TransportSocket",
            "peername": "tuple",
            "sockname": "tuple",
        }
    )
    assert client["peer subject"] == ((("commonName", "localhost"),),)
    assert server["peer subject"] == ((("commonName", CLIENT_CN),),)
    assert (client["server_side"], server["server_side"]) == (False, True)
    for end in (client, server):
        assert end["own context"] and end["cipher is the object's"]
        assert end["version"].startswith("TLSv1.")
        assert end["socket"] == (socket.AF_INET, socket.SOCK_STREAM)
        assert end["default"] == "default"
    assert ends["addresses match"] == (True, True, True)


@pytest.mark.parametrize(
    "server_protocols, client_protocols, chosen",
    [
        (["h2", "http/1.1"], ["http/1.1"], "http/1.1"),
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2"], ["spdy/3"], None),  # no overlap: the server does not select any
    ],
    ids=["http1", "h2", "no-overlap"],
)
def test_alpn(compare, certs, server_protocols, client_protocols, chosen):
    def scenario(loop):
        served = Served(loop)

        async def main():
            sctx = server_context(certs)
            sctx.set_alpn_protocols(server_protocols)
            server, connect = await tls_server(loop, served, certs, ssl=sctx)
            async with server:
                cctx = client_context(certs)
                cctx.set_alpn_protocols(client_protocols)
                tr, pr = await connect(lambda: Recorder(loop), ssl=cctx)
                await until(lambda: served.connected)
                chosen = (
                    tr.get_extra_info("ssl_object").selected_alpn_protocol(),
                    served.connected[0]
                    .transport.get_extra_info("ssl_object")
                    .selected_alpn_protocol(),
                )
                tr.close()
                await pr.lost
                return chosen

        return run(loop, main())

    assert compare(scenario) == (chosen, chosen)


# ------------------------------------------------------------------ resources


async def open_and_close(loop, connect, count, concurrency=50):
    """``count`` TLS connections to an echo server, ``concurrency`` at a time: each
    one handshakes, gets one echo, closes (close_notify both ways)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i):
        async with gate:
            tr, pr = await connect(lambda: LineClient(loop, b"ping %d" % i))
            await pr.echoed
            tr.close()
            return await pr.lost

    lost = await asyncio.gather(*(one(i) for i in range(count)))
    assert lost == [None] * count


async def settle_fds(before):
    # Closing is asynchronous on the server side too: give it a few iterations.
    for _ in range(200):
        gc.collect()
        if open_fd_count() <= before:
            return
        await asyncio.sleep(0.005)


def test_no_fd_left_open(loop, certs):
    async def main(count):
        server, connect = await tls_server(loop, EchoProtocol, certs)
        async with server:
            await open_and_close(loop, connect, count)
        await spin(0.02)

    run(loop, main(1))  # warm-up: lazily created loop resources
    gc.collect()
    before = open_fd_count()
    run(loop, main(200), timeout=60)
    run(loop, settle_fds(before))
    assert open_fd_count() == before


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# 10,000 connections take 17-18 s per loop on the 2-core development VM (each one is
# two handshakes, both ends in this process: ~1.7 ms), so 5,000: about 9 s per loop.
MEMORY_WARMUP = 2000
MEMORY_CONNECTIONS = 5000


def test_rss_does_not_grow_with_connections(loop, certs):
    # Open and close 5,000 TLS connections, 50 at a time, and compare the RSS after a
    # warm-up of 2,000 with the RSS at the end. Both loops reach their plateau between
    # 1,000 and 2,000 connections (allocator arenas, OpenSSL's and the loop's caches);
    # after it, 3,000 more connections moved the RSS by 0.5-1.5 MB in a pytest run
    # (asyncio on 3.9, 3.11, 3.13; ferroloop on 3.11), by 0.3 MB at most in a fresh
    # process. What a leak costs, measured by keeping objects alive: a client's
    # SSLObject alone ~60 KB (OpenSSL keeps its buffers), a whole connection (protocol,
    # TLS transport, SSLProtocol with its 256 KB read buffer) ~330 KB. The bound, 8 MB
    # (2.8 KB per connection), is well above the noise and far below either.
    async def main(connect, count):
        await open_and_close(loop, connect, count)
        await spin(0.02)

    async def serve():
        return await tls_server(loop, EchoProtocol, certs)

    server, connect = run(loop, serve())
    try:
        start = time.monotonic()
        run(loop, main(connect, MEMORY_WARMUP), timeout=60)
        gc.collect()
        warm = rss_bytes()
        run(loop, main(connect, MEMORY_CONNECTIONS - MEMORY_WARMUP), timeout=300)
        gc.collect()
        grown = rss_bytes() - warm
        elapsed = time.monotonic() - start
    finally:
        server.close()
        run(loop, server.wait_closed())
    assert grown < 8 * MB, (
        f"RSS grew by {grown / MB:.1f} MB after the warm-up "
        f"({MEMORY_CONNECTIONS} connections in {elapsed:.1f} s)"
    )
