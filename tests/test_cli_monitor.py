"""``python -m ferroloop run --monitor PATH``, ``ps PATH`` and ``top PATH``: real
subprocesses. ferroloop only: stock asyncio has no monitor to compare with.

A known program (``PROGRAM``: a task spinning in short bursts and a task gathering two
workers) runs under ``run --monitor`` until its stdin is closed; ``ps`` must print its
task tree line for line, with the program's file and lines, and ``top`` its counters and
tasks, screen after screen, without screen-clearing escapes when stdout is not a
terminal. The monitor socket must be gone once the program has ended.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

FERROLOOP = [sys.executable, "-m", "ferroloop"]

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys, time


    async def busy():
        while True:
            end = time.monotonic() + 0.005
            while time.monotonic() < end:
                pass
            await asyncio.sleep(0.01)  # <busy>


    async def worker(release):
        await release.wait()  # <worker>


    async def wait_for_stdin(release):
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # <stdin>
        release.set()


    async def main():
        asyncio.current_task().set_name("cli-main")
        release = asyncio.Event()
        spinner = asyncio.create_task(busy(), name="busy-worker")
        asyncio.create_task(wait_for_stdin(release), name="cli-stdin")
        workers = [asyncio.create_task(worker(release), name=f"cli-worker-{n}") for n in (1, 2)]
        gathered = asyncio.gather(*workers)
        for _ in range(5):
            await asyncio.sleep(0)
        print("ready", flush=True)
        await gathered  # <main>
        spinner.cancel()


    asyncio.run(main())
    """
)


def line_of(marker):
    found = [n for n, text in enumerate(PROGRAM.splitlines(), 1) if text.endswith(f"# <{marker}>")]
    assert len(found) == 1, marker
    return found[0]


def environment():
    return {k: v for k, v in os.environ.items() if not k.startswith("FERROLOOP_")}


