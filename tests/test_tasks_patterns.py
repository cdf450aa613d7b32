"""Everyday asyncio patterns: tasks, gather, timeouts, queues (asyncgens: test_asyncgens.py)."""

import asyncio
import contextvars
import sys

import pytest

from looptest_support import outcome

VAR = contextvars.ContextVar("VAR", default="unset")


def run(loop, coro_fn, *args):
    return loop.run_until_complete(coro_fn(*args))


# ---------------------------------------------------------------- futures


def test_create_future(compare):
    def scenario(loop):
        fut = loop.create_future()
        order = []
        fut.add_done_callback(lambda f: order.append(("cb1", f.result())))
        fut.add_done_callback(lambda f: order.append(("cb2", f.result())))
        loop.call_soon(fut.set_result, 7)
        res = loop.run_until_complete(fut)
        return isinstance(fut, asyncio.Future), fut.get_loop() is loop, res, order

    assert compare(scenario) == (True, True, 7, [("cb1", 7), ("cb2", 7)])


def test_create_task_rejects_non_coroutine(compare):
    def scenario(loop):
        return outcome(loop.create_task, 1)

    assert compare(scenario)[:2] == ("raise", TypeError)


def test_sleep_ordering(compare):
    async def main():
        out = []

        async def sleeper(d):
            await asyncio.sleep(d)
            out.append(d)

        await asyncio.gather(*(sleeper(d) for d in (0.03, 0.0, 0.01, 0.02)))
        return out

    assert compare(lambda loop: run(loop, main)) == [0.0, 0.01, 0.02, 0.03]


def test_sleep_returns_result(compare):
    async def main():
        return await asyncio.sleep(0, "r0"), await asyncio.sleep(0.001, "r1")

    assert compare(lambda loop: run(loop, main)) == ("r0", "r1")


# ----------------------------------------------------------------- gather


def test_gather_results_and_exceptions(compare):
    async def value(x, d):
        await asyncio.sleep(d)
        return x

    async def fails(msg):
        await asyncio.sleep(0.001)
        raise ValueError(msg)

    async def main():
        ordered = await asyncio.gather(value("a", 0.02), value("b", 0), value("c", 0.01))
        mixed = await asyncio.gather(value(1, 0), fails("boom"), return_exceptions=True)
        try:
            await asyncio.gather(value(1, 0.05), fails("first"))
        except ValueError as exc:
            raised = str(exc)
        return ordered, [repr(x) for x in mixed], raised

    assert compare(lambda loop: run(loop, main)) == (
        ["a", "b", "c"],
        ["1", "ValueError('boom')"],
        "first",
    )


def test_semaphore_limited_gather(compare):
    async def main():
        sem = asyncio.Semaphore(3)
        active = 0
        peak = 0

        async def job(i):
            nonlocal active, peak
            async with sem:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.001 * (i % 4))
                active -= 1
            return i * i

        results = await asyncio.gather(*(job(i) for i in range(30)))
        return peak, results

    assert compare(lambda loop: run(loop, main)) == (3, [i * i for i in range(30)])


def test_wait_first_completed(compare):
    async def main():
        fast = asyncio.ensure_future(asyncio.sleep(0.001, "fast"))
        slow = asyncio.ensure_future(asyncio.sleep(30, "slow"))  # cancelled below
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        res = ([t.result() for t in done], len(pending))
        await asyncio.gather(slow, return_exceptions=True)
        return res, slow.cancelled()

    assert compare(lambda loop: run(loop, main)) == ((["fast"], 1), True)


def test_as_completed_order(compare):
    async def main():
        coros = [asyncio.sleep(d, d) for d in (0.02, 0.0, 0.01)]
        return [await f for f in asyncio.as_completed(coros)]

    assert compare(lambda loop: run(loop, main)) == [0.0, 0.01, 0.02]


# --------------------------------------------------------------- timeouts


def test_wait_for_timeout(compare):
    async def main():
        inner_state = []

        async def slow():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                inner_state.append("inner-cancelled")
                raise

        t0 = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(slow(), 0.02)
        except asyncio.TimeoutError as exc:
            kind = type(exc).__name__
        elapsed = asyncio.get_running_loop().time() - t0
        ok = await asyncio.wait_for(asyncio.sleep(0, "in-time"), 30)
        # the lower bound proves the timeout was waited for; the upper one that it,
        # and not slow()'s 10 s sleep, ended the wait (a wide margin for busy machines)
        return kind, inner_state, 0.015 < elapsed < 5, ok

    assert compare(lambda loop: run(loop, main)) == (
        asyncio.TimeoutError.__name__,
        ["inner-cancelled"],
        True,
        "in-time",
    )


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
def test_timeout_context_manager(compare):
    async def main():
        res = []
        try:
            async with asyncio.timeout(0.01) as cm:
                await asyncio.sleep(10)
        except TimeoutError:
            res.append(("expired", cm.expired()))
        async with asyncio.timeout(30) as cm:
            await asyncio.sleep(0)
        res.append(("not-expired", cm.expired()))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + 0.01) as cm:
                cm.reschedule(loop.time() + 0.02)
                await asyncio.sleep(10)
        except TimeoutError:
            res.append(("rescheduled-expired", cm.expired()))
        return res

    assert compare(lambda loop: run(loop, main)) == [
        ("expired", True),
        ("not-expired", False),
        ("rescheduled-expired", True),
    ]


