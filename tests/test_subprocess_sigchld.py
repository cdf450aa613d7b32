"""ferroloop's child watcher for kernels without pidfds: one process-wide ``SIGCHLD``
handler and reaper thread in Rust (``ferroloop_core::reaper``), chosen when
``pidfd_open`` fails with ``ENOSYS``/``EPERM`` or forced with
``FERROLOOP_CHILD_WATCHER=sigchld`` (read once per process, so every case runs in a
fresh interpreter).

ferroloop-only: stock asyncio picks its child watcher differently (its own tests cover
it); the subprocess behaviour itself is compared with asyncio by ``test_subprocess*.py``,
which the first case runs again under the reaper. For contrast, one case checks the
default watcher (each child's pidfd watched by the loop itself): no thread at all.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
SIGCHLD_ENV = {**os.environ, "FERROLOOP_CHILD_WATCHER": "sigchld"}
DEFAULT_ENV = {k: v for k, v in os.environ.items() if k != "FERROLOOP_CHILD_WATCHER"}


def kernel_has_pidfd_open():
    try:
        os.close(os.pidfd_open(os.getpid()))
    except AttributeError:  # a Python built without it: assume the kernel has it
        return True
    except OSError as exc:
        return exc.errno not in (errno.ENOSYS, errno.EPERM)
    return True


def run_python(code, env=SIGCHLD_ENV):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def test_the_subprocess_suites_pass_under_the_sigchld_reaper():
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
            "-k", "ferroloop", "test_subprocess.py", "test_subprocess_life.py",
        ],
        cwd=TESTS, env=SIGCHLD_ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_one_reaper_thread_however_many_children():
    out = run_python(
        """
        import asyncio, os, ferroloop
        from ferroloop import _ferroloop

        def threads():
            return len(os.listdir("/proc/self/task"))

        async def main():
            before = threads()
            procs = [await asyncio.create_subprocess_exec("sleep", "0.5") for _ in range(50)]
            during = threads()
            codes = await asyncio.gather(*(p.wait() for p in procs))
            return before, during, codes

        before, during, codes = ferroloop.run(main())
        print(_ferroloop.child_watcher(), during - before, set(codes))
        """
    )
    watcher, extra_threads, codes = out[0], int(out[1]), " ".join(out[2:])
    assert watcher == "sigchld"
    assert extra_threads <= 1, f"{extra_threads} threads for 50 children"
    assert codes == "{0}"


@pytest.mark.skipif(
    not kernel_has_pidfd_open(),
    reason="the kernel has no pidfd_open (Linux < 5.3 or refused by seccomp): "
    "ferroloop uses the SIGCHLD reaper by default there",
)
def test_default_pidfd_watcher_adds_no_thread_for_50_children():
    out = run_python(
        """
        import asyncio, os, threading, ferroloop
        from asyncio.subprocess import DEVNULL, PIPE
        from ferroloop import _ferroloop

        def threads():
            return threading.active_count(), len(os.listdir("/proc/self/task"))

        async def main():
            before = threads()
            # Each cat blocks on its stdin until it is closed: all 50 are alive below.
            procs = [
                await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=DEVNULL)
                for _ in range(50)
            ]
            during = threads()
            alive = sum(p.returncode is None for p in procs)
            for p in procs:
                p.stdin.close()
            codes = await asyncio.gather(*(p.wait() for p in procs))
            return before, during, threads(), alive, codes

        before, during, after, alive, codes = ferroloop.run(main())
        print(_ferroloop.child_watcher(), *before, *during, *after, alive, set(codes))
        """,
        env=DEFAULT_ENV,
    )
    watcher, counts, alive, codes = out[0], out[1:7], int(out[7]), " ".join(out[8:])
    assert watcher == "pidfd"
    assert alive == 50
    # (threading.active_count(), /proc/self/task entries) before, during, after.
    before, during, after = counts[0:2], counts[2:4], counts[4:6]
    assert before == during == after, f"threads before/during/after 50 children: {counts}"
    assert codes == "{0}"


def test_a_python_sigchld_handler_installed_before_still_runs():
    out = run_python(
        """
        import asyncio, signal, ferroloop
        seen = []
        signal.signal(signal.SIGCHLD, lambda signum, frame: seen.append(signum))

        async def main():
            codes = []
            for i in range(3):
                proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}")
                codes.append(await proc.wait())
            for _ in range(100):  # Python runs its handlers between bytecodes
                if seen:
                    break
                await asyncio.sleep(0.01)
            return codes

        print(*ferroloop.run(main()), bool(seen))
        """
    )
    assert out == ["0", "1", "2", "True"]


def test_a_handler_installed_after_the_reaper_does_not_stop_it():
    # signal.signal() after the first child replaces the reaper's handler without
    # chaining; the next spawn puts the reaper's back in front of it.
    out = run_python(
        """
        import asyncio, signal, ferroloop
        seen = []

        async def main():
            first = await asyncio.create_subprocess_exec("true")
            codes = [await first.wait()]
            signal.signal(signal.SIGCHLD, lambda signum, frame: seen.append(signum))
            for i in range(3):
                proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}")
                codes.append(await asyncio.wait_for(proc.wait(), 10))
            return codes

        print(*ferroloop.run(main()), bool(seen))
        """
    )
    assert out == ["0", "0", "1", "2", "True"]
