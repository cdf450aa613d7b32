"""Where a forgotten task was created (ferroloop only: stock asyncio names the site only
in debug mode, through a full ``source_traceback``).

With task origins on, "Task was destroyed but it is pending!" and "Task exception was
never retrieved" carry ``task_created_at`` (``file:line in function`` of the call that
created the task's coroutine); the message is asyncio's, unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

import pytest

ferroloop = pytest.importorskip("ferroloop")

HERE = os.path.abspath(__file__)


@pytest.fixture
def loop():
    loop = ferroloop.new_event_loop()
    reports = []
    loop.set_exception_handler(lambda lp, context: reports.append(context))
    loop.reports = reports
    yield loop
    loop.close()


async def forever():
    await asyncio.Event().wait()


async def fails():
    raise ValueError("nobody reads this")


def lose_a_pending_task(loop):
    async def main():
        asyncio.ensure_future(forever())  # the site reported
        await asyncio.sleep(0)

    # Dropping every reference to a pending task: the collector destroys it.
    loop.run_until_complete(main())
    for _ in range(3):
        gc.collect()
    return [r for r in loop.reports if r["message"].startswith("Task was destroyed")]


def test_a_destroyed_pending_task_names_where_it_was_created(loop):
    loop.set_task_origins(True)
    assert loop.get_task_origins()
    reports = lose_a_pending_task(loop)
    assert len(reports) == 1
    site = reports[0]["task_created_at"]
    assert site.startswith(f"{HERE}:") and site.endswith(" in main"), site
    line = int(site[len(HERE) + 1 :].split(" ")[0])
    with open(HERE) as source:
        assert "the site reported" in source.read().splitlines()[line - 1]


def test_an_unretrieved_exception_names_where_the_task_was_created(loop):
    async def main():
        asyncio.ensure_future(fails())
        await asyncio.sleep(0.01)

    loop.set_task_origins(True)
    loop.run_until_complete(main())
    gc.collect()
    reports = [r for r in loop.reports if r["message"] == "Task exception was never retrieved"]
    assert len(reports) == 1
    assert reports[0]["task_created_at"].endswith(" in main")
    assert isinstance(reports[0]["exception"], ValueError)


def test_off_by_default_and_nothing_is_added(loop):
    assert not loop.get_task_origins()
    reports = lose_a_pending_task(loop)
    assert len(reports) == 1 and "task_created_at" not in reports[0]


def test_the_tracking_depth_is_restored_when_the_loop_stops(loop):
    depth = sys.get_coroutine_origin_tracking_depth()
    seen = []

    async def main():
        seen.append(sys.get_coroutine_origin_tracking_depth())

    loop.set_task_origins(True)
    loop.run_until_complete(main())
    assert seen == [max(depth, 1)]
    assert sys.get_coroutine_origin_tracking_depth() == depth


def test_turned_on_while_running(loop):
    async def main():
        loop.set_task_origins(True)
        await asyncio.sleep(0)  # applied by a threadsafe callback in the loop thread
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) >= 1


def test_debug_mode_keeps_asyncios_source_traceback(loop):
    loop.set_debug(True)
    loop.set_task_origins(True)
    reports = lose_a_pending_task(loop)
    assert len(reports) == 1
    assert "source_traceback" in reports[0] and "task_created_at" not in reports[0]


def test_the_default_handler_prints_the_site():
    code = (
        "import asyncio, gc, ferroloop\n"
        "async def forever():\n"
        "    await asyncio.Event().wait()\n"
        "async def main():\n"
        "    asyncio.ensure_future(forever())\n"
        "    await asyncio.sleep(0)\n"
        "loop = ferroloop.new_event_loop()\n"
        "loop.run_until_complete(main())\n"
        "gc.collect()\n"
        "loop.close()\n"
    )
    env = {**os.environ, "FERROLOOP_TASK_ORIGINS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Task was destroyed but it is pending!" in out.stderr
    assert "task_created_at: '<string>:5 in main'" in out.stderr, out.stderr


def test_cli_task_origins_flag(tmp_path):
    program = tmp_path / "forgets.py"
    program.write_text(
        "import asyncio, gc\n"
        "async def forever():\n"
        "    await asyncio.Event().wait()\n"
        "async def main():\n"
        "    asyncio.ensure_future(forever())\n"
        "    await asyncio.sleep(0)\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.run_until_complete(main())\n"
        "gc.collect()\n"
        "loop.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FERROLOOP_TASK_ORIGINS"}
    command = [sys.executable, "-m", "ferroloop", "run", "--task-origins", str(program)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"task_created_at: '{program}:5 in main'" in out.stderr, out.stderr
