"""The low-level ``loop.sock_*`` coroutines on TCP, Unix and UDP sockets.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys

import pytest

from looptest_net import MB, run, spin


def nonblocking(*socks):
    for s in socks:
        s.setblocking(False)
    return socks


def listening_socket(family, tmp_path):
    if family == "tcp":
        lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsn.bind(("127.0.0.1", 0))
    else:
        path = str(tmp_path / "l.sock")
        assert len(path) < 100, path
        lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsn.bind(path)
    lsn.listen(8)
    lsn.setblocking(False)
    return lsn


async def recv_exactly(loop, sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.fixture(params=["tcp", "unix"])
def family(request):
    return request.param


# ------------------------------------------------------------ stream sockets


def test_connect_accept_sendall_recv(loop, family, tmp_path):
    async def main():
        with listening_socket(family, tmp_path) as lsn:
            client = socket.socket(lsn.family, socket.SOCK_STREAM)
            client.setblocking(False)
            with client:
                accept = asyncio.ensure_future(loop.sock_accept(lsn))
                await spin(0.01)
                assert not accept.done()  # waits for a connection
                connected = await loop.sock_connect(client, lsn.getsockname())
                conn, addr = await accept
                with conn:
                    res = {
                        "connect-result": connected,
                        "conn-nonblocking": conn.gettimeout() == 0,
                        "addr": addr == client.getsockname(),
                    }
                    res["sendall-result"] = await loop.sock_sendall(client, b"hello ")
                    await loop.sock_sendall(client, bytearray(b"world"))
                    res["recv"] = await recv_exactly(loop, conn, 11)
                    await loop.sock_sendall(conn, memoryview(b"-reply-")[1:6])
                    buf = bytearray(16)
                    n = 0
                    while n < 5:
                        n += await loop.sock_recv_into(client, memoryview(buf)[n:])
                    res["recv_into"] = bytes(buf[:n])
                    recv_later = asyncio.ensure_future(loop.sock_recv(conn, 100))
                    await spin(0.01)
                    res["recv-waits"] = not recv_later.done()
                    client.shutdown(socket.SHUT_WR)
                    res["eof"] = await recv_later
                    res["eof-into"] = await loop.sock_recv_into(conn, bytearray(4))
                    return res

    assert run(loop, main()) == {
        "connect-result": None,
        "conn-nonblocking": True,
        "addr": True,
        "sendall-result": None,
        "recv": b"hello world",
        "recv_into": b"reply",
        "recv-waits": True,
        "eof": b"",
        "eof-into": 0,
    }


def test_sendall_5mb_to_slow_reader(loop):
    payload = os.urandom(5 * MB)

    async def main():
        a, b = nonblocking(*socket.socketpair())
        with a, b:

            async def slow_reader():
                digest, total = hashlib.sha256(), 0
                while True:
                    data = await loop.sock_recv(b, 64 * 1024)
                    if not data:
                        return digest.hexdigest(), total
                    digest.update(data)
                    total += len(data)
                    await asyncio.sleep(0.0005)

            async def writer():
                await loop.sock_sendall(a, payload)
                writer_fd_registered = loop.remove_writer(a.fileno())
                a.shutdown(socket.SHUT_WR)
                return writer_fd_registered

            registered, (digest, total) = await asyncio.gather(writer(), slow_reader())
            return registered, digest, total

    registered, digest, total = run(loop, main())
    assert registered is False  # sock_sendall removed its writer when done
    assert total == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()


def test_cancelled_sock_recv_leaves_no_reader(loop):
    async def main():
        a, b = nonblocking(*socket.socketpair())
        fd = a.fileno()
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await spin(0.01)
        assert not task.done()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        res = {"cancelled": task.cancelled(), "reader-left": loop.remove_reader(fd)}
        b.send(b"for the next reader")
        await spin(0.01)
        # The cancelled wait did not consume the data.
        res["next-recv"] = await loop.sock_recv(a, 100)
        a.close()
        b.close()

        c, d = nonblocking(*socket.socketpair())  # fds are reused lowest-first
        with c, d:
            res["fd-reused"] = fd in (c.fileno(), d.fileno())
            new_task = asyncio.ensure_future(loop.sock_recv(c, 100))
            await spin(0.01)
            d.send(b"new socket data")
            res["new-recv"] = await new_task
            res["new-reader-left"] = loop.remove_reader(c.fileno())
        return res

    res = run(loop, main())
    res.pop("fd-reused")  # informative only: data must be right either way
    assert res == {
        "cancelled": True,
        "reader-left": False,
        "next-recv": b"for the next reader",
        "new-recv": b"new socket data",
        "new-reader-left": False,
    }


def test_cancelled_sock_recv_keeps_a_newer_reader(loop):
    # The fd gets a new reader (add_reader) before the cancelled wait cleans up:
    # that cleanup must not remove the newer registration.
    async def main():
        a, b = nonblocking(*socket.socketpair())
        with a, b:
            old = asyncio.ensure_future(loop.sock_recv(a, 100))
            await spin(0.01)
            got = loop.create_future()
            old.cancel()
            loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(100)))
            try:
                await old
            except asyncio.CancelledError:
                pass
            await spin(0.01)
            b.send(b"for the new reader")
            data = await got
            return old.cancelled(), data, loop.remove_reader(a.fileno())

    assert run(loop, main()) == (True, b"for the new reader", True)


def test_cancelled_sock_sendall_leaves_no_writer(loop):
    async def main():
        a, b = nonblocking(*socket.socketpair())
        with a, b:
            task = asyncio.ensure_future(loop.sock_sendall(a, b"z" * (8 * MB)))
            await spin(0.01)
            assert not task.done()  # nobody reads: it waits for the socket
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return task.cancelled(), loop.remove_writer(a.fileno())

    assert run(loop, main()) == (True, False)


def test_cancelled_sock_accept_leaves_no_reader(loop, tmp_path):
    async def main():
        with listening_socket("tcp", tmp_path) as lsn:
            task = asyncio.ensure_future(loop.sock_accept(lsn))
            await spin(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            left = loop.remove_reader(lsn.fileno())
            client = socket.socket()
            client.setblocking(False)
            with client:
                await loop.sock_connect(client, lsn.getsockname())
                conn, _ = await loop.sock_accept(lsn)
                conn.close()
            return task.cancelled(), left

    assert run(loop, main()) == (True, False)


def test_sock_connect_refused(compare):
    def scenario(loop):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]

        async def main():
            with socket.socket() as s:
                s.setblocking(False)
                try:
                    await loop.sock_connect(s, ("127.0.0.1", port))
                except OSError as exc:
                    return type(exc), exc.errno, str(exc).replace(str(port), "PORT")
                return "connected"

        return run(loop, main())

    assert compare(scenario) == (
        ConnectionRefusedError,
        111,
        "[Errno 111] Connect call failed ('127.0.0.1', PORT)",
    )


def test_sock_connect_unix_missing_path(compare, tmp_path):
    def scenario(loop):
        async def main():
            with socket.socket(socket.AF_UNIX) as s:
                s.setblocking(False)
                try:
                    await loop.sock_connect(s, str(tmp_path / "missing.sock"))
                except OSError as exc:
                    return type(exc), exc.errno
                return "connected"

        return run(loop, main())

    assert compare(scenario) == (FileNotFoundError, 2)


def test_sock_sendall_to_closed_peer(compare):
    def scenario(loop):
        async def main():
            a, b = nonblocking(*socket.socketpair())
            b.close()
            with a:
                try:
                    await loop.sock_sendall(a, b"x" * MB)
                except OSError as exc:
                    return type(exc), exc.errno
                return "sent"

        return run(loop, main())

    assert compare(scenario) == (BrokenPipeError, 32)



def test_sock_recv_and_sendall_edge_cases(compare):
    # The cases the Rust fast path of sock_recv/sock_sendall must answer as asyncio does.
    def scenario(loop):
        async def main():
            a, b = nonblocking(*socket.socketpair())
            out = {}
            with a, b:
                out["recv 0"] = await loop.sock_recv(a, 0)
                try:
                    await loop.sock_recv(a, -1)
                except ValueError as exc:
                    out["recv -1"] = str(exc)
                await loop.sock_sendall(b, b"")
                await loop.sock_sendall(b, bytearray(b"bytearray,"))
                await loop.sock_sendall(b, memoryview(b"memoryview,"))
                await loop.sock_sendall(b, b"bytes")
                out["data"] = await recv_exactly(loop, a, 26)
                b.shutdown(socket.SHUT_WR)
                out["at eof"] = await loop.sock_recv(a, 10)
            for name, call in (("recv", loop.sock_recv(a, 10)),
                               ("sendall", loop.sock_sendall(a, b"x"))):
                try:
                    await call
                except OSError as exc:
                    out[f"{name} on a closed socket"] = (type(exc).__name__, exc.errno)
            return out

        return run(loop, main())

    assert compare(scenario) == {
        "recv 0": b"",
        "recv -1": "negative buffersize in recv",
        "data": b"bytearray,memoryview,bytes",
        "at eof": b"",
        "recv on a closed socket": ("OSError", 9),
        "sendall on a closed socket": ("OSError", 9),
    }

_BLOCKING_CALLS = {
    "sock_recv": lambda loop, s: loop.sock_recv(s, 1),
    "sock_recv_into": lambda loop, s: loop.sock_recv_into(s, bytearray(1)),
    "sock_sendall": lambda loop, s: loop.sock_sendall(s, b"x"),
    "sock_connect": lambda loop, s: loop.sock_connect(s, ("127.0.0.1", 1)),
    "sock_accept": lambda loop, s: loop.sock_accept(s),
}


@pytest.mark.parametrize("method", sorted(_BLOCKING_CALLS))
def test_blocking_socket_rejected_in_debug_mode(compare, method):
    def scenario(loop):
        async def main():
            with socket.socket() as s:  # blocking (timeout None)
                try:
                    await _BLOCKING_CALLS[method](loop, s)
                except ValueError as exc:
                    return type(exc), str(exc)
                return "accepted"

        return run(loop, main())

    assert compare(scenario, debug=True) == (ValueError, "the socket must be non-blocking")


# ---------------------------------------------------------------------- UDP

needs_sock_recvfrom = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio has sock_recvfrom/sock_sendto since 3.11"
)


@needs_sock_recvfrom
def test_udp_sock_sendto_recvfrom(loop):
    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a, b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            nonblocking(a, b)
            a_addr, b_addr = a.getsockname(), b.getsockname()
            res = {}
            pending = asyncio.ensure_future(loop.sock_recvfrom(b, 1024))
            await spin(0.01)
            res["recvfrom-waits"] = not pending.done()
            res["sendto"] = await loop.sock_sendto(a, b"first datagram", b_addr)
            res["recvfrom"] = await pending
            await loop.sock_sendto(a, bytearray(b"second"), b_addr)
            await loop.sock_sendto(a, memoryview(b"third!"), b_addr)
            buf = bytearray(64)
            n, addr = await loop.sock_recvfrom_into(b, buf)
            res["recvfrom_into"] = (bytes(buf[:n]), addr)
            n, addr = await loop.sock_recvfrom_into(b, buf, 3)  # truncated datagram
            res["recvfrom_into-nbytes"] = (n, bytes(buf[:n]), addr)
            await loop.sock_sendto(b, b"back", a_addr)
            res["reply"] = await loop.sock_recvfrom(a, 2)  # truncated too
            res["readers-left"] = (loop.remove_reader(a.fileno()), loop.remove_reader(b.fileno()))
            return res, a_addr, b_addr

    res, a_addr, b_addr = run(loop, main())
    assert res == {
        "recvfrom-waits": True,
        "sendto": len(b"first datagram"),
        "recvfrom": (b"first datagram", a_addr),
        "recvfrom_into": (b"second", a_addr),
        "recvfrom_into-nbytes": (3, b"thi", a_addr),
        "reply": (b"ba", b_addr),
        "readers-left": (False, False),
    }


@needs_sock_recvfrom
def test_udp_cancelled_recvfrom_leaves_no_reader(loop):
    async def main():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            task = asyncio.ensure_future(loop.sock_recvfrom(s, 100))
            await spin(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return task.cancelled(), loop.remove_reader(s.fileno())

    assert run(loop, main()) == (True, False)
