"""``python -m ferroloop run --blocking-threshold SECONDS``: real subprocesses.

A program that blocks its loop (``time.sleep`` in a task) must get the detector's
warning on stderr, naming the program's file and line, however it creates its loop;
the option belongs to ``run`` only when it comes before the program. ferroloop only:
plain ``python`` has no such option to compare with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

FERROLOOP_RUN = [sys.executable, "-m", "ferroloop", "run"]
ENV_THRESHOLD = "FERROLOOP_BLOCKING_THRESHOLD"

# Blocks its loop for 0.3 s in a task, in the loop made by ``how`` (its first argument),
# then prints what the loop's detector was set to and the environment variable.
BLOCKER = textwrap.dedent(
    """
    import asyncio, os, sys, time

    import ferroloop


    async def slow_handler():
        time.sleep(0.3)  # BLOCKS-THE-LOOP


    async def main():
        await asyncio.create_task(slow_handler(), name="slow-handler")
        await asyncio.sleep(0.1)  # the loop polls: the stall has ended
        loop = asyncio.get_running_loop()
        print(type(loop).__module__.split(".")[0], loop.get_blocking_threshold(),
              os.environ.get("FERROLOOP_BLOCKING_THRESHOLD"), sys.argv[1:])


    how = sys.argv[1] if len(sys.argv) > 1 else "asyncio.run"
    if how == "asyncio.run":
        asyncio.run(main())
    elif how == "ferroloop.run":
        ferroloop.run(main())
    elif how == "new_event_loop":
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
    """
)
BLOCKING_LINE = next(
    n for n, line in enumerate(BLOCKER.splitlines(), 1) if line.endswith("# BLOCKS-THE-LOOP")
)


def run(command, cwd, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != ENV_THRESHOLD}
    env.update(env_changes)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def blocker(tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    path = folder / "blocker.py"
    path.write_text(BLOCKER)
    return path


def assert_blocking_warning(stderr, path):
    assert "the event loop has been blocked for" in stderr, stderr
    assert "by task 'slow-handler'" in stderr
    assert f'File "{path}", line {BLOCKING_LINE}, in slow_handler' in stderr
    assert "time.sleep(0.3)  # BLOCKS-THE-LOOP" in stderr
    assert "the event loop was blocked for" in stderr and "in total" in stderr
    assert stderr.count("has been blocked") == 1  # one report per stall


@pytest.mark.parametrize("how", ["asyncio.run", "ferroloop.run", "new_event_loop"])
def test_blocking_program_gets_the_warning(blocker, tmp_path, how):
    result = run(FERROLOOP_RUN + ["--blocking-threshold", "50ms", "app/blocker.py", how],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ferroloop 0.05 0.05 ['{how}']\n"
    assert_blocking_warning(result.stderr, blocker)


def test_option_with_equals_sign_and_a_module(blocker, tmp_path):
    result = run(FERROLOOP_RUN + ["--blocking-threshold=0.05", "-m", "app.blocker"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ferroloop 0.05 0.05 []\n"
    assert_blocking_warning(result.stderr, blocker)


def test_option_wins_over_the_environment(blocker, tmp_path):
    result = run(FERROLOOP_RUN + ["--blocking-threshold", "0.05", "app/blocker.py"],
                 tmp_path, FERROLOOP_BLOCKING_THRESHOLD="10")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ferroloop 0.05 0.05 []\n"
    assert_blocking_warning(result.stderr, blocker)


def test_without_the_option_nothing_is_reported(blocker, tmp_path):
    result = run(FERROLOOP_RUN + ["app/blocker.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ferroloop None None []\n"
    assert result.stderr == ""


def test_option_after_the_program_is_the_programs(blocker, tmp_path):
    result = run(FERROLOOP_RUN + ["app/blocker.py", "asyncio.run", "--blocking-threshold",
                                  "0.05"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "ferroloop None None ['asyncio.run', '--blocking-threshold', '0.05']\n"
    )
    assert result.stderr == ""


@pytest.mark.parametrize(
    "value, error",
    [
        ("abc", "argument --blocking-threshold: not a duration: 'abc'"),
        ("0", "argument --blocking-threshold: the blocking threshold must be a positive"),
        ("-1", "argument --blocking-threshold: the blocking threshold must be a positive"),
        ("inf", "argument --blocking-threshold: the blocking threshold must be a positive"),
    ],
)
def test_bad_threshold_is_a_usage_error(blocker, tmp_path, value, error):
    result = run(FERROLOOP_RUN + ["--blocking-threshold", value, "app/blocker.py"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: python -m ferroloop run")
    assert error in result.stderr


def test_option_without_a_value_is_a_usage_error(tmp_path):
    result = run(FERROLOOP_RUN + ["--blocking-threshold"], tmp_path)
    assert result.returncode == 2
    assert "argument --blocking-threshold: expected one argument" in result.stderr


def test_help_lists_the_option(tmp_path):
    result = run(FERROLOOP_RUN + ["--help"], tmp_path)
    assert result.returncode == 0
    assert "--blocking-threshold SECONDS" in result.stdout
