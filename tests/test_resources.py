"""Running out of file descriptors gives a clear OSError, never a crash or a leak.

Runs in a child process with a low RLIMIT_NOFILE so the pytest process keeps its fds.
"""

from __future__ import annotations

import textwrap

from looptest_support import run_child

CHILD = textwrap.dedent(
    """
    import errno, os, resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    loops = []
    try:
        while True:
            loops.append(new_loop())
    except OSError as exc:
        print("errno", errno.errorcode.get(exc.errno))
    for loop in loops:
        loop.close()
    after_close = len(os.listdir("/proc/self/fd"))
    # Every fd came back: as many loops can be made again.
    again = [new_loop() for _ in loops]
    for loop in again:
        loop.close()
    print("recreated", len(again) == len(loops) > 0, after_close < 20)
    """
)


def test_emfile_on_loop_creation_is_an_oserror(loop_impl):
    assert run_child(CHILD, loop_impl) == ["errno EMFILE", "recreated True True"]
