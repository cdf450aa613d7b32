"""``loop.stats()`` (ferroloop only: stock asyncio has no such API).

The counters are checked against what the test scheduled, the times against what the
test slept and spun, and the structural counts against the loop's own queues.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

ferroloop = pytest.importorskip("ferroloop")


@pytest.fixture
def loop():
    loop = ferroloop.new_event_loop()
    yield loop
    loop.close()


def test_callbacks_and_iterations_count_what_was_scheduled(loop):
    before = loop.stats()
    for _ in range(250):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    after = loop.stats()
    assert after["callbacks"] - before["callbacks"] == 251
    assert after["iterations"] - before["iterations"] == 1  # all were ready at once


def test_each_chained_callback_is_its_own_iteration(loop):
    remaining = [20]

    def step():
        remaining[0] -= 1
        if remaining[0]:
            loop.call_soon(step)
        else:
            loop.stop()

    before = loop.stats()
    loop.call_soon(step)
    loop.run_forever()
    after = loop.stats()
    assert after["callbacks"] - before["callbacks"] == 20
    assert after["iterations"] - before["iterations"] == 20


def test_polling_and_busy_time_add_up(loop):
    async def main():
        await asyncio.sleep(0.2)  # idle: polling
        end = time.monotonic() + 0.15
        while time.monotonic() < end:  # busy in a task step
            pass

    loop.run_until_complete(main())
    stats = loop.stats()
    assert 0.19 <= stats["polling_seconds"] <= stats["running_seconds"]
    assert stats["busy_seconds"] >= 0.14
    assert stats["running_seconds"] == pytest.approx(
        stats["polling_seconds"] + stats["busy_seconds"]
    )


def test_pending_sock_calls_count_as_readers_and_writers(loop):
    def sides():
        stats = loop.stats()
        return stats["readers"], stats["writers"]

    async def main():
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        for s in (a, b, c, d):
            s.setblocking(False)
        with a, b, c, d:
            seen = [sides()]
            recv = asyncio.ensure_future(loop.sock_recv(a, 10))  # nothing sent to a yet
            # Nobody reads d: a large sendall on c must wait for the socket.
            send = asyncio.ensure_future(loop.sock_sendall(c, b"y" * (8 << 20)))
            await asyncio.sleep(0.01)
            seen.append(sides())
            send.cancel()
            b.send(b"x" * 10)
            assert await recv == b"x" * 10
            await asyncio.gather(send, return_exceptions=True)
            seen.append(sides())
        return seen

    assert loop.run_until_complete(main()) == [(0, 0), (1, 1), (0, 0)]


def test_structural_counts(loop):
    a, b = socket.socketpair()
    with a, b:
        loop.add_reader(a.fileno(), lambda: None)
        loop.add_writer(a.fileno(), lambda: None)
        loop.add_writer(b.fileno(), lambda: None)
        timers = [loop.call_later(100, lambda: None) for _ in range(3)]
        timers[0].cancel()
        loop.call_soon(lambda: None)
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        try:
            stats = loop.stats()
            assert stats["ready"] == 1
            assert (stats["timers"], stats["cancelled_timers"]) == (3, 1)
            assert stats["watched_fds"] == 3  # a, b and the signal wake-up pipe
            assert (stats["readers"], stats["writers"]) == (1, 2)  # not the signal pipe
            assert stats["signal_handlers"] == 1
            assert stats["transports"] == 0
            assert (stats["pipe_transports"], stats["subprocess_transports"]) == (0, 0)
            assert stats["blocking_threshold"] is None
        finally:
            loop.remove_signal_handler(signal.SIGUSR2)
            loop.remove_reader(a.fileno())
            loop.remove_writer(a.fileno())
            loop.remove_writer(b.fileno())
        assert (loop.stats()["readers"], loop.stats()["writers"]) == (0, 0)

    def pipes_and_children():
        stats = loop.stats()
        return stats["pipe_transports"], stats["subprocess_transports"]

    async def main():
        seen = [pipes_and_children()]
        # Two pipes, so that closing one transport does not end the other one.
        read_end, keep_writing = os.pipe()
        keep_reading, write_end = os.pipe()
        reader, _ = await loop.connect_read_pipe(asyncio.Protocol, open(read_end, "rb", 0))
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, open(write_end, "wb", 0))
        # A child with two pipes: one more subprocess transport, two more pipe transports.
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        seen.append(pipes_and_children())
        reader.close()  # closing: no longer counted
        seen.append(pipes_and_children())
        proc.stdin.close()  # cat sees EOF and exits; its stdout pipe is closed at EOF
        await proc.stdout.read()
        await proc.wait()
        seen.append(pipes_and_children())
        writer.close()
        seen.append(pipes_and_children())
        await asyncio.sleep(0)
        os.close(keep_writing)
        os.close(keep_reading)
        return seen

    assert loop.run_until_complete(main()) == [(0, 0), (4, 1), (3, 1), (1, 0), (0, 0)]


def test_transports_and_threshold_are_reported(loop):
    async def main():
        a, b = socket.socketpair()
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        loop.set_blocking_threshold(0.5)
        stats = loop.stats()
        tr.close()
        b.close()
        loop.set_blocking_threshold(None)
        return stats["transports"], stats["blocking_threshold"]

    assert loop.run_until_complete(main()) == (1, 0.5)


def test_servers_and_their_listening_sockets(loop):
    def counts():
        stats = loop.stats()
        return stats["servers"], stats["listening_sockets"]

    async def main():
        seen = [counts()]
        # One server on two addresses: two listening sockets.
        one = await loop.create_server(asyncio.Protocol, ["127.0.0.1", "127.0.0.2"], 0)
        two_socks = [socket.socket(), socket.socket()]
        for sock in two_socks:
            sock.bind(("127.0.0.1", 0))
        two = await loop.create_server(asyncio.Protocol, sock=two_socks[0])
        three = await loop.create_server(asyncio.Protocol, sock=two_socks[1])
        seen.append(counts())
        one.close()
        await one.wait_closed()
        seen.append(counts())
        for server in (two, three):
            server.close()
            await server.wait_closed()
        seen.append(counts())
        return seen

    assert loop.run_until_complete(main()) == [(0, 0), (3, 4), (2, 2), (0, 0)]


def test_stats_from_another_thread_while_running(loop):
    import threading

    seen = []

    def read():
        seen.append(loop.stats())

    async def main():
        t = threading.Thread(target=read)
        t.start()
        await loop.run_in_executor(None, t.join)

    loop.run_until_complete(main())
    assert seen and seen[0]["running_seconds"] > 0
