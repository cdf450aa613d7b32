"""fork() from inside a running loop that has signal handlers and a pipe transport.

The parent's loop (main thread) has a SIGUSR1 handler and a read pipe transport fed by
a thread of the parent. A coroutine of that loop forks. In the child, a loop adds its
own signal handlers and receives its own signals; meanwhile and afterwards the parent's
handler gets every SIGUSR1 the parent sends itself and its pipe transport gets every
message, in order. Each scenario runs in a child interpreter (``run_child``) and every
fork is waited for with a deadline (see ``test_fork_threads.py`` for the style).

(asyncio does not report the parent's running loop in a forked child: the child can
run a loop of its own even though it forked inside a coroutine of the parent's.)
"""

from __future__ import annotations

import textwrap

import pytest
from looptest_support import run_child

PARENT = textwrap.dedent(
    """
    import threading, traceback

    loop = new_loop()
    parent_got = []
    loop.add_signal_handler(signal.SIGUSR1, parent_got.append, "parent USR1")
    r, w = os.pipe()
    messages = []


    class Reader(asyncio.Protocol):
        def data_received(self, data):
            messages.append(data)


    def feed(count, pause):
        # A thread of the parent writes numbered messages into the pipe.
        for i in range(count):
            os.write(w, b"<%d>" % i)
            time.sleep(pause)


    def received():
        return b"".join(messages)


    async def parent_signals(count):
        got = len(parent_got)
        for _ in range(count):
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 5
        while len(parent_got) < got + count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return len(parent_got) - got


    def child_exit(ok):
        sys.stdout.flush()
        os._exit(0 if ok else 5)
    """
)

NEW_LOOP_IN_CHILD = PARENT + textwrap.dedent(
    """
    def child_main():
        # A loop of its own in the child, with its own handlers.
        child_loop = new_loop()
        got = []
        child_loop.add_signal_handler(signal.SIGUSR2, got.append, "child USR2")
        child_loop.add_signal_handler(signal.SIGUSR1, got.append, "child USR1")

        async def main():
            for sig in (signal.SIGUSR2, signal.SIGUSR1, signal.SIGUSR2):
                os.kill(os.getpid(), sig)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)

        child_loop.run_until_complete(asyncio.wait_for(main(), 10))
        child_loop.close()
        return got == ["child USR2", "child USR1", "child USR2"]


    async def main():
        transport, _ = await loop.connect_read_pipe(Reader, os.fdopen(r, "rb", 0))
        feeder = threading.Thread(target=feed, args=(200, 0.002))
        feeder.start()
        print("before fork", await parent_signals(5))
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                ok = child_main()
            except BaseException:
                traceback.print_exc()
            child_exit(ok)
        during = await parent_signals(20)
        code = await loop.run_in_executor(None, wait_child, pid)
        print("child", code)
        print("parent while the child ran", during)
        print("parent after", await parent_signals(10))
        feeder.join()
        deadline = time.monotonic() + 5
        while len(received()) < len(b"".join(b"<%d>" % i for i in range(200))):
            assert time.monotonic() < deadline, received()[-50:]
            await asyncio.sleep(0.01)
        print("pipe in order", received() == b"".join(b"<%d>" % i for i in range(200)))
        transport.close()


    loop.run_until_complete(asyncio.wait_for(main(), 40))
    loop.close()
    os.close(w)
    """
)


def test_child_makes_its_own_loop_after_fork(loop_impl):
    assert run_child(NEW_LOOP_IN_CHILD, loop_impl) == [
        "before fork 5",
        "child 0",
        "parent while the child ran 20",
        "parent after 10",
        "pipe in order True",
    ]