# ----------------------------------------------------------- cancellation


def test_cancellation_propagates_to_awaited_task(compare):
    async def main():
        log = []

        async def inner():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("inner-cancelled")
                raise

        async def outer():
            try:
                await asyncio.ensure_future(inner())
            except asyncio.CancelledError:
                log.append("outer-cancelled")
                raise

        task = asyncio.ensure_future(outer())
        await asyncio.sleep(0.001)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            log.append("main-saw-cancel")
        return log, task.cancelled()

    assert compare(lambda loop: run(loop, main)) == (
        ["inner-cancelled", "outer-cancelled", "main-saw-cancel"],
        True,
    )


def test_shield_and_cancel_message(compare):
    async def main():
        inner = asyncio.ensure_future(asyncio.sleep(0.01, "shielded-result"))
        outer = asyncio.ensure_future(asyncio.shield(inner))
        await asyncio.sleep(0)
        outer.cancel()
        await asyncio.gather(outer, return_exceptions=True)
        inner_res = await inner

        async def sleeper():
            await asyncio.sleep(10)

        t = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)
        t.cancel("custom message")
        try:
            await t
        except asyncio.CancelledError as exc:
            msg = exc.args
        return outer.cancelled(), inner_res, msg

    outer_cancelled, inner_res, msg = compare(lambda loop: run(loop, main))
    assert (outer_cancelled, inner_res) == (True, "shielded-result")
    if sys.version_info >= (3, 11):  # 3.9/3.10 drop the message on await
        assert msg == ("custom message",)


def test_cancel_run_until_complete_task(compare):
    def scenario(loop):
        async def sleeper():
            await asyncio.sleep(10)

        task = loop.create_task(sleeper())
        loop.call_later(0.005, task.cancel)
        return outcome(loop.run_until_complete, task)[:2], task.cancelled()

    assert compare(scenario) == (("raise", asyncio.CancelledError), True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is new in 3.11")
def test_task_group(compare):
    async def main():
        log = []

        async def ok(x):
            await asyncio.sleep(0.001)
            return x

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(ok(i)) for i in range(5)]
        results = [t.result() for t in tasks]

        async def fails():
            await asyncio.sleep(0.002)
            raise ValueError("tg-failure")

        async def victim():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("victim-cancelled")
                raise

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(victim())
                tg.create_task(fails())
        except BaseException as eg:  # ExceptionGroup only exists on 3.11+
            group = (type(eg).__name__, [repr(e) for e in eg.exceptions])
        return results, group, log

    assert compare(lambda loop: run(loop, main)) == (
        [0, 1, 2, 3, 4],
        ("ExceptionGroup", ["ValueError('tg-failure')"]),
        ["victim-cancelled"],
    )


# ------------------------------------------------------- task name/context


