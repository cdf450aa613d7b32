"""Servers (create_server, create_unix_server, asyncio.Server), connecting, fd leaks.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import socket

import pytest

from looptest_net import (
    EchoProtocol,
    Recorder,
    echo_handler,
    run,
    spin,
    unix_path,
    until,
)
from looptest_support import open_fd_count


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------- servers


def test_server_close_and_wait_closed(loop):
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        res = [server.is_serving(), len(server.sockets)]
        sock = server.sockets[0]
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        addr = sock.getsockname()
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"ping\n")
        res.append(await reader.readline())
        server.close()  # closes the listening socket at once
        res += [server.is_serving(), server.sockets]
        try:
            await asyncio.open_connection(*addr)
            res.append("connected")
        except ConnectionRefusedError:
            res.append("refused")
        writer.write(b"still\n")  # accepted connections outlive server.close()
        res.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        # (Since Python 3.12 wait_closed() also waits for the accepted connections.)
        await server.wait_closed()
        res.append(server.is_serving())
        return res

    assert run(loop, main()) == [True, 1, b"ping\n", False, (), "refused", b"still\n", False]


def test_server_start_serving_later(loop):
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, start_serving=False)
        addr = server.sockets[0].getsockname()
        res = [server.is_serving()]
        try:  # bound but not listening yet
            await asyncio.open_connection(*addr)
            res.append("connected")
        except ConnectionRefusedError:
            res.append("refused")
        await server.start_serving()
        res.append(server.is_serving())
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"x\n")
        res.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return res

    assert run(loop, main()) == [False, "refused", True, b"x\n"]


def test_server_200_concurrent_clients(loop):
    async def client(addr, i):
        reader, writer = await asyncio.open_connection(*addr)
        msg = f"client {i} says hello\n".encode()
        writer.write(msg)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line == msg

    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, backlog=256)
        async with server:
            addr = server.sockets[0].getsockname()
            return await asyncio.gather(*(client(addr, i) for i in range(200)))

    assert run(loop, main(), timeout=20) == [True] * 200


def test_two_servers_with_reuse_port(loop):
    def handler(name):
        async def handle(reader, writer):
            await reader.readline()
            writer.write(name + b"\n")
            writer.close()
            await writer.wait_closed()

        return handle

    async def main():
        first = await asyncio.start_server(handler(b"A"), "127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        second = await asyncio.start_server(handler(b"B"), "127.0.0.1", port, reuse_port=True)
        async with first, second:
            assert second.sockets[0].getsockname()[1] == port
            answers = []
            for _ in range(16):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"who\n")
                answers.append(await reader.readline())
                writer.close()
                await writer.wait_closed()
            return set(answers) <= {b"A\n", b"B\n"}, len(answers)

    assert run(loop, main()) == (True, 16)


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio leaks the accepted socket
def test_protocol_factory_error_on_accept(compare):

    def scenario(loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        def factory():
            raise ValueError("no protocol for you")

        async def main():
            server = await loop.create_server(factory, "127.0.0.1", 0)
            async with server:
                with socket.socket() as s:
                    s.setblocking(False)
                    await loop.sock_connect(s, server.sockets[0].getsockname())
                    gc.collect()
                    data = await loop.sock_recv(s, 10)
                    await spin(0.01)
                    return data, [(c["message"], type(c.get("exception"))) for c in contexts]

        return run(loop, main())

    assert compare(scenario) == (b"", [])


def test_unix_server_socket_file_after_close(compare, tmp_path):
    def scenario(loop):
        path = unix_path(tmp_path, "srv.sock")
        if os.path.exists(path):
            os.unlink(path)

        async def main():
            server = await loop.create_unix_server(asyncio.Protocol, path)
            before = os.path.exists(path)
            server.close()
            await server.wait_closed()
            return before, os.path.exists(path)

        return run(loop, main())

    assert compare(scenario)[0] is True


# --------------------------------------------------------- connection errors


def test_connection_refused(compare):
    def scenario(loop):
        port = _closed_port()

        async def main():
            res = []
            for connect in (
                lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", port),
                lambda: asyncio.open_connection("127.0.0.1", port),
            ):
                try:
                    await connect()
                    res.append("connected")
                except OSError as exc:
                    res.append((type(exc), exc.errno, str(exc).replace(str(port), "PORT")))
            return res

        return run(loop, main())

    res = compare(scenario)
    assert res[0] == (
        ConnectionRefusedError,
        111,
        "[Errno 111] Connect call failed ('127.0.0.1', PORT)",
    )
    assert res[1] == res[0]


def test_unix_connection_errors(compare, tmp_path):
    def scenario(loop):
        stale = unix_path(tmp_path, "stale.sock")
        if os.path.exists(stale):
            os.unlink(stale)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(stale)  # bound, never listening

        async def main():
            res = []
            for path in (unix_path(tmp_path, "missing.sock"), stale):
                try:
                    await loop.create_unix_connection(asyncio.Protocol, path)
                    res.append("connected")
                except OSError as exc:
                    res.append((type(exc), exc.errno))
            return res

        return run(loop, main())

    assert compare(scenario) == [
        (FileNotFoundError, 2),
        (ConnectionRefusedError, 111),
    ]


# ------------------------------------------------------------------ fd leaks


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_fd_left_open(loop):
    async def round_trip(n):
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        clients = []
        for _ in range(n):
            tr, pr = await loop.create_connection(lambda: Recorder(loop), *addr)
            clients.append((tr, pr))
        for tr, _ in clients:
            tr.write(b"ping")
        for _, pr in clients:
            await until(lambda pr=pr: pr.data == b"ping")
        for tr, _ in clients:
            tr.close()
        for _, pr in clients:
            await pr.lost
        server.close()
        await server.wait_closed()
        await spin(0.02)

    async def settle(before):
        # Closing is asynchronous on the server side too: give it a few iterations.
        for _ in range(100):
            gc.collect()
            if open_fd_count() <= before:
                return
            await asyncio.sleep(0.005)

    run(loop, round_trip(1))  # warm-up: lazily created loop resources
    gc.collect()
    before = open_fd_count()
    run(loop, round_trip(50))
    run(loop, settle(before))
    assert open_fd_count() == before


# ------------------------------------------------------------------ name resolution


def test_getaddrinfo_results_match_asyncio(compare):
    def scenario(loop):
        async def main():
            res = []
            for host, port in [("127.0.0.1", 80), ("::1", "http"), (b"10.1.2.3", None),
                               ("localhost", 8080)]:  # fmt: skip
                res.append(sorted(await loop.getaddrinfo(host, port)))
            res.append(sorted(await loop.getaddrinfo("127.0.0.1", 5, type=socket.SOCK_DGRAM)))
            try:
                await loop.getaddrinfo("127.0.0.1", "no-such-service-name")
            except socket.gaierror as exc:
                res.append(("gaierror", exc.errno))
            return res

        return run(loop, main())

    compare(scenario)


def test_getaddrinfo_of_an_address_literal_skips_the_thread_pool(loop, loop_impl):
    if loop_impl == "asyncio":
        pytest.skip("ferroloop-only: asyncio always resolves in its thread pool")

    class NoThreads(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            raise AssertionError(f"the thread pool was used for {fn!r}")

    async def main():
        loop.set_default_executor(NoThreads())
        v4 = await loop.getaddrinfo("192.0.2.7", 443, type=socket.SOCK_STREAM)
        v6 = await loop.getaddrinfo("2001:db8::1", 443, type=socket.SOCK_STREAM)
        with pytest.raises(AssertionError, match="thread pool"):
            await loop.getaddrinfo("localhost", 443)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        return v4[0][4], v6[0][4][:2]

    assert run(loop, main()) == (("192.0.2.7", 443), ("2001:db8::1", 443))
