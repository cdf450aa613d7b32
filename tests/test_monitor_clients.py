"""Monitor clients that misbehave (``ferroloop.monitor``; ferroloop only, stock asyncio
has no monitor).

Garbage, invalid and over-long requests, clients that hang up (at once, before their
answer, in the middle of an answer of megabytes), idle clients, clients that do not
read their answers and 100 clients at once (64 served) must each end their own
connection only, with the error line the protocol promises: nothing reaches the watched
loop's exception handler or a log, and the monitor answers the next client. Also: the
4096-byte limit is exact, and one connection may carry several requests.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from ferroloop import monitor
from looptest_monitor import (
    ask,
    exchange,
    many_tasks,
    read_all,
    read_line,
)

# The shared fixtures (sock_dir, watched, path, nest, no_logs).
pytest_plugins = ["looptest_monitor"]


def test_several_requests_on_one_connection(path, nest):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    with sock:
        sock.sendall(b'{"cmd": "stats"}\n{"cmd": "ps"}\n{"cmd": "top"}\n{"cmd": "stats"}\n')
        file = sock.makefile("rb")
        answers = [json.loads(file.readline()) for _ in range(4)]
        file.close()
    assert "iterations" in answers[0] and "iterations" in answers[3]
    assert "nest-root" in answers[1]["text"]
    assert "stats" in answers[2] and "tasks" in answers[2]


NOT_JSON = 'a request is one line of JSON, e.g. {"cmd": "ps"}'
UNKNOWN = "unknown request: \"cmd\" is one of 'ps', 'stats', 'top'"
TOO_LONG = "a request line is at most 4096 bytes long"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x00\xff\xfe garbage\n", NOT_JSON),
        (b"\n", NOT_JSON),
        (b'{"cmd": "ps"\n', NOT_JSON),
        (b"[" * 4000 + b"\n", NOT_JSON),  # nested too deep for the parser
        (b'["ps"]\n', UNKNOWN),
        (b'{"cmd": "kill"}\n', UNKNOWN),
        (b'{"command": "ps"}\n', UNKNOWN),
        (b"x" * 5000, TOO_LONG),
        (b'{"cmd": "ps", "pad": "' + b"x" * 5000 + b'"}\n', TOO_LONG),
        (b'{"cmd": "stats"}\n' + b"y" * 4097 + b"\n", TOO_LONG),  # after a good one
    ],
)
def test_a_bad_request_gets_one_error_line_then_the_connection_closes(
    path, payload, error, no_logs
):
    lines = exchange(path, payload)
    assert lines[-1] == {"error": error}
    assert all("iterations" in line for line in lines[:-1])
    assert "iterations" in ask(path, "stats")


def test_a_request_line_of_4096_bytes_is_accepted(path):
    request = b'{"cmd": "stats", "pad": "'
    request += b"z" * (4096 - len(request) - len(b'"}\n')) + b'"}\n'
    assert len(request) == 4096
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    with sock:
        sock.sendall(request)
        assert "iterations" in read_line(sock)


def test_clients_that_hang_up(path, watched, no_logs):
    for _ in range(50):  # connect and close at once
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.close()
    for command in (b"ps", b"stats", b"top"):  # ask, then leave before the answer
        for _ in range(10):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(b'{"cmd": "' + command + b'"}\n')
            sock.close()
    # Leave in the middle of an answer of megabytes.
    with many_tasks(watched, 2000):
        for _ in range(3):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b'{"cmd": "ps"}\n')
            assert len(sock.recv(1000)) > 0
            sock.close()
        assert len(ask(path, "ps")["tasks"]) == 2000
    time.sleep(0.3)  # let the monitor see the last hang-ups before no_logs looks


def test_an_idle_client_is_dropped(path, monkeypatch, no_logs):
    monkeypatch.setattr(monitor, "IDLE_TIMEOUT", 0.3)
    started = time.monotonic()
    assert exchange(path, b"") == [{"error": "no request for 0.3 s"}]
    assert time.monotonic() - started < 2


def test_a_client_that_does_not_read_its_answers_is_dropped(
    path, watched, monkeypatch, no_logs
):
    monkeypatch.setattr(monitor, "IDLE_TIMEOUT", 0.3)
    with many_tasks(watched, 2000):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        with sock:
            sock.sendall(b'{"cmd": "ps"}\n' * 50)
            time.sleep(1.5)  # more than the idle timeout: the monitor gave up on it
            received = read_all(sock)
        assert received.count(b"\n") <= 1  # the first answer at most, maybe cut short
        assert len(ask(path, "ps")["tasks"]) == 2000
    time.sleep(0.3)


def test_100_clients_at_once(path, watched, nest, no_logs):
    callbacks_before = watched.stats()["callbacks"]
    clients = []
    for _ in range(100):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        clients.append(sock)
    for sock in clients:
        try:
            sock.sendall(b'{"cmd": "ps"}\n')
        except BrokenPipeError:
            pass  # refused already
    answers = [read_line(sock) for sock in clients]
    for sock in clients:
        sock.close()
    served = [a for a in answers if "tasks" in a]
    refused = [a for a in answers if "tasks" not in a]
    assert len(served) == 64
    assert all("nest-grandchild" in answer["text"] for answer in served)
    assert refused == [{"error": "too many clients: the monitor serves 64 at a time"}] * 36
    # The 64 requests shared a few snapshots: the watched loop ran few callbacks.
    assert watched.stats()["callbacks"] - callbacks_before < 10
    time.sleep(0.3)  # the monitor sees the 64 hang-ups: there is room again
    assert "nest-root" in ask(path, "ps")["text"]