def test_create_task_name(compare):
    def scenario(loop):
        async def coro():
            return asyncio.current_task().get_name()

        named = loop.create_task(coro(), name="worker-1")
        unnamed = loop.create_task(coro())
        res = loop.run_until_complete(asyncio.gather(named, unnamed))
        return res[0], res[1].startswith("Task-"), repr(named).startswith("<Task finished name='worker-1'")

    assert compare(scenario) == ("worker-1", True, True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is new in 3.11")
def test_create_task_context(compare):
    def scenario(loop):
        ctx = contextvars.Context()
        ctx.run(VAR.set, "task-ctx")

        async def coro():
            before = VAR.get()
            VAR.set("changed")
            await asyncio.sleep(0)
            return before, VAR.get()

        task = loop.create_task(coro(), context=ctx)
        res = loop.run_until_complete(task)
        return res, ctx[VAR], VAR.get()

    assert compare(scenario) == (("task-ctx", "changed"), "changed", "unset")


def test_task_copies_context_at_creation(compare):
    def scenario(loop):
        async def child():
            return VAR.get()

        async def main():
            VAR.set("parent-value")
            t = asyncio.ensure_future(child())
            VAR.set("changed-after")
            return await t, VAR.get()

        return loop.run_until_complete(main()), VAR.get()

    assert compare(scenario) == (("parent-value", "changed-after"), "unset")


def test_current_task_and_all_tasks(compare):
    def scenario(loop):
        seen = []
        loop.call_soon(lambda: seen.append(asyncio.current_task(loop)))

        async def main():
            others = [asyncio.ensure_future(asyncio.sleep(0.01)) for _ in range(3)]
            await asyncio.sleep(0)
            n = len(asyncio.all_tasks())
            me = asyncio.current_task() in asyncio.all_tasks()
            await asyncio.gather(*others)
            return n, me

        res = loop.run_until_complete(main())
        return res, seen, len(asyncio.all_tasks(loop))

    assert compare(scenario) == ((4, True), [None], 0)


# ------------------------------------------------------------ task factory


def test_task_factory(compare):
    def scenario(loop):
        calls = []

        def factory(lp, coro, **kwargs):
            calls.append((lp is loop, sorted(kwargs)))
            return asyncio.Task(coro, loop=lp, **kwargs)

        before = loop.get_task_factory()
        loop.set_task_factory(factory)
        got = loop.get_task_factory() is factory

        async def coro():
            return asyncio.current_task().get_name()

        name = loop.run_until_complete(loop.create_task(coro(), name="from-factory"))
        via_ensure = loop.run_until_complete(asyncio.ensure_future(coro(), loop=loop))
        loop.set_task_factory(None)
        after = loop.get_task_factory()
        bad = outcome(loop.set_task_factory, 1)
        return before, got, name, via_ensure.startswith("Task-"), after, calls, bad

    res = compare(scenario)
    before, got, name, _, after, calls, bad = res
    assert before is None and after is None and got is True
    assert name == "from-factory"
    assert [c[0] for c in calls] == [True, True]
    assert bad == ("raise", TypeError, "task factory must be a callable or None")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_eager_task_factory(compare):
    def scenario(loop):
        out = []

        async def eager_done():
            out.append("eager-body")
            return "value"

        async def suspends():
            out.append("suspends-start")
            await asyncio.sleep(0)
            out.append("suspends-end")

        async def main():
            t1 = loop.create_task(eager_done())
            out.append(("t1-done-immediately", t1.done()))
            t2 = loop.create_task(suspends())
            out.append(("t2-done-immediately", t2.done()))
            await t2
            return t1.result()

        loop.set_task_factory(asyncio.eager_task_factory)
        return loop.run_until_complete(main()), out

    assert compare(scenario) == (
        "value",
        [
            "eager-body",
            ("t1-done-immediately", True),
            "suspends-start",
            ("t2-done-immediately", False),
            "suspends-end",
        ],
    )


# ------------------------------------------------------------------ queues


def test_queue_producer_consumer(compare):
    async def main():
        q = asyncio.Queue(maxsize=4)
        consumed = []

        async def producer(pid):
            for i in range(20):
                await q.put((pid, i))
            await q.put(None)

        async def consumer():
            done = 0
            while done < 3:
                item = await q.get()
                q.task_done()
                if item is None:
                    done += 1
                else:
                    consumed.append(item)
                    if len(consumed) % 7 == 0:
                        await asyncio.sleep(0)

        await asyncio.gather(consumer(), *(producer(p) for p in range(3)))
        await q.join()
        per_producer = {p: [i for (pp, i) in consumed if pp == p] for p in range(3)}
        return len(consumed), per_producer, q.qsize()

    n, per_producer, size = compare(lambda loop: run(loop, main))
    assert n == 60 and size == 0
    assert per_producer == {p: list(range(20)) for p in range(3)}


def test_event_lock_condition(compare):
    async def main():
        log = []
        ev = asyncio.Event()
        lock = asyncio.Lock()
        cond = asyncio.Condition()

        async def waiter(i):
            await ev.wait()
            async with lock:
                log.append(("locked", i))
                await asyncio.sleep(0)
                log.append(("unlocked", i))

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.001)
        log.append("set")
        ev.set()
        await asyncio.gather(*tasks)

        async def cond_waiter():
            async with cond:
                await cond.wait()
                log.append("notified")

        t = asyncio.ensure_future(cond_waiter())
        await asyncio.sleep(0)
        async with cond:
            cond.notify_all()
        await t
        return log

    assert compare(lambda loop: run(loop, main)) == [
        "set",
        ("locked", 0),
        ("unlocked", 0),
        ("locked", 1),
        ("unlocked", 1),
        ("locked", 2),
        ("unlocked", 2),
        "notified",
    ]


# ----------------------------------------------------------- misc awaiting


def test_to_thread(compare):
    import threading

    async def main():
        main_thread = threading.get_ident()
        ident = await asyncio.to_thread(threading.get_ident)
        VAR.set("propagated")
        val = await asyncio.to_thread(VAR.get)
        return ident != main_thread, val

    assert compare(lambda loop: run(loop, main)) == (True, "propagated")
