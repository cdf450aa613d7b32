"""run_forever / run_until_complete / stop / close, runners and policies."""

import asyncio
import sys
import threading

import pytest

from looptest_support import REFERENCE_LOOP, outcome, stop_after


class Boom(Exception):
    pass


# --------------------------------------------------------- basic properties


def test_loop_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_is_running_and_is_closed(compare):
    def scenario(loop):
        states = [("before", loop.is_running(), loop.is_closed())]
        loop.call_soon(lambda: states.append(("inside", loop.is_running(), loop.is_closed())))
        loop.call_soon(loop.stop)
        loop.run_forever()
        states.append(("after", loop.is_running(), loop.is_closed()))
        loop.close()
        states.append(("closed", loop.is_running(), loop.is_closed()))
        return states

    assert compare(scenario) == [
        ("before", False, False),
        ("inside", True, False),
        ("after", False, False),
        ("closed", False, True),
    ]


def test_running_loop_is_registered_only_while_running(loop):
    seen = {}

    async def main():
        seen["running"] = asyncio.get_running_loop()
        seen["get_event_loop"] = asyncio.get_event_loop()
        seen["private"] = asyncio._get_running_loop()
        seen["task_loop"] = asyncio.current_task().get_loop()

    loop.run_until_complete(main())
    assert all(v is loop for v in seen.values()), seen
    assert asyncio._get_running_loop() is None
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


# ------------------------------------------------------- run_until_complete


def test_run_until_complete_returns_result(compare):
    def scenario(loop):
        async def coro(x):
            await asyncio.sleep(0)
            return x + 1

        fut = loop.create_future()
        loop.call_soon(fut.set_result, "from-future")
        done = loop.create_future()
        done.set_result("already-done")

        class Awaitable:
            def __await__(self):
                return coro(41).__await__()

        return (
            loop.run_until_complete(coro(1)),
            loop.run_until_complete(fut),
            loop.run_until_complete(done),
            loop.run_until_complete(Awaitable()),
            loop.run_until_complete(loop.create_task(coro(9))),
        )

    assert compare(scenario) == (2, "from-future", "already-done", 42, 10)


def test_run_until_complete_propagates_exception(loop):
    err = Boom("bad")

    async def coro():
        await asyncio.sleep(0)
        raise err

    with pytest.raises(Boom) as info:
        loop.run_until_complete(coro())
    assert info.value is err
    # the loop is still usable
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_run_until_complete_exception_outcomes(compare):
    def scenario(loop):
        async def raises(exc):
            await asyncio.sleep(0)
            raise exc

        fut = loop.create_future()
        fut.cancel()
        return [
            outcome(loop.run_until_complete, raises(Boom("x"))),
            outcome(loop.run_until_complete, raises(ValueError("v"))),
            outcome(loop.run_until_complete, fut),
            outcome(loop.run_until_complete, raises(StopIteration("s"))),
            loop.is_running(),
        ]

    res = compare(scenario)
    assert res[0] == ("raise", Boom, "x")
    assert res[2][:2] == ("raise", asyncio.CancelledError)


def test_run_until_complete_rejects_non_awaitable(compare):
    def scenario(loop):
        return [outcome(loop.run_until_complete, x) for x in (1, None, "str")]

    res = compare(scenario)
    assert res == [("raise", TypeError, "An asyncio.Future, a coroutine or an awaitable is required")] * 3


def test_run_until_complete_future_of_another_loop(compare):
    def scenario(loop):
        other = REFERENCE_LOOP()
        try:
            fut = other.create_future()
            return outcome(loop.run_until_complete, fut)
        finally:
            other.close()

    assert compare(scenario) == (
        "raise",
        ValueError,
        "The future belongs to a different loop than the one specified as the loop argument",
    )


def test_run_until_complete_future_of_same_impl_other_loop(new_loop):
    a, b = new_loop(), new_loop()
    fut = b.create_future()
    with pytest.raises(ValueError, match="belongs to a different loop"):
        a.run_until_complete(fut)


def test_run_until_complete_stopped_before_future_done(compare):
    def scenario(loop):
        async def stops_loop():
            loop.stop()
            await asyncio.sleep(10)

        task = loop.create_task(stops_loop())
        res = outcome(loop.run_until_complete, task)
        task.cancel()
        after = outcome(loop.run_until_complete, asyncio.sleep(0, "usable"))
        return res, task.cancelled(), after

    assert compare(scenario) == (
        ("raise", RuntimeError, "Event loop stopped before Future completed."),
        True,
        ("ok", "usable"),
    )


