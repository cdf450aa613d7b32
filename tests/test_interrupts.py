"""Ctrl-C (SIGINT) reaches a loop that is blocked waiting for I/O or timers.

Each case runs in a child process, so the signal never hits the pytest process.
ferroloop releases the GIL inside epoll_wait; an interrupted wait must run Python's
signal handlers and let KeyboardInterrupt out of run_forever / ferroloop.run, promptly,
leaving the loop usable.
"""

from __future__ import annotations

import textwrap

from looptest_support import run_child

CHILD = textwrap.dedent(
    """
    import os, signal, threading, time

    def interrupt_soon():
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    # 1. run_forever with nothing to do blocks in the poller until the signal.
    loop = new_loop()
    interrupt_soon()
    started = time.monotonic()
    try:
        loop.run_forever()
        print("run_forever returned")
    except KeyboardInterrupt:
        print("interrupted-idle", round(time.monotonic() - started, 1) < 5)
    # 2. The loop still works afterwards.
    loop.call_soon(loop.stop)
    loop.run_forever()
    # 3. A long timer wait is interrupted too.
    interrupt_soon()
    try:
        loop.run_until_complete(asyncio.sleep(30))
    except KeyboardInterrupt:
        print("interrupted-sleep", round(time.monotonic() - started, 1) < 10)
    loop.close()
    print("done")
    """
)


def test_sigint_interrupts_a_blocked_loop(loop_impl):
    assert run_child(CHILD, loop_impl) == [
        "interrupted-idle True",
        "interrupted-sleep True",
        "done",
    ]
