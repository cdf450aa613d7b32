"""Garbage collection of handles and loops (asyncgens: test_asyncgens.py).

Handles hold their callback, arguments and context; cycles through them (an object that
keeps the handle of one of its own methods, a loop abandoned with callbacks pending that
reference it) must be collectable on ferroloop exactly as on asyncio, and an abandoned
loop must give back its file descriptors, with asyncio's ResourceWarning if it was
never closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import warnings
import weakref

import pytest

from looptest_support import open_fd_count


class Holder:
    def method(self):
        pass


def test_cycle_through_a_run_handle_is_collected(new_loop):
    loop = new_loop()
    holder = Holder()
    holder.handle = loop.call_soon(holder.method)
    alive = weakref.ref(holder)
    del holder
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert alive() is None


def test_cycle_through_a_cancelled_timer_is_collected(new_loop):
    loop = new_loop()
    holder = Holder()
    holder.timer = loop.call_later(3600, holder.method)
    holder.timer.cancel()
    alive = weakref.ref(holder)
    del holder
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    gc.collect()
    assert alive() is None


def test_cycles_through_kept_handles_are_collected_once_run(new_loop):
    # Objects that keep the handle of their own callback (obj -> handle -> obj.method):
    # once the handle ran, nothing but the cycle holds them. Thousands of them, so that
    # recycled handle objects are covered too (ferroloop reuses handle memory; and keeps
    # queued handles away from the collector, tracking a handle again when the loop lets
    # go of it while someone else holds it).
    loop = new_loop()
    alive = []
    for _ in range(3):
        for _ in range(2000):
            soon, timer = Holder(), Holder()
            soon.handle = loop.call_soon(soon.method)
            timer.handle = loop.call_later(0, timer.method)
            alive += [weakref.ref(soon), weakref.ref(timer)]
        del soon, timer
        loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    gc.collect()
    assert sum(ref() is not None for ref in alive) == 0


def test_cycle_through_a_queued_handle_of_a_live_loop_survives_collection(new_loop):
    # While queued, the loop keeps the handle and so its callback alive, cycle or not.
    loop = new_loop()
    holder = Holder()
    holder.handle = loop.call_soon(holder.method)
    alive = weakref.ref(holder)
    del holder
    gc.collect()
    assert alive() is not None
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert alive() is None
    loop.close()


def test_abandoned_loops_with_pending_callbacks_are_collected(flavor, loop_impl):
    if loop_impl == "asyncio" and sys.version_info < (3, 10):
        pytest.skip(
            "asyncio 3.9's BaseEventLoop.__del__ fails to close an abandoned selector "
            "loop during garbage collection (ValueError: Invalid file descriptor) and "
            "leaks its fd"
        )
    before = open_fd_count()
    loops = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(50):
            loop = flavor.new_loop()
            loop.call_soon(loop.stop)
            loop.call_later(3600, loop.time)
            loops.append(weakref.ref(loop))
            del loop
        gc.collect()
    assert sum(ref() is not None for ref in loops) == 0
    assert open_fd_count() <= before


def test_unclosed_loop_warns_when_collected(flavor):
    before = open_fd_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop = flavor.new_loop()
        text = repr(loop)
        alive = weakref.ref(loop)
        del loop
        gc.collect()
    assert alive() is None
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    # asyncio's message, with the loop's repr (as it was: closed=False).
    assert messages == [f"unclosed event loop {text}"]
    assert open_fd_count() <= before  # collecting it closed it


def test_closed_loop_does_not_warn_when_collected(flavor):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop = flavor.new_loop()
        loop.close()
        del loop
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


var = contextvars.ContextVar("test_gc_var", default="unset")


def _handle_context(handle):
    # Handle.get_context() is new in 3.12; asyncio's handles of 3.9-3.11 keep it in
    # `_context`.
    if hasattr(handle, "get_context"):
        return handle.get_context()
    return handle._context


def test_queued_callbacks_keep_their_contexts_through_collections(new_loop):
    # Thousands of queued callbacks without context=, from an empty context and from one
    # holding a variable (ferroloop keeps an empty copy away from the collector while its
    # callback waits): collections while they wait, a context handed out while queued,
    # some cancelled, the rest dropped unrun by close() -- each runs in (or is dropped
    # with) the context it was scheduled from.
    loop = new_loop()
    seen = []

    def record(tag):
        seen.append((tag, var.get()))

    def schedule_with_var():
        var.set("set")
        return [loop.call_soon(record, "with-var") for _ in range(3000)]

    def schedule_plain():
        return [loop.call_soon(record, "plain") for _ in range(3000)]

    # A new Context: empty (this process's own may hold decimal's variable).
    plain = contextvars.Context().run(schedule_plain)
    with_var = contextvars.copy_context().run(schedule_with_var)
    shown = _handle_context(plain[0])
    assert gc.is_tracked(shown)
    assert len(shown) == 0
    for handle in plain[1::2] + with_var[1::2]:
        handle.cancel()
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert seen == [("plain", "unset")] * 1500 + [("with-var", "set")] * 1500
    unrun = [loop.call_soon(record, "unrun") for _ in range(3000)]
    del unrun
    gc.collect()
    loop.close()
    gc.collect()
    assert len(seen) == 3000


def test_abandoned_loop_held_by_a_context_variable_is_collected(flavor, loop_impl):
    # A pending callback's context holds the loop (a variable set when it was
    # scheduled): loop -> queue -> handle -> context -> loop, collected as a cycle.
    if loop_impl == "asyncio" and sys.version_info < (3, 10):
        pytest.skip(
            "asyncio 3.9's BaseEventLoop.__del__ fails to close an abandoned selector "
            "loop during garbage collection (ValueError: Invalid file descriptor)"
        )

    def schedule(loop):
        var.set(loop)
        loop.call_soon(loop.stop)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop = flavor.new_loop()
        contextvars.copy_context().run(schedule, loop)
        alive = weakref.ref(loop)
        del loop
        gc.collect()
    assert alive() is None
