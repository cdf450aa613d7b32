"""Asynchronous generators: the loop's asyncgen hooks, shutdown_asyncgens() and
finalisation of generators that are dropped before they finished."""

import asyncio
import gc
import sys
import threading
import weakref

import pytest

from looptest_support import normalize_text

# --------------------------------------------------------------- asyncgens


def test_shutdown_asyncgens_finalizes_generators(compare):
    def scenario(loop):
        log = []

        async def agen(name):
            try:
                for i in range(10):
                    yield i
            finally:
                await asyncio.sleep(0)
                log.append(f"finalized-{name}")

        gens = [agen("a"), agen("b")]

        async def main():
            for g in gens:
                await g.__anext__()

        loop.run_until_complete(main())
        before = list(log)
        loop.run_until_complete(loop.shutdown_asyncgens())
        return before, sorted(log)

    assert compare(scenario) == ([], ["finalized-a", "finalized-b"])


def test_asyncgen_finalized_when_garbage_collected(compare):
    def scenario(loop):
        log = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                log.append("agen-finally")

        async def main():
            g = agen()
            await g.__anext__()
            del g
            gc.collect()
            for _ in range(5):
                await asyncio.sleep(0)
            return list(log)

        return loop.run_until_complete(main())

    assert compare(scenario) == ["agen-finally"]


def test_asyncgen_hooks_installed_only_while_running(compare):
    def scenario(loop):
        outside_before = sys.get_asyncgen_hooks()

        async def main():
            hooks = sys.get_asyncgen_hooks()
            return hooks.firstiter is not None, hooks.finalizer is not None

        inside = loop.run_until_complete(main())
        outside_after = sys.get_asyncgen_hooks()
        return inside, outside_after == outside_before

    assert compare(scenario) == ((True, True), True)


def test_asyncgen_error_during_shutdown_goes_to_handler(compare):
    def scenario(loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        async def bad_agen():
            try:
                yield 1
            finally:
                raise ValueError("error while closing")

        g = bad_agen()

        async def main():
            await g.__anext__()

        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
        return [
            (sorted(c), normalize_text(c["message"]), repr(c["exception"]), c.get("asyncgen") is g)
            for c in contexts
        ]

    res = compare(scenario)
    assert len(res) == 1
    keys, message, exc, same = res[0]
    assert keys == ["asyncgen", "exception", "message"]
    assert message.startswith("an error occurred during closing of asynchronous generator")
    assert exc == "ValueError('error while closing')" and same


# ------------------------------------- finalised on a thread that is not the loop's


@pytest.mark.parametrize("how", ["refcount", "gc-cycle"])
def test_asyncgen_dropped_in_another_thread_is_closed_on_the_loop(loop, how):
    """The last reference to a started async generator goes away in another thread
    while the loop runs: the finalizer hook the loop installed (asyncio's, which uses
    call_soon_threadsafe) must get aclose() run on the loop, so that the generator's
    finally block runs in the loop thread."""
    loop_thread = threading.get_ident()

    async def agen(done):
        try:
            yield 1
            yield 2
        finally:
            done.set_result(threading.get_ident())

    async def main():
        done = loop.create_future()
        holder = [agen(done)]
        await holder[0].__anext__()  # started on the loop: its hooks apply
        alive = weakref.ref(holder[0])
        if how == "gc-cycle":
            holder[0] = [holder[0]]
            holder[0].append(holder[0])  # only the cycle collector can free it now
        seen = {}

        def drop():  # the only reference to the generator goes away here
            holder.clear()
            seen["after-clear"] = alive() is None
            if how == "gc-cycle":
                gc.collect()
            seen["finalized-here"] = alive() is None

        thread = threading.Thread(target=drop)
        thread.start()
        finally_thread = await asyncio.wait_for(done, 10)
        await loop.run_in_executor(None, thread.join, 10)
        return seen, finally_thread

    was_enabled = gc.isenabled()
    if how == "gc-cycle":
        gc.disable()  # so that no allocation on the loop thread collects the cycle first
    try:
        seen, finally_thread = loop.run_until_complete(main())
    finally:
        if was_enabled:
            gc.enable()
    assert seen == {"after-clear": how == "refcount", "finalized-here": True}
    assert finally_thread == loop_thread
