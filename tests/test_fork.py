"""A forked child gets its own poller: what it does with an inherited loop must not
change what the parent's loop waits for.

An epoll fd inherited through fork() still refers to the parent's epoll instance, so a
child removing a reader would silently remove the parent's too. ferroloop gives every
live loop a fresh epoll instance and eventfd in the child (os.register_at_fork).
Runs inside a child interpreter so the pytest process never forks.
"""

from __future__ import annotations

import textwrap

import pytest

from looptest_support import run_child

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