def test_run_until_complete_base_exception_propagates(compare):
    def scenario(loop):
        async def interrupt():
            await asyncio.sleep(0)
            raise KeyboardInterrupt("ki")

        res = outcome(loop.run_until_complete, interrupt())
        return res, loop.is_running(), outcome(loop.run_until_complete, asyncio.sleep(0, 1))

    assert compare(scenario) == (("raise", KeyboardInterrupt, "ki"), False, ("ok", 1))


# ------------------------------------------------------- re-entrancy errors


@pytest.mark.parametrize("method", ["run_forever", "run_until_complete"])
def test_run_while_running(compare, method):
    # One attempt per run: CPython 3.13.0's run_forever() resets the running
    # state when a nested call fails, so a second nested attempt would hang.
    def scenario(loop):
        res = []

        def cb():
            args = (loop.create_future(),) if method == "run_until_complete" else ()
            res.append(outcome(getattr(loop, method), *args))
            loop.stop()

        loop.call_soon(cb)
        loop.run_forever()
        return res

    assert compare(scenario) == [("raise", RuntimeError, "This event loop is already running")]


@pytest.mark.parametrize("method", ["run_forever", "run_until_complete"])
@pytest.mark.parametrize(
    "outer_kind, inner_kind",
    [("reference", "tested"), ("tested", "reference"), ("tested", "tested")],
)
def test_run_while_another_loop_is_running(new_loop, outer_kind, inner_kind, method):
    # One attempt per test: CPython 3.13.0's run_forever() clears the
    # thread's running loop when a nested call fails.
    def make(kind):
        return REFERENCE_LOOP() if kind == "reference" else new_loop()

    outer, inner = make(outer_kind), make(inner_kind)
    try:
        res = []

        def cb():
            args = (inner.create_future(),) if method == "run_until_complete" else ()
            res.append(outcome(getattr(inner, method), *args))
            res.append(inner.is_running())
            outer.stop()

        outer.call_soon(cb)
        stop_after(outer, 5)
        outer.run_forever()
        msg = "Cannot run the event loop while another loop is running"
        assert res == [("raise", RuntimeError, msg), False]
        # the inner loop was not damaged by the failed attempt
        assert inner.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        outer.close()
        inner.close()


def test_loops_in_two_threads_run_concurrently(new_loop):
    a, b = new_loop(), new_loop()
    started = threading.Event()
    release = threading.Event()
    result = {}

    def thread_main():
        async def other():
            started.set()
            # b keeps running (its timers fire) until a, running too, releases it.
            while not release.is_set():
                await asyncio.sleep(0.001)
            return asyncio.get_running_loop()

        result["b"] = b.run_until_complete(other())

    async def main():
        t = threading.Thread(target=thread_main)
        t.start()
        while not started.is_set():
            await asyncio.sleep(0.001)
        both_running = (a.is_running(), b.is_running())
        release.set()
        await a.run_in_executor(None, t.join, 10)
        return both_running, asyncio.get_running_loop()

    assert a.run_until_complete(main()) == ((True, True), a)
    assert result["b"] is b
    assert not b.is_running()


# ------------------------------------------------------------ closed loops


def test_closed_loop_errors(compare):
    def scenario(loop):
        loop.close()
        loop.close()  # closing twice is allowed

        async def coro():
            pass

        c = coro()
        try:
            created = outcome(loop.create_task, c)
        finally:
            c.close()
        c2 = coro()
        try:
            ruc = outcome(loop.run_until_complete, c2)
        finally:
            c2.close()
        return {
            "call_soon": outcome(loop.call_soon, print),
            "call_later": outcome(loop.call_later, 1, print),
            "call_at": outcome(loop.call_at, 1, print),
            "call_soon_threadsafe": outcome(loop.call_soon_threadsafe, print),
            "run_forever": outcome(loop.run_forever),
            "run_until_complete": ruc,
            "create_task": created,
            "run_in_executor": outcome(loop.run_in_executor, None, print),
            "is_closed": loop.is_closed(),
        }

    res = compare(scenario)
    closed = ("raise", RuntimeError, "Event loop is closed")
    assert res["call_soon"] == closed
    assert res["run_forever"] == closed
    assert res["is_closed"] is True


def test_close_running_loop(compare):
    def scenario(loop):
        res = []

        def cb():
            res.append(outcome(loop.close))
            res.append(loop.is_closed())
            loop.stop()

        loop.call_soon(cb)
        loop.run_forever()
        return res, loop.is_closed()

    assert compare(scenario) == (
        [("raise", RuntimeError, "Cannot close a running event loop"), False],
        False,
    )


def test_close_discards_pending_callbacks(compare):
    def scenario(loop):
        out = []
        loop.call_soon(out.append, "soon")
        loop.call_later(0.001, out.append, "later")
        loop.close()
        return out, loop.is_closed()

    assert compare(scenario) == ([], True)


