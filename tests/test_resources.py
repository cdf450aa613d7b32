"""Running out of file descriptors gives a clear OSError, never a crash or a leak.

Runs in a child process with a low RLIMIT_NOFILE so the pytest process keeps its fds.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import asyncio, errno, os, resource, sys

    impl = sys.argv[1]
    if impl == "ferroloop":
        import ferroloop
        new_loop = ferroloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop

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


@pytest.mark.parametrize("impl", ["asyncio", "ferroloop"])
def test_emfile_on_loop_creation_is_an_oserror(impl):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, impl], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["errno EMFILE", "recreated True True"], (
        result.stdout + result.stderr
    )
