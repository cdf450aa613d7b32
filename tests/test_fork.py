"""fork() and a loop in the same process.

A forked child gets its own poller: what it does with an inherited loop must not
change what the parent's loop waits for. A child forked inside a running loop keeps
using it (timers, call_soon_threadsafe), and a child forked from an executor thread
(the only thread it has) can run a new loop.

An epoll fd inherited through fork() still refers to the parent's epoll instance, so a
child removing a reader would silently remove the parent's too. ferroloop gives every
live loop a fresh epoll instance and eventfd in the child (os.register_at_fork).
Runs inside a child interpreter so the pytest process never forks.
"""

from __future__ import annotations

import textwrap

import pytest

from looptest_support import FORK_HELPERS, run_child

CHILD = textwrap.dedent(
    """
    import os

    loop = new_loop()
    r, w = os.pipe()
    got = []

    def on_readable():
        got.append(os.read(r, 10))
        loop.stop()

    loop.add_reader(r, on_readable)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            # In the child: drop the reader and run the loop a little.
            assert loop.remove_reader(r)
            loop.call_soon(loop.stop)
            loop.run_forever()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status)
    os.write(w, b"x")
    loop.call_later(5, loop.stop)
    loop.run_forever()
    print("parent reader", got)
    loop.close()
    """
)


def test_forked_child_does_not_change_the_parents_loop(loop_impl):
    if loop_impl == "asyncio":
        pytest.skip(
            "asyncio's selector loop shares its epoll instance with a forked child: the "
            "child's remove_reader() also removes the parent's (ferroloop-only guarantee)"
        )
    assert run_child(CHILD, loop_impl) == ["child exit 0", "parent reader [b'x']"]


# --------------------------------------------- fork from inside a running loop

FORK_INSIDE_RUNNING_LOOP = FORK_HELPERS + textwrap.dedent(
    """
    loop = new_loop()
    in_child = False


    async def loop_works():
        # A timer, and a call_soon_threadsafe from a new thread, on *this* loop. Only
        # the loop's own methods: in a forked child, asyncio.get_running_loop() (and so
        # asyncio.sleep, wait_for, ...) no longer reports the loop the parent was running.
        t0 = loop.time()
        timer = loop.create_future()
        loop.call_later(0.01, timer.set_result, None)
        await timer
        fut = loop.create_future()
        thread = threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, "ts"))
        thread.start()
        got = await fut  # a hang here is a timeout in the parent's wait_child()
        thread.join()
        return loop.time() - t0 >= 0.01 and got == "ts"


    def fork_now():
        sys.stdout.flush()
        return os.fork()


    async def main():
        global in_child
        if VARIANT == "callback":
            box = loop.create_future()
            loop.call_soon(lambda: box.set_result(fork_now()))
            pid = await box
        else:
            pid = fork_now()
        if pid == 0:
            in_child = True
            return await loop_works()
        # The parent waits without running its loop: asyncio's child shares the
        # parent's epoll instance and self-pipe, so both polling at once would race.
        code = wait_child(pid)
        return code, await loop_works()


    try:
        result = loop.run_until_complete(main())
    except BaseException:
        if in_child:
            traceback.print_exc()
            os._exit(3)
        raise
    if in_child:
        # Leave without closing: closing asyncio's loop here would unregister the
        # self-pipe from the epoll instance the parent still uses.
        os._exit(0 if result is True else 4)
    print("child exit", result[0])
    print("parent loop works", result[1])
    loop.close()
    """
)


@pytest.mark.parametrize("variant", ["coroutine", "callback"])
def test_fork_inside_the_running_loop_child_keeps_using_it(loop_impl, variant):
    script = f"VARIANT = {variant!r}\n" + FORK_INSIDE_RUNNING_LOOP
    assert run_child(script, loop_impl) == ["child exit 0", "parent loop works True"]


FORK_FROM_EXECUTOR_THREAD = FORK_HELPERS + textwrap.dedent(
    """
    def fork_in_worker():
        # In the child only this worker thread exists; it checks a new loop and
        # leaves with os._exit, never returning to the executor.
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            child_checks_new_loop()
        return pid


    async def main():
        loop = asyncio.get_running_loop()
        codes = []
        for _ in range(3):
            # While the worker forks, this loop waits for it in the poller.
            pid = await loop.run_in_executor(None, fork_in_worker)
            # The child does not use this loop: wait for it with the loop running.
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    codes.append("timeout")
                    return codes
                await asyncio.sleep(0.005)
        return codes


    loop = new_loop()
    print("child exits", loop.run_until_complete(main()))
    loop.close()
    """
)


def test_fork_from_an_executor_thread(loop_impl):
    assert run_child(FORK_FROM_EXECUTOR_THREAD, loop_impl) == ["child exits [0, 0, 0]"]
