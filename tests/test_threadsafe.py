"""call_soon_threadsafe, run_coroutine_threadsafe and other cross-thread use of a loop."""

import asyncio
import textwrap
import threading
import time

import pytest

from looptest_support import outcome, run_briefly, run_child, stop_after, wait_until


# ------------------------------------------------------- call_soon_threadsafe


def test_call_soon_threadsafe_runs_in_loop_thread(loop):
    seen = []

    def from_thread():
        loop.call_soon_threadsafe(lambda: seen.append(threading.get_ident()))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=from_thread).start())
    run_briefly(loop)
    assert seen == [threading.get_ident()]


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    # The loop is blocked in its I/O poll with nothing to do for 30s.
    far = stop_after(loop, 30)
    t0 = time.monotonic()
    woke = []

    def wake():
        time.sleep(0.1)
        loop.call_soon_threadsafe(lambda: (woke.append(time.monotonic()), loop.stop()))

    thread = threading.Thread(target=wake)
    thread.start()
    loop.run_forever()
    thread.join()
    far.cancel()
    assert woke, "callback from thread never ran"
    assert woke[0] - t0 < 5.0


def test_call_soon_threadsafe_wakes_loop_repeatedly(loop):
    stop_after(loop, 30)
    hits = []
    for i in range(5):

        def wake(i=i):
            time.sleep(0.02)
            loop.call_soon_threadsafe(lambda: (hits.append(i), loop.stop()))

        t = threading.Thread(target=wake)
        t.start()
        t0 = time.monotonic()
        loop.run_forever()
        t.join()
        assert time.monotonic() - t0 < 5.0
    assert hits == list(range(5))


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, per_thread = 8, 250
    total = n_threads * per_thread
    got = []
    barrier = threading.Barrier(n_threads)

    def record(tid, seq):
        got.append((tid, seq))
        if len(got) == total:
            loop.stop()

    def producer(tid):
        barrier.wait()
        for seq in range(per_thread):
            loop.call_soon_threadsafe(record, tid, seq)
            if seq % 50 == 0:
                time.sleep(0.001)  # let the loop go idle now and then

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    run_briefly(loop, 20)
    for t in threads:
        t.join()
    assert len(got) == total
    for tid in range(n_threads):
        # FIFO per producing thread
        assert [s for (t, s) in got if t == tid] == list(range(per_thread))


def test_call_soon_threadsafe_returns_cancellable_handle(compare):
    def scenario(loop):
        out = []
        box = {}

        def thread_main():
            box["h"] = loop.call_soon_threadsafe(out.append, "cancelled-one")
            box["h"].cancel()
            loop.call_soon_threadsafe(out.append, "kept")
            loop.call_soon_threadsafe(loop.stop)

        t = threading.Thread(target=thread_main)
        t.start()
        t.join()
        loop.run_forever()
        return out, box["h"].cancelled()

    assert compare(scenario) == (["kept"], True)


def test_call_soon_threadsafe_on_closed_loop(compare):
    def scenario(loop):
        loop.close()
        res = []

        def thread_main():
            res.append(outcome(loop.call_soon_threadsafe, print))

        t = threading.Thread(target=thread_main)
        t.start()
        t.join()
        return res

    assert compare(scenario) == [("raise", RuntimeError, "Event loop is closed")]


@pytest.mark.parametrize("run_first", [False, True], ids=["idle", "after-run"])
def test_call_soon_threadsafe_racing_close(new_loop, run_first):
    """Threads hammer call_soon_threadsafe while the loop is closed.

    Nothing may crash; once closed, the threads must see
    RuntimeError('Event loop is closed') and nothing else.
    """
    for _ in range(15):
        loop = new_loop()
        stop = threading.Event()
        errors = []
        started = threading.Barrier(5)

        def hammer():
            started.wait()
            while not stop.is_set():
                try:
                    loop.call_soon_threadsafe(lambda: None)
                except RuntimeError as exc:
                    errors.append(str(exc))
                    return
                except BaseException as exc:  # pragma: no cover - a bug
                    errors.append(repr(exc))
                    return

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        started.wait()
        if run_first:
            loop.call_later(0.005, loop.stop)
            loop.run_forever()
        loop.close()
        wait_until(lambda: len(errors) == 4 or not any(t.is_alive() for t in threads))
        stop.set()
        for t in threads:
            t.join()
        assert errors == ["Event loop is closed"] * 4
        assert loop.is_closed()


def test_call_soon_threadsafe_from_callback_of_same_loop(compare):
    def scenario(loop):
        out = []

        def cb():
            out.append("cb")
            loop.call_soon_threadsafe(out.append, "threadsafe-from-loop")
            loop.call_soon(out.append, "soon-from-loop")

        loop.call_soon(cb)
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
        return out

    assert compare(scenario) == ["cb", "threadsafe-from-loop", "soon-from-loop"]


def test_run_coroutine_threadsafe(loop):
    async def work(x):
        await asyncio.sleep(0.001)
        return x * 2

    results = []

    def thread_main():
        futs = [asyncio.run_coroutine_threadsafe(work(i), loop) for i in range(20)]
        results.extend(f.result(timeout=10) for f in futs)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=thread_main)
    t.start()
    run_briefly(loop, 20)
    t.join()
    assert results == [i * 2 for i in range(20)]


# ------------------------------------------- the run loop from another thread

RUN_ONCE_FROM_OTHER_THREAD = textwrap.dedent(
    """
    import threading

    loop = new_loop()
    running = threading.Event()
    loop.call_soon(running.set)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert running.wait(10)
    deadline = time.monotonic() + 10
    while not loop._polling:  # the loop thread is now waiting in the poller
        assert time.monotonic() < deadline, "loop never went idle"
        time.sleep(0.001)
    try:
        loop._run_once()
        print("no error")
    except RuntimeError:
        print("RuntimeError")
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    print("loop thread finished", not thread.is_alive())
    loop.close()
    """
)


def test_run_once_from_another_thread_while_running_raises(loop_impl):
    if loop_impl == "asyncio":
        pytest.skip(
            "ferroloop-only guarantee: asyncio's _run_once has no thread check (it polls "
            "the selector and runs callbacks in the calling thread, racing the loop thread)"
        )
    # In a child interpreter with a timeout: the failure mode is a deadlock.
    assert run_child(RUN_ONCE_FROM_OTHER_THREAD, loop_impl, timeout=30) == [
        "RuntimeError",
        "loop thread finished True",
    ]