INHERITED_LOOP_IN_CHILD = PARENT + textwrap.dedent(
    """
    def child_goes_on():
        # The child goes on running the loop it inherited (the fork happened in one of
        # its callbacks): it adds a handler, receives its own signals and keeps polling
        # for a while (with the inherited pipe transport and SIGUSR1 handler), while the
        # parent signals itself and gets its data.
        got = []
        try:
            loop.add_signal_handler(signal.SIGUSR2, got.append, "child USR2")
            for sig in (signal.SIGUSR2, signal.SIGUSR1, signal.SIGUSR2):
                os.kill(os.getpid(), sig)
        except BaseException:
            traceback.print_exc()
            child_exit(False)

        def check():
            ok = got == ["child USR2", "child USR2"] and parent_got[-1] == "parent USR1"
            if not ok:
                print("child saw", got, parent_got[-1], flush=True)
            child_exit(ok)

        loop.call_later(0.5, check)


    def fork_now(forked):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child_goes_on()  # and back to the loop, in the child
        else:
            forked.set_result(pid)


    async def main():
        transport, _ = await loop.connect_read_pipe(Reader, os.fdopen(r, "rb", 0))
        feeder = threading.Thread(target=feed, args=(200, 0.002))
        feeder.start()
        print("before fork", await parent_signals(5))
        forked = loop.create_future()
        loop.call_soon(fork_now, forked)
        pid = await forked
        during = await parent_signals(20)
        code = await loop.run_in_executor(None, wait_child, pid)
        print("child", code)
        print("parent while the child ran", during)
        print("parent after", await parent_signals(10))
        feeder.join()
        deadline = time.monotonic() + 5
        expected = b"".join(b"<%d>" % i for i in range(200))
        while len(received()) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        print("pipe in order", received() == expected)
        transport.close()


    loop.run_until_complete(asyncio.wait_for(main(), 40))
    loop.close()
    os.close(w)
    """
)


def skip_asyncio_inherited(loop_impl):
    if loop_impl == "asyncio":
        pytest.skip(
            "asyncio's selector loop shares its epoll instance and its self-pipe with "
            "a forked child, so a child that goes on with the inherited loop (which "
            "asyncio does not support) takes the parent's events and signals"
        )


def test_child_goes_on_with_the_inherited_loop_signals(loop_impl):
    skip_asyncio_inherited(loop_impl)
    lines = run_child(INHERITED_LOOP_IN_CHILD, loop_impl)
    assert lines[:4] == [
        "before fork 5",
        "child 0",
        "parent while the child ran 20",
        "parent after 10",
    ]


def test_child_goes_on_with_the_inherited_loop_pipe_transport(loop_impl):
    # The child's copy of the parent's read pipe transport must not take the parent's
    # data (the issue: "a child's transports, pipes and signal handlers can never
    # disturb the parent's").
    skip_asyncio_inherited(loop_impl)
    lines = run_child(INHERITED_LOOP_IN_CHILD, loop_impl)
    assert lines[1:2] + lines[4:] == ["child 0", "pipe in order True"]


MULTIPROCESSING = PARENT + textwrap.dedent(
    """
    import multiprocessing


    def process_main(queue):
        child_loop = new_loop()
        got = []
        child_loop.add_signal_handler(signal.SIGUSR1, got.append, "child USR1")

        async def main():
            for _ in range(5):
                os.kill(os.getpid(), signal.SIGUSR1)
                await asyncio.sleep(0.01)
            proc = await asyncio.create_subprocess_exec("echo", "grandchild", stdout=-1)
            out, _ = await proc.communicate()
            return out

        out = child_loop.run_until_complete(asyncio.wait_for(main(), 10))
        child_loop.close()
        queue.put((got, out))


    async def main():
        transport, _ = await loop.connect_read_pipe(Reader, os.fdopen(r, "rb", 0))
        feeder = threading.Thread(target=feed, args=(100, 0.002))
        feeder.start()
        context = multiprocessing.get_context("fork")
        queue = context.SimpleQueue()
        process = context.Process(target=process_main, args=(queue,))
        process.start()  # forks from inside this coroutine
        during = await parent_signals(10)
        await loop.run_in_executor(None, process.join, 20)
        if process.is_alive():
            process.kill()
            process.join()
        print("child", process.exitcode, queue.get() if process.exitcode == 0 else None)
        print("parent", during, await parent_signals(5))
        feeder.join()
        expected = b"".join(b"<%d>" % i for i in range(100))
        deadline = time.monotonic() + 5
        while len(received()) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        print("pipe in order", received() == expected)
        transport.close()


    loop.run_until_complete(asyncio.wait_for(main(), 40))
    loop.close()
    os.close(w)
    """
)


def test_multiprocessing_fork_from_inside_a_running_loop(loop_impl):
    assert run_child(MULTIPROCESSING, loop_impl) == [
        f"child 0 ({['child USR1'] * 5}, {b'grandchild' + bytes([10])})",
        "parent 10 5",
        "pipe in order True",
    ]
