"""What ``Handle.cancel()`` lets go of, compared with asyncio.

asyncio drops a cancelled handle's callable and arguments at ``cancel()`` (its
``_callback``/``_args`` become ``None``), so what they reference is freed at once by
reference counting, not when the loop next meets the handle in its queue: code relies on
it (e.g. a cancelled TLS handshake timeout must not keep the connection alive). In
debug mode the handle keeps its repr instead.
"""

from __future__ import annotations

import gc
import weakref


class Payload:
    def method(self):
        pass


def freed_at_cancel(loop, schedule):
    """Schedules ``schedule(loop, callback, arg)``, cancels it, and says whether the
    callback's object and the argument were freed by ``cancel()`` alone."""
    gc.disable()  # reference counting only: what asyncio guarantees
    try:
        owner, arg = Payload(), Payload()
        owner_ref, arg_ref = weakref.ref(owner), weakref.ref(arg)
        handle = schedule(loop, owner.method, arg)
        del owner, arg
        alive_before = owner_ref() is not None and arg_ref() is not None
        handle.cancel()
        return alive_before, owner_ref() is None, arg_ref() is None, handle.cancelled()
    finally:
        gc.enable()


def test_call_soon_handle_frees_callback_and_args_at_cancel(compare):
    def scenario(loop):
        return freed_at_cancel(loop, lambda lp, cb, arg: lp.call_soon(cb, arg))

    assert compare(scenario) == (True, True, True, True)


def test_timer_handle_frees_callback_and_args_at_cancel(compare):
    def scenario(loop):
        return freed_at_cancel(loop, lambda lp, cb, arg: lp.call_later(3600, cb, arg))

    assert compare(scenario) == (True, True, True, True)


def test_cancelled_handle_attributes_and_repr(compare):
    def scenario(loop):
        handle = loop.call_soon(print, "x")
        timer = loop.call_at(loop.time() + 3600, print, "y")
        before = (handle._callback is print, handle._args, timer._args)
        handle.cancel()
        timer.cancel()
        after = (handle._callback, handle._args, timer._callback, timer._args)
        return before, after, repr(handle), repr(timer).split(" when=")[0]

    before, after, handle_repr, timer_repr = compare(scenario)
    assert before == (True, ("x",), ("y",))
    assert after == (None, None, None, None)
    assert handle_repr == "<Handle cancelled>"
    assert timer_repr == "<TimerHandle cancelled"


def test_cancelled_timers_with_one_deadline_compare_equal(compare):
    # asyncio's __eq__ compares callbacks and arguments, both None once cancelled.
    def scenario(loop):
        a = loop.call_at(100.0, print, 1)
        b = loop.call_at(100.0, len, "other")
        a.cancel()
        b.cancel()
        return a == b, a != b

    assert compare(scenario) == (True, False)


def test_debug_mode_keeps_the_repr_of_a_cancelled_handle(compare):
    def scenario(loop):
        loop.set_debug(True)
        handle = loop.call_soon(print, "kept")
        live = repr(handle)
        handle.cancel()
        cancelled = repr(handle)
        loop.set_debug(False)
        return (
            "print('kept')" in live,
            "print('kept')" in cancelled,
            "cancelled" in cancelled,
            handle._callback,
        )

    assert compare(scenario) == (True, True, True, None)


def test_a_callback_cancelling_its_own_handle_while_running(compare):
    def scenario(loop):
        seen = []
        box = []

        def callback(tag):
            box[0].cancel()  # drops the handle's references while they run
            seen.append((tag, box[0].cancelled(), box[0]._callback))
            loop.stop()

        box.append(loop.call_soon(callback, "ran"))
        loop.run_forever()
        return seen

    assert compare(scenario) == [("ran", True, None)]
