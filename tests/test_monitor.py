"""The monitor socket (``loop.start_monitor``, ``ferroloop.monitor``): ferroloop only,
stock asyncio has no monitor.

A watched loop runs in a thread of the test; clients are plain blocking sockets of the
test thread (``looptest_monitor``). Checked: who may connect (mode 0600, the owner's
uid only: another uid is refused by the file mode and by ``SO_PEERCRED``), what may be
at the path, the answers (``ps`` against ``dump_tasks`` of the same nest of tasks,
``stats``, ``top`` with and without callback timing), the error answers of a blocked
and of a stopped loop, stopping (``close()``, ``stop_monitor()``, a forked child) and
``FERROLOOP_MONITOR``. Clients that misbehave: ``test_monitor_clients.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import ferroloop
import pytest
from looptest_monitor import (
    ask,
    monitor_threads,
    on_loop,
)
from looptest_support import run_child


# -- who may connect, what may be at the path ------------------------------------------

# The shared fixtures (sock_dir, watched, path, nest, no_logs).
pytest_plugins = ["looptest_monitor"]


def test_socket_is_owner_only_mode_0600(path):
    info = os.lstat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()


# Runs as root, drops to uid/gid 65534 (after importing what it needs), then connects.
CLIENT_AS_NOBODY = textwrap.dedent(
    """
    import json, os, socket, sys

    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(sys.argv[1])
    except OSError as exc:
        print(json.dumps({"uid": os.getuid(), "connect_errno": exc.errno}))
        sys.exit()
    try:
        sock.sendall(b'{"cmd": "ps"}\\n')
    except BrokenPipeError:
        pass
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionResetError:
        pass
    print(json.dumps({"uid": os.getuid(), "received": received.decode()}))
    """
)


def as_nobody(path):
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_AS_NOBODY, path],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the client must run under another uid"
)
def test_another_uid_is_refused(path, sock_dir, no_logs):
    parent = os.path.dirname(sock_dir)
    while parent != "/":
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            pytest.skip(f"other users cannot reach the temporary directory {sock_dir}")
        parent = os.path.dirname(parent)
    os.chmod(sock_dir, 0o711)  # uid 65534 may reach the socket, not list the directory
    # The file mode stops it at connect().
    assert as_nobody(path) == {"uid": 65534, "connect_errno": 13}  # EACCES
    # With the mode widened (by mistake, say), SO_PEERCRED stops it: one error line.
    os.chmod(path, 0o666)
    seen = as_nobody(path)
    assert seen["uid"] == 65534
    lines = [json.loads(line) for line in seen["received"].splitlines()]
    assert lines == [
        {"error": f"uid 65534 may not use this monitor: only its owner, uid {os.geteuid()}"}
    ]
    assert "tasks" in ask(path, "ps")  # the owner still may


def test_stale_socket_file_is_replaced(watched, sock_dir):
    path = os.path.join(sock_dir, "stale.sock")
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_over.bind(path)  # bound, never listening: as a process that died leaves it
    left_over.close()
    os.chmod(path, 0o755)
    watched.start_monitor(path)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600  # a new file (inodes are reused)
    assert ask(path, "stats")["iterations"] >= 0


def test_regular_file_is_refused(watched, sock_dir):
    path = os.path.join(sock_dir, "notes.txt")
    with open(path, "w") as file:
        file.write("keep me")
    with pytest.raises(FileExistsError, match="exists and is not a socket"):
        watched.start_monitor(path)
    with open(path) as file:
        assert file.read() == "keep me"
    assert monitor_threads() == []
    os.unlink(path)
    watched.start_monitor(path)  # the failed start left nothing behind
    assert ask(path, "stats")["iterations"] >= 0


def test_socket_in_use_is_refused(watched, sock_dir):
    path = os.path.join(sock_dir, "busy.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        with pytest.raises(FileExistsError, match="a process is listening"):
            watched.start_monitor(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left alone
    finally:
        server.close()


def test_one_monitor_per_loop_and_none_on_a_closed_loop(path, watched, sock_dir):
    with pytest.raises(RuntimeError, match="already has a monitor"):
        watched.start_monitor(os.path.join(sock_dir, "second.sock"))
    closed = ferroloop.new_event_loop()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.start_monitor(os.path.join(sock_dir, "closed.sock"))


# -- answers -------------------------------------------------------------------------------


def test_ps_gives_the_task_tree_and_dump_tasks_text(path, watched, nest):
    answer = ask(path, "ps")
    assert answer["pid"] == os.getpid()
    names = {task["id"]: task["name"] for task in answer["tasks"]}
    links = {
        task["name"]: (names.get(task["parent"]), task["link"], task["depth"], task["state"])
        for task in answer["tasks"]
    }
    assert links == {
        "nest-root": (None, None, 0, "waiting"),
        "nest-child-1": ("nest-root", "gather", 1, "waiting"),
        "nest-child-2": ("nest-root", "gather", 1, "waiting"),
        "nest-grandchild": ("nest-child-2", "await", 2, "waiting"),
    }
    grandchild_info = next(t for t in answer["tasks"] if t["name"] == "nest-grandchild")
    assert [frame["function"] for frame in grandchild_info["stack"]][:1] == ["grandchild"]
    printed = io.StringIO()
    on_loop(watched, ferroloop.dump_tasks, watched, printed)
    assert answer["text"] == printed.getvalue().rstrip("\n")
    assert answer["text"].splitlines()[1].startswith("  Task 'nest-child-1' waiting in ")


def test_stats_and_top(path, watched, nest):
    stats = ask(path, "stats")
    assert set(stats) == set(watched.stats())
    assert stats["iterations"] > 0 and stats["callback_timing"] is True
    top = ask(path, "top")
    assert top["pid"] == os.getpid() and top["timed"] is True
    assert set(top["stats"]) == set(watched.stats()) - {"busiest_tasks"}
    assert top["stats"]["iterations"] >= stats["iterations"]
    # Every task of the nest ran since the monitor turned callback timing on.
    assert {entry["task"] for entry in top["tasks"]} == {
        "nest-root", "nest-child-1", "nest-child-2", "nest-grandchild"
    }
    assert all(entry["seconds"] >= 0 and entry["steps"] >= 1 for entry in top["tasks"])
    # Without callback timing, the pending tasks by name.
    watched.set_callback_timing(False)
    top = ask(path, "top")
    assert top["timed"] is False
    assert top["tasks"] == [
        {"task": name, "seconds": None}
        for name in ("nest-child-1", "nest-child-2", "nest-grandchild", "nest-root")
    ]


def test_the_monitor_times_callbacks_while_it_runs(watched, sock_dir):
    path = os.path.join(sock_dir, "timing.sock")
    assert watched.stats()["callback_timing"] is False
    watched.start_monitor(path)
    assert watched.stats()["callback_timing"] is True
    watched.stop_monitor()
    assert watched.stats()["callback_timing"] is False  # as it was
    watched.set_callback_timing(True)
    watched.start_monitor(path)
    watched.stop_monitor()
    assert watched.stats()["callback_timing"] is True  # as it was


def test_top_passes_on_the_busiest_tasks_of_stats(path, watched, monkeypatch):
    real_stats = watched.stats
    busiest = [{"task": "hot", "seconds": 1.5, "steps": 3}, {"task": "warm", "seconds": 0.25}]
    monkeypatch.setattr(watched, "stats", lambda: {**real_stats(), "busiest_tasks": busiest})
    top = ask(path, "top")
    assert top["tasks"] == busiest and top["timed"] is True
    assert set(top["stats"]) == set(real_stats()) - {"busiest_tasks"}
    assert ask(path, "stats")["busiest_tasks"] == busiest


def test_a_blocked_loop_is_reported_as_blocked(path, watched):
    blocking = threading.Event()

    def block():
        blocking.set()
        time.sleep(2)

    watched.call_soon_threadsafe(block)
    assert blocking.wait(10)
    block_began = started = time.monotonic()
    answer = ask(path, "ps")
    waited = time.monotonic() - started
    assert 0.9 <= waited <= 1.5
    assert answer["error"].startswith("the event loop has not answered for 1.")
    assert answer["error"].endswith(": it is blocked (or very busy)")
    assert answer["blocked"] is True and answer["running"] is True
    assert set(answer["stats"]) == set(watched.stats())
    # While it stays blocked, stats come at once, and so does the next ps's verdict.
    started = time.monotonic()
    assert ask(path, "stats")["iterations"] == answer["stats"]["iterations"]
    assert ask(path, "ps")["blocked"] is True
    assert time.monotonic() - started < 0.5
    # Once it moves on, ps answers again.
    time.sleep(max(0.0, block_began + 2.2 - time.monotonic()))
    assert ask(path, "ps")["text"] == "no pending tasks"


def test_a_loop_that_is_not_running_says_so(sock_dir):
    loop = ferroloop.new_event_loop()
    path = os.path.join(sock_dir, "idle.sock")
    try:
        loop.start_monitor(path)
        answer = ask(path, "ps")
        assert answer["error"].startswith("the event loop is not running")
        assert answer["blocked"] is False and answer["running"] is False
        assert answer["stats"]["iterations"] == 0
    finally:
        loop.close()


# -- clients that misbehave ----------------------------------------------------------------

def test_close_stops_the_monitor_and_removes_the_socket(sock_dir):
    loop = ferroloop.new_event_loop()
    path = os.path.join(sock_dir, "closing.sock")
    loop.start_monitor(path)
    assert len(monitor_threads()) == 1
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(10)
    idle.connect(path)
    with idle:
        started = time.monotonic()
        loop.close()
        assert time.monotonic() - started < 2
        # Its connection was closed: an EOF once accepted, a reset when the listening
        # socket closed with it still in the backlog (a race with the accept).
        try:
            assert idle.recv(100) == b""
        except ConnectionResetError:
            pass
    assert not os.path.exists(path)
    assert monitor_threads() == []
    with pytest.raises(FileNotFoundError):
        ask(path, "stats")


def test_stop_monitor_then_start_again(watched, sock_dir):
    path = os.path.join(sock_dir, "again.sock")
    watched.start_monitor(path)
    watched.stop_monitor()
    assert not os.path.exists(path) and monitor_threads() == []
    watched.stop_monitor()  # no monitor: nothing to do
    watched.start_monitor(path)
    assert "iterations" in ask(path, "stats")


FORK_WITH_A_MONITOR = """
import threading
from ferroloop.monitor import MonitorClient

