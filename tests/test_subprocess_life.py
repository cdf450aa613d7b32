"""Subprocesses under load and over their whole life: many children at once, big
transfers, a loop in another thread (and two loops in two threads), file descriptors,
zombies, exits the loop did not see before ``send_signal``/``close`` polled the child,
a SIGCHLD handler beside the loop's own reaping.

Every test runs on stock asyncio and on ferroloop. "No zombie" is checked per child
this test started (``waitid(P_PID, pid, WNOWAIT)``: ``ChildProcessError`` = reaped by
the loop), never with ``waitpid(-1)``, which could take another test's child. The API
itself: ``test_subprocess.py``.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import signal
import sys
import threading
import time
from asyncio.subprocess import DEVNULL, PIPE, STDOUT

import pytest
from looptest_net import run, spin, until
from looptest_procs import MB, blob, child_status, fd_list, reap_leftover
from looptest_support import PY

PYTHON = sys.executable


def statuses(pids):
    """``{status: count}`` of ``child_status`` over ``pids``; leftovers are cleaned up."""
    counts = {}
    for pid in pids:
        status = child_status(pid)
        counts[status] = counts.get(status, 0) + 1
        if status != "reaped":
            reap_leftover(pid)
    return counts


async def short_child(i):
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", 'echo "child $1"; exit $(($1 % 7))', "sh", str(i),
        stdin=DEVNULL, stdout=PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.pid, out, err, proc.returncode


def test_200_concurrent_short_lived_children(loop):
    async def main():
        return await asyncio.gather(*(short_child(i) for i in range(200)))

    results = run(loop, main(), 120)
    assert [r[1:] for r in results] == [
        (b"child %d\n" % i, None, i % 7) for i in range(200)
    ]  # fmt: skip
    pids = [r[0] for r in results]
    assert len(set(pids)) == 200
    assert statuses(pids) == {"reaped": 200}


def test_100mb_through_cat_checked_by_hash(loop):
    size = 100 * MB
    chunk = blob(MB)
    expected = hashlib.sha256()
    for i in range(size // MB):
        expected.update(i.to_bytes(4, "big") + chunk[4:])

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)

        async def feed():
            for i in range(size // MB):
                proc.stdin.write(i.to_bytes(4, "big") + chunk[4:])
                await proc.stdin.drain()
            proc.stdin.close()
            await proc.stdin.wait_closed()

        async def consume():
            digest, total = hashlib.sha256(), 0
            while True:
                data = await proc.stdout.read(256 * 1024)
                if not data:
                    return digest.hexdigest(), total
                digest.update(data)
                total += len(data)

        _, (hexdigest, total) = await asyncio.gather(feed(), consume())
        return hexdigest, total, await proc.wait(), proc.pid

    hexdigest, total, returncode, pid = run(loop, main(), 300)
    assert (total, returncode) == (size, 0)
    assert hexdigest == expected.hexdigest()
    assert statuses([pid]) == {"reaped": 1}


def test_spawn_from_a_loop_in_a_non_main_thread(new_loop):
    loop = new_loop()
    box = {}

    async def main():
        assert threading.current_thread() is not threading.main_thread()
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "cat; echo from-thread >&2; exit 3", stdin=PIPE, stdout=PIPE,
            stderr=PIPE,
        )  # fmt: skip
        res = await proc.communicate(b"input ")
        many = await asyncio.gather(*(short_child(i) for i in range(20)))
        return proc.pid, res, proc.returncode, many

    def body():
        try:
            box["result"] = loop.run_until_complete(asyncio.wait_for(main(), 60))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(90)
    assert not thread.is_alive(), "the loop thread hung"
    assert "error" not in box, repr(box.get("error"))
    pid, res, returncode, many = box["result"]
    assert (res, returncode) == ((b"input ", b"from-thread\n"), 3)
    assert [m[1:] for m in many] == [(b"child %d\n" % i, None, i % 7) for i in range(20)]
    assert statuses([pid] + [m[0] for m in many]) == {"reaped": 21}


class Proto(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.done = loop.create_future()

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_fd_count_is_exactly_the_same_afterwards(loop, tmp_path):
    async def main():
        pids = []
        before = fd_list()
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", "cat; echo err >&2", stdin=PIPE, stdout=PIPE, stderr=PIPE
            )
            pids.append(proc.pid)
            assert await proc.communicate(b"x") == (b"x", b"err\n")
            proc = await asyncio.create_subprocess_shell("exec sleep 30", stdout=PIPE)
            pids.append(proc.pid)
            proc.kill()
            await proc.wait()
            proc = await asyncio.create_subprocess_exec(
                "true", stdin=DEVNULL, stdout=DEVNULL, stderr=STDOUT
            )
            pids.append(proc.pid)
            await proc.wait()
            tr, pr = await loop.subprocess_exec(lambda: Proto(loop), "sleep", "30")
            pids.append(tr.get_pid())
            tr.close()  # kills the child
            await asyncio.wait_for(pr.done, 10)
            try:
                await asyncio.create_subprocess_exec(str(tmp_path / "missing"), stdout=PIPE)
            except FileNotFoundError:
                pass
        await spin(0.05)
        gc.collect()
        return before, fd_list(), pids

    before, after, pids = run(loop, main(), 60)
    assert after == before
    assert statuses(pids) == {"reaped": len(pids)}


def test_no_zombie_after_every_way_of_ending(loop):
    async def main():
        pids = []

        async def spawn(*args, **kw):
            proc = await asyncio.create_subprocess_exec(*args, **kw)
            pids.append(proc.pid)
            return proc

        await (await spawn("true")).wait()  # exits by itself
        proc = await spawn("sleep", "30")
        proc.terminate()
        await proc.wait()
        proc = await spawn("sleep", "30", stdout=PIPE)
        proc.kill()
        await proc.communicate()
        # Nobody awaits this one: the loop still reaps it.
        proc = await spawn("sh", "-c", "exit 2")
        await until(lambda: proc.returncode is not None, 10)
        # Exits while its pipes stay open (a grandchild holds them) and is reaped.
        proc = await spawn("sh", "-c", "sleep 0.5 &", stdout=PIPE)
        await until(lambda: proc.returncode is not None, 10)
        pid_early = proc.pid
        early = child_status(pid_early)
        await proc.communicate()
        await spin(0.05)
        return pids, early

    pids, early = run(loop, main(), 30)
    assert early == "reaped"
    assert statuses(pids) == {"reaped": len(pids)}


# Closing a loop before its child's exit is seen leaves a Popen whose returncode is
# unknown: it warns "subprocess ... is still running" when collected (on both loops).
CLOSED_EARLY = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


def skip_asyncio_pidfd_watcher(loop_impl):
    if loop_impl == "asyncio" and PY >= (3, 12):
        pytest.skip(
            "asyncio >= 3.12 waits for children with a pidfd watched by the loop: once "
            "the loop is closed nobody reaps them (they stay zombies); 3.9-3.11's "
            "ThreadedChildWatcher reaps them"
        )


@CLOSED_EARLY
def test_no_zombie_when_the_loop_closes_before_the_child_exits(new_loop, loop_impl):
    # The transport is closed (so the child is killed) and the loop closed at once,
    # before the child's exit is seen. asyncio's child watcher still reaps it.
    skip_asyncio_pidfd_watcher(loop_impl)
    loop = new_loop()

    async def main():
        tr, _ = await loop.subprocess_exec(lambda: Proto(loop), "sleep", "30")
        return tr

    # (The transport, and so its Popen, is kept: a Popen collected while its child
    # runs is polled by the subprocess module, which would hide what the loop did.)
    tr = run(loop, main())
    pid = tr.get_pid()
    tr.close()  # kills the child; the loop does not run again to see it exit
    loop.close()
    deadline = time.monotonic() + 5
    while child_status(pid) != "reaped" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert statuses([pid]) == {"reaped": 1}
    del tr


@CLOSED_EARLY
def test_no_zombie_when_the_loop_closes_with_a_child_running(new_loop, loop_impl):
    # Same, the child still running (it exits by itself later): nobody waits for it
    # any more, yet it must not stay a zombie. (The process object is kept, as above.)
    skip_asyncio_pidfd_watcher(loop_impl)
    loop = new_loop()

    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.3")
        return proc

    proc = run(loop, main())
    pid = proc.pid
    loop.close()
    deadline = time.monotonic() + 5
    while child_status(pid) != "reaped" and time.monotonic() < deadline:
        time.sleep(0.01)
    del proc
    assert statuses([pid]) == {"reaped": 1}


def test_exit_the_loop_did_not_see_yet(compare):
    # The child exits while the loop is blocked; then send_signal() (which may poll the
    # Popen and so reap the child before the loop does): the status is not lost.
    def scenario(loop):
        async def main():
            proc = await asyncio.create_subprocess_exec("sh", "-c", "exit 3")
            time.sleep(0.2)  # blocks the loop: it cannot see the exit
            proc.send_signal(signal.SIGTERM)
            return [await asyncio.wait_for(proc.wait(), 10), statuses([proc.pid])]

        return run(loop, main())

    assert compare(scenario) == [3, {"reaped": 1}]


def test_close_after_an_exit_the_loop_did_not_see_yet(loop, loop_impl):
    # Same with the transport's close(), which polls the Popen to know whether the
    # child still runs: it must not kill (or report -9 for) the child that exited.
    if loop_impl == "asyncio" and PY >= (3, 12):
        pytest.skip(
            "asyncio >= 3.12 (pidfd child watcher run by the loop): close()'s "
            "Popen.poll() reaps the child before the watcher's waitpid(), which then "
            "finds no child, logs 'exit status already read' and reports returncode 255; "
            "3.9-3.11's ThreadedChildWatcher has reaped it in its thread and reports 4"
        )

    async def main():
        tr, pr = await loop.subprocess_exec(
            lambda: Proto(loop), "sh", "-c", "exit 4", stdin=DEVNULL, stdout=DEVNULL,
            stderr=DEVNULL,
        )  # fmt: skip
        time.sleep(0.2)  # blocks the loop: it cannot see the exit
        tr.close()
        await asyncio.wait_for(pr.done, 10)
        return [tr.get_returncode(), statuses([tr.get_pid()])]

    assert run(loop, main()) == [4, {"reaped": 1}]


def test_two_loops_in_two_threads_spawn_at_the_same_time(new_loop):
    loops = [new_loop(), new_loop()]
    results = [None, None]

    async def spawn_many(offset):
        return await asyncio.gather(*(short_child(offset + i) for i in range(40)))

    def body(index):
        try:
            results[index] = loops[index].run_until_complete(
                asyncio.wait_for(spawn_many(100 * index), 60)
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[index] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    for index, result in enumerate(results):
        assert isinstance(result, list), result
        assert [r[1:] for r in result] == [
            (b"child %d\n" % (100 * index + i), None, (100 * index + i) % 7) for i in range(40)
        ]  # fmt: skip
    assert statuses([r[0] for result in results for r in result]) == {"reaped": 80}


def test_a_sigchld_handler_beside_the_children(compare):
    # The loop reaps its children itself; a SIGCHLD handler of the program still runs.
    def scenario(loop):
        calls = []

        async def main():
            loop.add_signal_handler(signal.SIGCHLD, calls.append, "SIGCHLD")
            try:
                codes = []
                for i in range(5):
                    proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}")
                    codes.append(await proc.wait())
                await until(lambda: calls, 5)
            finally:
                loop.remove_signal_handler(signal.SIGCHLD)
            return codes, 1 <= len(calls) <= 5

        return run(loop, main())

    assert compare(scenario) == ([0, 1, 2, 3, 4], True)


def test_a_slow_preexec_fn_does_not_stall_the_loop(loop, loop_impl):
    # The child runs preexec_fn between fork and exec, and Popen waits for the exec.
    if loop_impl == "asyncio":
        pytest.skip("asyncio runs Popen in the loop thread: its loop stalls (ferroloop-only)")

    def slow_preexec():
        time.sleep(0.5)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.02)
        before = ticks
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "echo started", stdout=PIPE, preexec_fn=slow_preexec
        )
        during = ticks - before
        out, _ = await proc.communicate()
        tick_task.cancel()
        return during, out, proc.returncode

    during, out, returncode = run(loop, main())
    assert (out, returncode) == (b"started\n", 0)
    assert during >= 20, f"the loop ran only {during} ticks of 10 ms during a 0.5 s spawn"


def test_cancelled_spawn_with_preexec_fn_leaves_no_child(loop, loop_impl, tmp_path):
    if loop_impl == "asyncio":
        pytest.skip("ferroloop-only: asyncio cannot be cancelled inside Popen")
    pid_file = tmp_path / "child.pid"

    def slow_preexec():  # runs in the child: it tells its pid, then takes its time
        pid_file.write_text(str(os.getpid()))
        time.sleep(0.3)

    async def main():
        task = asyncio.ensure_future(
            asyncio.create_subprocess_exec("sleep", "30", preexec_fn=slow_preexec)
        )
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main())
    pid = int(pid_file.read_text())
    # The spawning thread kills and reaps the child it still started.
    deadline = time.monotonic() + 5
    while child_status(pid) != "reaped" and time.monotonic() < deadline:
        time.sleep(0.02)
    status = child_status(pid)
    if status != "reaped":
        reap_leftover(pid)
    assert status == "reaped"
