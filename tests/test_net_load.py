"""Stream transports under load: bulk data both ways at once, thousands of connections.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``). What is checked is completeness and order (every byte, by hash),
that flow control balances (each ``pause_writing`` has its ``resume_writing``), and
that no fd is left open afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import resource
import socket
import time

import pytest

from looptest_net import MB, BulkPeer, EchoProtocol, LineClient, run, unix_path
from looptest_support import open_fd_count

CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def payloads():
    """Two different 100 MB payloads (one per direction) and their digests."""
    up, down = os.urandom(100 * MB), os.urandom(100 * MB)
    return up, down, hashlib.sha256(up).hexdigest(), hashlib.sha256(down).hexdigest()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_100mb_each_way_at_once(loop, kind, tmp_path, payloads):
    # Client and server each send their own 100 MB while receiving the other's: both
    # directions are full at the same time, both sides get paused and resumed.
    up, down, up_hash, down_hash = payloads
    served = []

    def server_peer():
        served.append(BulkPeer(loop, down, expect=len(up), half_close=True))
        return served[-1]

    def client_peer():
        return BulkPeer(loop, up, expect=len(down), half_close=True)

    async def main():
        if kind == "tcp":
            server = await loop.create_server(server_peer, "127.0.0.1", 0)
            addr = server.sockets[0].getsockname()
            connect = loop.create_connection(client_peer, *addr)
        else:
            path = unix_path(tmp_path)
            server = await loop.create_unix_server(server_peer, path)
            connect = loop.create_unix_connection(client_peer, path)
        async with server:
            transport, client = await connect
            await asyncio.gather(client.eof, client.sent)
            (peer,) = served
            await asyncio.gather(peer.eof, peer.sent)
            transport.close()
            peer.transport.close()
            return client, peer, await client.lost, await peer.lost

    client, peer, client_exc, peer_exc = run(loop, main(), timeout=120)
    assert (client_exc, peer_exc) == (None, None)
    assert (client.received, peer.received) == (len(down), len(up))
    assert client.digest.hexdigest() == down_hash
    assert peer.digest.hexdigest() == up_hash
    # 100 MB cannot fit in the kernel's buffers: both sides had to wait for the other.
    assert client.pauses > 0 and peer.pauses > 0
    assert (client.pauses, peer.pauses) == (client.resumes, peer.resumes)


# -------------------------------------------------------- thousands of connections

CONNECTIONS = 5000


class CountingEcho(EchoProtocol):
    """The echo server's protocol, counting the connections open at the same time."""

    open_now = 0
    most_open = 0

    def connection_made(self, transport):
        super().connection_made(transport)
        cls = CountingEcho
        cls.open_now += 1
        cls.most_open = max(cls.most_open, cls.open_now)

    def connection_lost(self, exc):
        CountingEcho.open_now -= 1


@pytest.fixture
def fd_room():
    """Room for both ends of every connection in this one process (soft RLIMIT_NOFILE)."""
    need = 2 * CONNECTIONS + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} fds and the hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_5000_concurrent_connections_to_one_server(loop, fd_room):
    CountingEcho.open_now = CountingEcho.most_open = 0

    async def main():
        server = await loop.create_server(CountingEcho, "127.0.0.1", 0, backlog=1024)
        addr = server.sockets[0].getsockname()
        # Connect in waves of at most 500 pending connects: more than the listen backlog
        # at once would only measure SYN retransmission timers.
        connecting = asyncio.Semaphore(500)

        async def connect(i):
            async with connecting:
                line = b"connection %d\n" % i
                return await loop.create_connection(
                    lambda: LineClient(loop, line), *addr
                )

        clients = await asyncio.gather(*(connect(i) for i in range(CONNECTIONS)))
        # Every connection is open now (each sent its line when it connected), and each
        # gets its own bytes back.
        echoed = await asyncio.gather(*(client.echoed for _, client in clients))
        assert echoed == [client.line for _, client in clients]
        most_open = CountingEcho.most_open
        for transport, _ in clients:
            transport.close()
        lost = await asyncio.gather(*(client.lost for _, client in clients))
        server.close()
        await server.wait_closed()
        while CountingEcho.open_now:  # the server side sees the closes a little later
            await asyncio.sleep(0.01)
        return most_open, lost

    gc.collect()
    before = open_fd_count()
    most_open, lost = run(loop, main(), timeout=120)
    assert most_open == CONNECTIONS
    assert lost == [None] * CONNECTIONS
    gc.collect()
    assert open_fd_count() == before


# ------------------------------------------------------------------ out of fds


@pytest.fixture
def fd_exhaustion():
    """``(exhaust, release)``: ``exhaust()`` uses up every fd number the process may open
    (new fds take the lowest free number: it fills the holes below the highest open fd
    and makes that the soft RLIMIT_NOFILE); ``release()`` gives them and the limit back
    (also done when the test ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []

    def exhaust():
        top = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                return

    def release():
        while fillers:
            os.close(fillers.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    yield exhaust, release
    release()


def test_accept_backs_off_on_emfile_then_accepts(
    loop, loop_impl, loop_errors, fd_exhaustion
):
    # Connections wait in the listen backlog while accept() fails with EMFILE: the server
    # reports it once, stops watching the listening socket (no busy loop on a socket
    # that stays readable), and accepts them all once fds are free again.
    exhaust, release = fd_exhaustion
    CountingEcho.open_now = CountingEcho.most_open = 0

    async def main():
        server = await loop.create_server(CountingEcho, "127.0.0.1", 0)
        clients = [
            socket.create_connection(server.sockets[0].getsockname()) for _ in range(3)
        ]
        exhaust()
        cpu_before = time.process_time()
        await asyncio.sleep(0.3)
        cpu_spent = time.process_time() - cpu_before
        reported = list(loop_errors)
        release()
        while CountingEcho.open_now < len(clients):
            await asyncio.sleep(0.01)
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()
        return cpu_spent, reported

    cpu_spent, reported = run(loop, main())
    loop_errors.clear()
    # ferroloop reports the stall once; asyncio's accept loop goes on after the error and
    # reports it once per backlog slot (100) in the same callback.
    reports = 1 if loop_impl == "ferroloop" else 100
    assert [(ctx["message"], ctx["exception"].errno) for ctx in reported] == [
        ("socket.accept() out of system resource", errno.EMFILE)
    ] * reports
    assert cpu_spent < 0.1, f"the loop spun for {cpu_spent:.3f} s of CPU in 0.3 s"
