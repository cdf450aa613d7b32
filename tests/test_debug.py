"""Debug mode: how it is switched on, and the slow-callback warning."""

import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest

from looptest_support import normalize_text

PROBE = r"""
import asyncio, json, sys
impl = sys.argv[1]
if impl == "asyncio":
    new_loop, run = asyncio.SelectorEventLoop, asyncio.run
else:
    import ferroloop
    new_loop, run = ferroloop.new_event_loop, ferroloop.run
loop = new_loop()
fresh = loop.get_debug()
loop.close()

async def main():
    return asyncio.get_running_loop().get_debug()

print(json.dumps({"new_loop": fresh, "run": run(main())}))
"""


def probe_debug(impl, extra_args=(), env_updates=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    env.update(env_updates or {})
    proc = subprocess.run(
        [sys.executable, *extra_args, "-c", PROBE, impl],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "extra_args, env, expected",
    [
        ((), {}, False),
        ((), {"PYTHONASYNCIODEBUG": "1"}, True),
        ((), {"PYTHONASYNCIODEBUG": ""}, False),
        (("-X", "dev"), {}, True),
        ((), {"PYTHONDEVMODE": "1"}, True),
        (("-E",), {"PYTHONASYNCIODEBUG": "1"}, False),
    ],
    ids=["default", "env-1", "env-empty", "X-dev", "PYTHONDEVMODE", "E-ignores-env"],
)
def test_debug_mode_from_environment(loop_impl, flavor, extra_args, env, expected):
    reference = probe_debug("asyncio", extra_args, env)
    actual = probe_debug(loop_impl, extra_args, env)
    assert actual == reference
    assert actual == {"new_loop": expected, "run": expected}


def test_get_set_debug(compare):
    def scenario(loop):
        res = [loop.get_debug()]
        loop.set_debug(True)
        res.append(loop.get_debug())
        loop.set_debug(False)
        res.append(loop.get_debug())
        return res

    expected_default = sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )
    assert compare(scenario) == [expected_default, True, False]


def test_slow_callback_duration_default_and_settable(compare):
    def scenario(loop):
        default = loop.slow_callback_duration
        loop.slow_callback_duration = 0.25
        return default, loop.slow_callback_duration

    assert compare(scenario) == (0.1, 0.25)


def test_coroutine_origin_tracking_in_debug_mode(compare):
    def scenario(loop):
        before = sys.get_coroutine_origin_tracking_depth()

        async def main():
            return sys.get_coroutine_origin_tracking_depth()

        inside = loop.run_until_complete(main())
        return before, inside, sys.get_coroutine_origin_tracking_depth()

    before, inside, after = compare(scenario, debug=True)
    assert inside > 0 and after == before


# ------------------------------------------------------- slow callbacks


def slow_callback():
    time.sleep(0.03)


def fast_callback():
    pass


async def slow_coro():
    time.sleep(0.03)


def strip_created_at(text):
    """Drop the debug-mode ' created at FILE:LINE' part of a handle repr."""
    return re.sub(r" created at \S+:\d+", "", text)


def asyncio_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


def collect_slow_logs(loop, caplog, schedule, debug=True):
    caplog.clear()
    loop.set_debug(debug)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        schedule(loop)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
    return asyncio_warnings(caplog)


def test_slow_callback_logged_for_handle(compare, caplog):
    lines = compare(lambda loop: [
        re.sub(r"\d+\.\d{3} seconds", "N seconds", strip_created_at(line))
        for line in collect_slow_logs(loop, caplog, lambda lp: lp.call_soon(slow_callback))
    ])
    assert len(lines) == 1
    assert lines[0].startswith("Executing <Handle slow_callback() at ")
    assert lines[0].endswith(" took N seconds")


def test_slow_callback_message_format(loop, caplog):
    lines = collect_slow_logs(loop, caplog, lambda lp: lp.call_soon(slow_callback))
    assert len(lines) == 1
    assert re.fullmatch(
        r"Executing <Handle slow_callback\(\) at \S+test_debug\.py:\d+"
        r"( created at \S+:\d+)?> took 0\.0[3-9]\d seconds",
        lines[0],
    ), lines[0]
    assert "Executing <Handle" in lines[0] and "took" in lines[0]


def test_slow_callback_logged_for_timer_handle(compare, caplog):
    lines = compare(lambda loop: [
        normalize_text(strip_created_at(line))
        for line in collect_slow_logs(loop, caplog, lambda lp: lp.call_later(0.001, slow_callback))
    ])
    assert len(lines) == 1
    assert lines[0].startswith("Executing <TimerHandle when=N.N slow_callback() at ")
    assert lines[0].endswith(" took N.N seconds")


def test_slow_task_step_logged_with_task_repr(compare, caplog):
    def scenario(loop):
        lines = collect_slow_logs(loop, caplog, lambda lp: lp.create_task(slow_coro()))
        return [re.sub(r"Task-\d+", "Task-N", normalize_text(strip_created_at(line))) for line in lines]

    lines = compare(scenario)
    assert len(lines) == 1
    assert lines[0].startswith("Executing <Task finished name='Task-N' coro=<slow_coro() done")
    assert lines[0].endswith(" took N.N seconds")


def test_slow_callback_full_message_identical(compare, caplog):
    """Strict: the whole message, incl. the 'created at' location, matches."""

    def scenario(loop):
        return [
            normalize_text(line)
            for line in collect_slow_logs(loop, caplog, lambda lp: lp.call_soon(slow_callback))
        ]

    lines = compare(scenario)
    assert len(lines) == 1


def test_fast_callback_not_logged(compare, caplog):
    def scenario(loop):
        return collect_slow_logs(loop, caplog, lambda lp: lp.call_soon(fast_callback))

    assert compare(scenario) == []


def test_slow_callback_not_logged_without_debug(compare, caplog):
    def scenario(loop):
        return collect_slow_logs(loop, caplog, lambda lp: lp.call_soon(slow_callback), debug=False)

    assert compare(scenario) == []


def test_debug_handle_repr_has_creation_location(compare):
    def scenario(loop):
        h = loop.call_soon(fast_callback)
        text = repr(h)
        h.cancel()
        return normalize_text(text)

    text = compare(scenario, debug=True)
    assert re.fullmatch(r"<Handle fast_callback\(\) at \S+:\d+ created at \S+test_debug\.py:\d+>", text), text


def test_debug_cancelled_handle_keeps_repr(compare):
    def scenario(loop):
        h = loop.call_soon(fast_callback)
        h.cancel()
        return normalize_text(repr(h))

    text = compare(scenario, debug=True)
    assert text.startswith("<Handle cancelled fast_callback() at ")