def ferroloop(*args, cwd=None):
    return subprocess.run(
        [*FERROLOOP, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False,
        env=environment(),
    )


@pytest.fixture
def program(tmp_path):
    """The program running under ``run --monitor monitor.sock`` (relative to its cwd):
    ``(script path, socket path)``; its stdin is closed and its exit checked after."""
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [*FERROLOOP, "run", "--monitor", "monitor.sock", str(script)],
        cwd=tmp_path, env=environment(), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        yield str(script), str(tmp_path / "monitor.sock")
        out, err = proc.communicate("", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (0, "", "")
    assert not os.path.exists(tmp_path / "monitor.sock")


def test_ps_prints_the_task_tree_of_the_running_program(program):
    script, path = program
    result = ferroloop("ps", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        rf"Task 'busy-worker' (waiting|scheduled) in busy\(\) at {re.escape(script)}:"
        rf"{line_of('busy')}",
        lines[0],
    )
    assert lines[1:] == [
        f"Task 'cli-main' waiting in main() at {script}:{line_of('main')}",
        f"  Task 'cli-worker-1' waiting in worker() at {script}:{line_of('worker')}  [gather]",
        f"  Task 'cli-worker-2' waiting in worker() at {script}:{line_of('worker')}  [gather]",
        f"Task 'cli-stdin' waiting in wait_for_stdin() at {script}:{line_of('stdin')}",
    ]
    assert result.stderr == ""


def test_top_redraws_stats_and_tasks(program):
    _, path = program
    result = ferroloop("top", path, "--iterations", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout  # not a terminal: no screen clearing
    screens = result.stdout.split("\n\n")
    assert len(screens) == 2
    for number, screen in enumerate(screens):
        lines = screen.splitlines()
        assert re.fullmatch(
            rf"ferroloop top: {re.escape(path)}  pid \d+  \d\d:\d\d:\d\d", lines[0]
        )
        assert re.fullmatch(r"iterations [\d,]+( \(\+[\d,]+/s\))?   callbacks [\d,]+.*", lines[1])
        assert ("/s)" in lines[1]) == (number == 1)  # rates from the second screen on
        assert re.match(r"busy \d+\.\d{3} s   polling \d+\.\d{3} s", lines[2])
        assert re.fullmatch(
            r"ready \d+   timers \d+ \(\d+ cancelled\)   transports \d+   watched fds \d+",
            lines[3],
        )
        assert lines[4:6] == [
            "busiest tasks (time spent running since callback timing began):",
            "   seconds     steps  task",
        ]
        assert re.fullmatch(r" +\d+\.\d{3} +\d+  busy-worker", lines[6])  # the spinner


STATS = {
    "iterations": 1200, "callbacks": 3400, "running_seconds": 10.0, "polling_seconds": 9.5,
    "busy_seconds": 0.5, "ready": 1, "timers": 2, "cancelled_timers": 0, "watched_fds": 3,
    "transports": 4, "signal_handlers": 0, "blocking_threshold": None,
}


def test_top_screen_of_busiest_tasks_and_of_a_blocked_loop():
    from ferroloop.__main__ import _top_screen

    tasks = [
        {"task": "hot", "seconds": 1.5, "steps": 1200, "done": False},
        {"task": "warm", "seconds": 0.25, "steps": 7, "done": True},
    ]
    later = dict(STATS, iterations=1300, running_seconds=12.0, busy_seconds=1.0)
    answer = {"pid": 7, "stats": later, "tasks": tasks, "timed": True}
    lines = _top_screen("/m.sock", answer, (0.0, STATS), 2.0)
    assert lines[1:] == [
        "iterations 1,300 (+50/s)   callbacks 3,400 (+0/s)",
        "busy 1.000 s   polling 9.500 s   busy 25% since the last screen",
        "ready 1   timers 2 (0 cancelled)   transports 4   watched fds 3",
        "busiest tasks (time spent running since callback timing began):",
        "   seconds     steps  task",
        "     1.500      1200  hot",
        "     0.250         7  warm  (done)",
    ]
    blocked = {"error": "the event loop has not answered for 1.0 s: it is blocked "
                        "(or very busy)", "blocked": True, "running": True, "stats": STATS}
    lines = _top_screen("/m.sock", blocked, None, 0.0)
    assert lines[1].startswith("iterations 1,200   callbacks 3,400")
    assert lines[-1] == "monitor: " + blocked["error"]


def test_top_screen_ends_with_timer_lag_and_the_slowest_callbacks():
    from ferroloop.__main__ import _top_screen

    stats = dict(
        STATS,
        timer_lag={"timers": 40, "p50": 0.0002, "p99": 0.012, "max": 0.15},
        slowest_callbacks=[
            {"seconds": 0.15, "ago": 3.0, "handle": "<Handle <TaskStepMethWrapper>()>",
             "task": "<Task pending name='hog' coro=<hog() running at x.py:3>>"},
            {"seconds": 0.02, "ago": 9.0, "handle": "<Handle sleep()>", "task": None},
        ],
    )
    answer = {"pid": 7, "stats": stats, "tasks": [], "timed": True}
    lines = _top_screen("/m.sock", answer, None, 0.0)
    assert lines[-5:] == [
        "timer lag (last 40 timers): p50 0.20 ms   p99 12.00 ms   max 150.00 ms",
        "slowest callbacks (last 60 s):",
        "   seconds  callback",
        "     0.150  <Task pending name='hog' coro=<hog() running at x.py:3>>",
        "     0.020  <Handle sleep()>",
    ]


def test_ps_and_top_without_a_monitor(tmp_path):
    missing = str(tmp_path / "nothing.sock")
    for command in (["ps", missing], ["top", missing, "--iterations", "1"]):
        result = ferroloop(*command)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            f"python -m ferroloop {command[0]}: cannot reach the monitor at {missing}: "
            "[Errno 2] No such file or directory\n"
        )


def test_run_monitor_on_a_path_that_cannot_serve_warns_and_runs(tmp_path):
    (tmp_path / "taken").write_text("not a socket")
    script = tmp_path / "hello.py"
    script.write_text("import asyncio\nprint(asyncio.run(asyncio.sleep(0, 'ran')))\n")
    result = ferroloop("run", "--monitor", "taken", str(script), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "ran\n"
    assert f"FERROLOOP_MONITOR={tmp_path / 'taken'}: no monitor for " in result.stderr
    assert "exists and is not a socket" in result.stderr
    assert (tmp_path / "taken").read_text() == "not a socket"
