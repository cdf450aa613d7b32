"""Helpers of the monitor tests (``test_monitor.py``, ``test_monitor_clients.py``).

A watched ferroloop loop runs in a thread of the test (``running_loop``); clients are
plain blocking sockets of the test thread, speaking the protocol of the
``ferroloop.monitor`` docs. ``Nest`` puts a known nest of four tasks on such a loop.

The fixtures both modules use are defined at the end (both load this module as a pytest
plugin, ``pytest_plugins``):
``sock_dir`` (a private directory), ``watched`` (a running loop), ``path`` (its
monitor's socket), ``nest`` (a ``Nest`` on it), ``no_logs`` (fails the test if anything
logged a warning or an error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import socket
import tempfile
import logging
import os
import threading

import ferroloop
import pytest
from ferroloop.monitor import MonitorClient


@contextlib.contextmanager
def socket_dir():
    """A new directory for sockets (not pytest's tmp_path: a Unix socket path is at most
    107 bytes)."""
    path = tempfile.mkdtemp(prefix="ferroloop-monitor-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_loop():
    """A ferroloop loop running in a thread; its exception handler must stay unused."""
    loop = ferroloop.new_event_loop()
    handler_calls = []
    loop.set_exception_handler(lambda loop, context: handler_calls.append(context))
    running = threading.Event()
    loop.call_soon(running.set)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert running.wait(10)
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert handler_calls == []


@contextlib.contextmanager
def many_tasks(loop, count):
    """``count`` tasks sleeping on ``loop`` (a ``ps`` answer of megabytes for 2000)."""
    on_loop(loop, lambda: [loop.create_task(asyncio.sleep(60)) for _ in range(count)])
    try:
        yield
    finally:
        on_loop(loop, lambda: [task.cancel() for task in asyncio.all_tasks(loop)])


def on_loop(loop, function, *args):
    """``function(*args)`` called on the loop's thread; its result."""
    result = concurrent.futures.Future()

    def call():
        try:
            result.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.set_exception(exc)

    loop.call_soon_threadsafe(call)
    return result.result(10)


def ask(path, command):
    client = MonitorClient(path)
    try:
        return client.request(command)
    finally:
        client.close()


def read_all(sock):
    """What the monitor sends on ``sock`` until it closes the connection."""
    received = b""
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:  # closed with our request unread: nothing more
            break
        if not chunk:
            break
        received += chunk
    return received


def exchange(path, payload, timeout=5.0):
    """Send ``payload`` on a new connection, read until the monitor closes it: the lines."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    with sock:
        try:
            sock.sendall(payload)
        except BrokenPipeError:
            pass  # closed already: its error line is there to read
        received = read_all(sock)
    return [json.loads(line) for line in received.splitlines()]


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def monitor_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ferroloop-monitor")]


# -- a known nest of tasks ----------------------------------------------------------------


async def grandchild(release, started):
    started.set()
    await release.wait()


async def child_waits(release):
    await release.wait()


async def child_awaits_task(release, started):
    loop = asyncio.get_running_loop()
    await loop.create_task(grandchild(release, started), name="nest-grandchild")


async def nest_root(release, started):
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        loop.create_task(child_waits(release), name="nest-child-1"),
        loop.create_task(child_awaits_task(release, started), name="nest-child-2"),
    )


class Nest:
    """Four tasks on ``loop``: root gathers child-1 and child-2, child-2 awaits grandchild."""

    def __init__(self, loop):
        self.loop = loop
        started = threading.Event()

        def create():
            self.release = asyncio.Event()
            return loop.create_task(nest_root(self.release, started), name="nest-root")

        self.root = on_loop(loop, create)
        assert started.wait(10)

    def finish(self):
        done = concurrent.futures.Future()
        self.root.add_done_callback(lambda task: done.set_result(None))  # on the loop
        self.loop.call_soon_threadsafe(self.release.set)
        done.result(10)


# -- fixtures shared by the monitor test modules ---------------------------------------


@pytest.fixture
def sock_dir():
    with socket_dir() as path:
        yield path


@pytest.fixture
def watched():
    with running_loop() as loop:
        yield loop


@pytest.fixture
def path(watched, sock_dir):
    socket_path = os.path.join(sock_dir, "monitor.sock")
    watched.start_monitor(socket_path)
    return socket_path


@pytest.fixture
def nest(watched):
    tasks = Nest(watched)
    yield tasks
    tasks.finish()


@pytest.fixture
def no_logs(caplog):
    """Fails the test if anything logs a warning or an error (monitor thread included)."""
    caplog.set_level(logging.WARNING)
    yield
    assert [record.getMessage() for record in caplog.records] == []
