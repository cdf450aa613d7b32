"""Debug mode: how it is switched on, and the slow-callback warning."""

import asyncio
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

# A "slow" callback sleeps SLOW seconds (a sleep never ends early, so it is always
# above THRESHOLD, the loops' slow_callback_duration). Log lines are filtered by the
# callback's name: an unrelated callback that a busy machine delays past the
# threshold cannot add a line.
SLOW = 0.1
THRESHOLD = 0.02


def slow_callback():
    time.sleep(SLOW)


def fast_callback():
    pass


async def slow_coro():
    time.sleep(SLOW)


def strip_created_at(text):
    """Drop the debug-mode ' created at FILE:LINE' part of a handle repr."""
    return re.sub(r" created at \S+:\d+", "", text)


def asyncio_warnings(caplog, about=None):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
        and (about is None or about in r.getMessage())
    ]


def collect_slow_logs(loop, caplog, schedule, debug=True, about="slow_", threshold=THRESHOLD):
    """Warnings logged while ``schedule(loop)``'s callbacks run (only lines mentioning ``about``)."""
    caplog.clear()
    loop.set_debug(debug)
    loop.slow_callback_duration = threshold
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        schedule(loop)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
    return asyncio_warnings(caplog, about)


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
    match = re.fullmatch(
        r"Executing <Handle slow_callback\(\) at \S+test_debug\.py:\d+"
        r"( created at \S+:\d+)?> took (\d+\.\d{3}) seconds",
        lines[0],
    )
    assert match, lines[0]
    # Any duration is fine as long as it is the slow callback's (above the threshold).
    assert float(match.group(2)) >= THRESHOLD, lines[0]


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
        # A threshold far above what a stalled machine could make of an empty callback.
        return collect_slow_logs(
            loop, caplog, lambda lp: lp.call_soon(fast_callback), about=None, threshold=1.0
        )

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


# ------------------------------------------------- set_debug on a running loop


def test_set_debug_while_running(loop, caplog):
    """set_debug() inside a running loop: slow callbacks are logged from then on, and
    coroutine origin tracking follows from the next iteration; set_debug(False) undoes both."""
    loop.set_debug(False)
    loop.slow_callback_duration = THRESHOLD
    base_depth = sys.get_coroutine_origin_tracking_depth()

    def slow_before():
        time.sleep(SLOW)

    def slow_during():
        time.sleep(SLOW)

    def slow_after():
        time.sleep(SLOW)

    async def probe():
        return sys.get_coroutine_origin_tracking_depth()

    async def tracking_state():
        await asyncio.sleep(0)  # the switch is applied at the start of an iteration
        coro = probe()
        has_origin = coro.cr_origin is not None
        return await coro, has_origin

    async def run_callback(fn):
        # fn runs before the marker (FIFO), so it has run when the marker is done.
        loop.call_soon(fn)
        marker = loop.create_future()
        loop.call_soon(marker.set_result, None)
        await marker

    async def main():
        states = [("off", loop.get_debug(), await tracking_state())]
        await run_callback(slow_before)
        loop.set_debug(True)
        await run_callback(slow_during)
        states.append(("on", loop.get_debug(), await tracking_state()))
        loop.set_debug(False)
        await run_callback(slow_after)
        states.append(("off-again", loop.get_debug(), await tracking_state()))
        return states

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        states = loop.run_until_complete(main())
    off, on, off_again = states
    untracked = (base_depth, base_depth > 0)
    assert off == ("off", False, untracked)
    assert on[:2] == ("on", True) and on[2][0] > 0 and on[2][1] is True
    assert off_again == ("off-again", False, untracked)
    lines = asyncio_warnings(caplog, "slow_")
    assert len(lines) == 1 and "slow_during" in lines[0], lines
    assert sys.get_coroutine_origin_tracking_depth() == base_depth