def stats_work(path):
    client = MonitorClient(path)
    try:
        return "iterations" in client.request("stats")
    finally:
        client.close()

parent_path, child_path = PATHS
loop = new_loop()
thread = threading.Thread(target=loop.run_forever, daemon=True)
thread.start()
loop.start_monitor(parent_path)
pid = os.fork()
if pid == 0:
    loop.stop_monitor()  # the parent's: only forgotten here
    child_loop = new_loop()
    child_loop.start_monitor(child_path)
    works = stats_work(child_path)
    child_loop.close()
    sys.exit(0 if works and not os.path.exists(child_path) else 1)  # atexit runs too
print("child", wait_child(pid))
print("parent's socket kept", os.path.exists(parent_path), stats_work(parent_path))
loop.call_soon_threadsafe(loop.stop)
thread.join(10)
loop.close()
print("parent's socket removed", not os.path.exists(parent_path))
"""


def test_a_forked_child_leaves_the_parents_monitor_alone(sock_dir):
    paths = [os.path.join(sock_dir, "parent.sock"), os.path.join(sock_dir, "child.sock")]
    script = FORK_WITH_A_MONITOR.replace("PATHS", repr(paths))
    assert run_child(script, "ferroloop") == [
        "child 0",
        "parent's socket kept True True",
        "parent's socket removed True",
    ]


def test_environment_variable_starts_a_monitor(sock_dir, monkeypatch):
    path = os.path.join(sock_dir, "env.sock")
    monkeypatch.setenv("FERROLOOP_MONITOR", path)
    loop = ferroloop.new_event_loop()
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
        assert ask(path, "stats")["iterations"] > 0
    finally:
        loop.close()
    assert not os.path.exists(path)


def test_environment_variable_that_cannot_be_served_is_a_warning(
    sock_dir, monkeypatch, caplog
):
    path = os.path.join(sock_dir, "file.txt")
    open(path, "w").close()
    monkeypatch.setenv("FERROLOOP_MONITOR", path)
    with caplog.at_level(logging.WARNING, logger="ferroloop"):
        loop = ferroloop.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
    [record] = caplog.records
    assert record.getMessage().startswith(f"FERROLOOP_MONITOR={path}: no monitor for ")
    assert "exists and is not a socket" in record.getMessage()
    assert monitor_threads() == []


def test_empty_environment_variable_is_off(monkeypatch):
    monkeypatch.setenv("FERROLOOP_MONITOR", "")
    loop = ferroloop.new_event_loop()
    loop.close()
    assert monitor_threads() == []
