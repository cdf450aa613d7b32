"""A pytest-asyncio test module using subprocesses, pipes and signal handlers, run by
an inner pytest (``pytester``, in a subprocess) with and without ``--ferroloop``.

``test_pytest_plugin.py`` checks the plugin itself; this module checks that what the
processes/pipes/signals issue added works for pytest-asyncio users on ferroloop: the
inner tests pass, and they ran on the loop they were meant to run on.
"""

from __future__ import annotations

import pytest_asyncio  # noqa: F401 - the plugin's subject must be installed (requirements-dev.txt)

pytest_plugins = ["pytester"]

STRICT = ("-W", "error::pytest.PytestDeprecationWarning", "-s")

INNER = '''
import asyncio
import os
import signal
import sys

import pytest


def loop_name():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


@pytest.mark.asyncio
async def test_subprocess_communicate():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read()[::-1])",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(b"ferroloop")
    assert (out, proc.returncode) == (b"poolorref", 0)
    print(f"\\nLOOP subprocess {loop_name()}")


@pytest.mark.asyncio
async def test_read_pipe():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", 0)
    )
    os.write(w, b"line one\\nline two\\n")
    os.close(w)
    assert await reader.read() == b"line one\\nline two\\n"
    transport.close()
    print(f"\\nLOOP pipe {loop_name()}")


@pytest.mark.asyncio
async def test_signal_handler():
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, got.set)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 5)
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1)
    print(f"\\nLOOP signal {loop_name()}")
'''


def loop_lines(result):
    return sorted(line for line in result.outlines if line.startswith("LOOP "))


def test_pytest_asyncio_module_with_processes_pipes_signals_on_ferroloop(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(*STRICT, "--ferroloop")
    result.assert_outcomes(passed=3)
    assert loop_lines(result) == [
        "LOOP pipe ferroloop._loop.Loop",
        "LOOP signal ferroloop._loop.Loop",
        "LOOP subprocess ferroloop._loop.Loop",
    ]


def test_the_same_module_without_the_flag_runs_on_asyncio(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess(*STRICT)
    result.assert_outcomes(passed=3)
    lines = loop_lines(result)
    assert [line.split()[1] for line in lines] == ["pipe", "signal", "subprocess"]
    assert all(line.split()[2].startswith("asyncio.") for line in lines), lines