# -------------------------------------------------------------------- stop


def test_stop_before_run_forever_runs_one_iteration(compare):
    def scenario(loop):
        out = []

        def a():
            out.append("a")
            loop.call_soon(out.append, "b")

        loop.call_soon(a)
        loop.stop()
        loop.run_forever()
        out.append("|")
        loop.stop()
        loop.run_forever()
        out.append("|")
        return out

    assert compare(scenario) == ["a", "|", "b", "|"]


def test_stop_in_callback_finishes_current_iteration(compare):
    def scenario(loop):
        out = []
        loop.call_soon(out.append, 1)
        loop.call_soon(loop.stop)
        loop.call_soon(out.append, 2)
        loop.run_forever()
        return out, loop.is_running()

    assert compare(scenario) == ([1, 2], False)


def test_stop_called_twice_stops_only_once(compare):
    def scenario(loop):
        out = []
        loop.stop()
        loop.stop()
        loop.run_forever()
        loop.call_soon(out.append, "ran")
        loop.call_soon(loop.stop)
        loop.run_forever()
        return out

    assert compare(scenario) == ["ran"]


def test_stop_with_only_timers_pending(compare):
    def scenario(loop):
        out = []
        # 100 ms: far enough that a stall before the stopped iteration cannot make it due.
        loop.call_later(0.1, out.append, "timer")
        loop.stop()
        loop.run_forever()  # must not wait for the timer
        first = list(out)
        loop.call_later(0.12, loop.stop)
        loop.run_forever()
        return first, out

    assert compare(scenario) == ([], ["timer"])


def test_run_forever_after_stop_is_reusable_many_times(loop):
    count = []
    for i in range(50):
        loop.call_soon(count.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert count == list(range(50))


# ---------------------------------------------------------- runners / run()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_runner_with_loop_factory(flavor):
    async def main(x):
        await asyncio.sleep(0)
        return x, asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=flavor.new_loop) as runner:
        r1, l1 = runner.run(main(1))
        r2, l2 = runner.run(main(2))
        loop = runner.get_loop()
    assert (r1, r2) == (1, 2)
    assert l1 is l2 is loop
    assert isinstance(loop, flavor.loop_type)
    assert loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_runner_debug_and_cancels_leftover_tasks(flavor):
    seen = []

    async def forever():
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(loop_factory=flavor.new_loop, debug=True) as runner:
        assert runner.run(main()) is True
    assert seen == ["cancelled"]


def test_run_returns_result_on_expected_loop(flavor):
    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    loop = flavor.run(main())
    assert isinstance(loop, flavor.loop_type)
    assert loop.is_closed()


def test_run_debug_flag(flavor):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert flavor.run(main(), debug=True) is True
    assert flavor.run(main(), debug=False) is False


def test_run_propagates_exception(flavor):
    async def main():
        await asyncio.sleep(0)
        raise Boom("from main")

    with pytest.raises(Boom, match="from main"):
        flavor.run(main())


def test_run_cancels_pending_tasks_and_finalizes_asyncgens(flavor):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("agen-finally")

    async def forever():
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            log.append("task-cancelled")
            raise

    async def main():
        g = agen()
        await g.__anext__()
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        main.keep = g  # keep it alive so only shutdown_asyncgens closes it
        return "done"

    assert flavor.run(main()) == "done"
    assert sorted(log) == ["agen-finally", "task-cancelled"]


def test_run_rejects_non_coroutine(flavor):
    expected = outcome(asyncio.run, 123)
    actual = outcome(flavor.run, 123)
    assert actual == expected == ("raise", ValueError, "a coroutine was expected, got 123")


def test_run_from_running_loop(flavor):
    async def inner():
        pass

    async def main():
        c = inner()
        try:
            return outcome(flavor.run, c)
        finally:
            c.close()

    res = REFERENCE_LOOP()
    try:
        got = res.run_until_complete(main())
    finally:
        res.close()
    assert got[:2] == ("raise", RuntimeError)
    assert "cannot be called from a running event loop" in got[2]


# ---------------------------------------------------------------- policies


def test_install_sets_policy(flavor):
    flavor.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, flavor.policy_cls)
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, flavor.loop_type)
    finally:
        loop.close()

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), flavor.loop_type)


def test_policy_new_event_loop_and_set_get(flavor):
    policy = flavor.policy_cls()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, flavor.loop_type)
        assert not loop.is_closed()
        policy.set_event_loop(loop)
        assert policy.get_event_loop() is loop
        policy.set_event_loop(None)
    finally:
        loop.close()
