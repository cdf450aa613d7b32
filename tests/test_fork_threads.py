"""fork() while a loop runs in another thread.

The forking thread is the only one the child has; whatever the loop thread was doing
at that moment (waiting in the poller, running callbacks, closing the loop) must not
leave a lock or an fd in a state that hangs the child. In every case the child creates
a new loop, runs a timer and a call_soon_threadsafe from a new thread on it, and exits.
Stock asyncio passes all of these.

Each scenario runs in a child interpreter (the pytest process never forks), and every
fork is waited for with a deadline: a deadlocked grandchild is killed and reported as
"timeout" instead of hanging the suite.
"""

from __future__ import annotations

import textwrap

from looptest_support import FORK_HELPERS, run_child

START_LOOP_THREAD = textwrap.dedent(
    """
    def start_loop_thread(loop):
        running = threading.Event()
        loop.call_soon(running.set)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        assert running.wait(10), "loop thread did not start"
        return thread


    def stop_loop_thread(loop, thread):
        # The parent's loop still works after the forks: a timer and a threadsafe call.
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01, "ok"), loop)
        works = fut.result(10) == "ok"
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        finished = not thread.is_alive()
        if finished:
            loop.close()
        return works and finished


    def wait_until_polling(loop):
        # ferroloop says when its thread waits in epoll_wait; for asyncio give the
        # thread time to get there (the test stays valid if it has not).
        if hasattr(loop, "_polling"):
            deadline = time.monotonic() + 10
            while not loop._polling:
                assert time.monotonic() < deadline, "loop never went idle"
                time.sleep(0.001)
        else:
            time.sleep(0.05)
    """
)


def check(script, loop_impl, timeout=60):
    return run_child(FORK_HELPERS + START_LOOP_THREAD + textwrap.dedent(script), loop_impl, timeout)


def test_fork_while_another_thread_polls(loop_impl):
    script = """
    loop = new_loop()
    thread = start_loop_thread(loop)
    codes = []
    for _ in range(5):
        wait_until_polling(loop)
        codes.append(fork_and_check())
        if codes[-1] != 0:
            break
    print("children", codes)
    print("parent loop", stop_loop_thread(loop, thread))
    """
    assert check(script, loop_impl) == ["children [0, 0, 0, 0, 0]", "parent loop True"]


def test_fork_while_another_thread_runs_callbacks(loop_impl):
    script = """
    loop = new_loop()
    spins = [0]


    def spin():  # keeps the loop thread busy running callbacks
        spins[0] += 1
        loop.call_soon(spin)


    loop.call_soon(spin)
    thread = start_loop_thread(loop)
    codes = []
    for _ in range(20):
        before = spins[0]
        codes.append(fork_and_check())
        if codes[-1] != 0:
            break
    print("children", codes == [0] * 20 or codes)
    print("loop was busy", spins[0] > before)
    print("parent loop", stop_loop_thread(loop, thread))
    """
    assert check(script, loop_impl) == ["children True", "loop was busy True", "parent loop True"]


def test_fork_while_another_thread_stops_and_closes_loops(loop_impl):
    script = """
    done = threading.Event()
    cycles = [0]


    def churn():
        # New loop, a timer that stops it, close: over and over, so the forks below
        # land in every phase (creating, polling, running, stopping, closing, freeing).
        while not done.is_set():
            loop = new_loop()
            loop.call_later(0.001, loop.stop)
            loop.run_forever()
            loop.close()
            cycles[0] += 1


    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while cycles[0] == 0:
        assert time.monotonic() < deadline, "churn thread made no loop"
        time.sleep(0.001)
    codes = []
    for _ in range(20):
        codes.append(fork_and_check())
        if codes[-1] != 0:
            break
    done.set()
    thread.join(10)
    print("children", codes == [0] * 20 or codes)
    print("churn thread finished", not thread.is_alive(), cycles[0] > 1)
    """
    assert check(script, loop_impl) == ["children True", "churn thread finished True True"]


def test_multiprocessing_fork_while_a_loop_runs_in_another_thread(loop_impl):
    script = """
    import multiprocessing


    def process_main():
        # multiprocessing leaves the child with os._exit(exitcode) itself.
        sys.exit(0 if new_loop_works() else 4)


    loop = new_loop()


    def tick():  # the loop alternates between short waits and callbacks
        loop.call_later(0.001, tick)


    loop.call_soon(tick)
    thread = start_loop_thread(loop)
    context = multiprocessing.get_context("fork")
    codes = []
    for _ in range(3):
        process = context.Process(target=process_main)
        process.start()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
            codes.append("timeout")
            break
        codes.append(process.exitcode)
    print("children", codes)
    print("parent loop", stop_loop_thread(loop, thread))
    """
    assert check(script, loop_impl) == ["children [0, 0, 0]", "parent loop True"]
