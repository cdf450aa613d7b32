"""``loop.stats()``' time measurements (ferroloop only: stock asyncio has no such API):
how late timers fired (always on), and the opt-in per-callback timing — the slowest
recent callbacks and the busiest tasks. Each is checked against what the test made the
loop do (a known block, a known busy task). The counters: ``test_stats.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

ferroloop = pytest.importorskip("ferroloop")


@pytest.fixture
def loop():
    loop = ferroloop.new_event_loop()
    yield loop
    loop.close()


def test_timer_lag_before_any_timer(loop):
    assert loop.stats()["timer_lag"] == {"timers": 0, "p50": None, "p99": None, "max": None}


def test_timer_lag_measures_a_timer_held_up_by_a_blocking_callback(loop):
    fired = []
    loop.call_later(0.01, fired.append, "late")
    loop.call_soon(time.sleep, 0.15)  # blocks past the timer's deadline
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    lag = loop.stats()["timer_lag"]
    assert fired == ["late"]
    assert lag["timers"] == 2
    assert 0.12 <= lag["max"] < 1.0, lag  # the held-up timer: ~0.14 s late
    assert lag["p50"] <= lag["p99"] <= lag["max"]


def test_timer_lag_of_timers_on_an_idle_loop_is_small(loop):
    async def main():
        for _ in range(20):
            await asyncio.sleep(0.002)

    loop.run_until_complete(main())
    lag = loop.stats()["timer_lag"]
    assert lag["timers"] == 20
    assert lag["p50"] < 0.05, lag  # generous: 2 shared cores


def test_callback_timing_is_off_by_default(loop):
    loop.call_soon(time.sleep, 0.01)
    loop.call_soon(loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert stats["callback_timing"] is False
    assert stats["slowest_callbacks"] is None and stats["busiest_tasks"] is None


def test_slowest_callbacks_name_the_slow_handle_and_its_task(loop):
    async def hog():
        time.sleep(0.08)  # one slow step of this task
        await asyncio.sleep(0)

    loop.set_callback_timing(True)
    loop.call_soon(time.sleep, 0.05)
    for _ in range(30):
        loop.call_soon(lambda: None)
    loop.run_until_complete(asyncio.ensure_future(hog(), loop=loop))
    slowest = loop.stats()["slowest_callbacks"]
    assert len(slowest) == 10
    assert [s["seconds"] for s in slowest] == sorted((s["seconds"] for s in slowest), reverse=True)
    first, second = slowest[0], slowest[1]
    assert first["seconds"] >= 0.075 and "hog" in first["task"], first
    # (3.13+ show a callback's arguments in reprs only in debug mode.)
    assert second["seconds"] >= 0.045 and "<Handle sleep(" in second["handle"], second
    assert second["task"] is None
    assert all(0 <= s["ago"] < 5 for s in slowest)


def test_busiest_tasks_rank_tasks_by_their_run_time(loop):
    async def busy():
        for _ in range(4):
            time.sleep(0.02)
            await asyncio.sleep(0)

    async def lazy():
        for _ in range(4):
            await asyncio.sleep(0)

    async def main():
        tasks = [
            asyncio.create_task(lazy(), name="lazy"),
            asyncio.create_task(busy(), name="busy"),
        ]
        await asyncio.gather(*tasks)
        return loop.stats()["busiest_tasks"]

    loop.set_callback_timing(True)
    busiest = loop.run_until_complete(main())
    by_name = {t["task"]: t for t in busiest}
    assert busiest[0]["task"] == "busy"
    assert by_name["busy"]["seconds"] >= 0.075
    assert by_name["busy"]["steps"] == 5 and by_name["lazy"]["steps"] == 5
    assert by_name["busy"]["done"] and by_name["lazy"]["done"]
    assert by_name["lazy"]["seconds"] < by_name["busy"]["seconds"]


def test_collected_tasks_leave_the_table(loop):
    async def short():
        await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(short() for _ in range(50)))

    loop.set_callback_timing(True)
    loop.run_until_complete(main())
    assert loop.stats()["busiest_tasks"] == []  # no task is alive any more


def test_turning_timing_off_forgets_what_was_measured(loop):
    loop.set_callback_timing(True)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop.stats()["slowest_callbacks"]
    loop.set_callback_timing(False)
    loop.set_callback_timing(True)
    assert loop.stats()["slowest_callbacks"] == []


def test_environment_variable_turns_timing_on():
    code = (
        "import ferroloop; loop = ferroloop.new_event_loop(); "
        "print(loop.stats()['callback_timing']); loop.close()"
    )
    env = {**os.environ, "FERROLOOP_CALLBACK_TIMING": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["True"], out.stderr
