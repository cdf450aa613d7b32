"""run_in_executor, default executors and their shutdown."""

import asyncio
import concurrent.futures
import functools
import sys
import threading
import time

from looptest_support import outcome


def add(a, b):
    return a + b


def fail(msg):
    raise ValueError(msg)


async def coroutine_function():
    pass


def test_run_in_executor_default(compare):
    def scenario(loop):
        async def main():
            fut = loop.run_in_executor(None, add, 2, 3)
            is_future = isinstance(fut, asyncio.Future)
            value = await fut
            ident = await loop.run_in_executor(None, threading.get_ident)
            partial = await loop.run_in_executor(None, functools.partial(add, b=10), 5)
            return is_future, value, ident != threading.get_ident(), partial

        return loop.run_until_complete(main())

    assert compare(scenario) == (True, 5, True, 15)


def test_run_in_executor_default_thread_names(compare):
    def scenario(loop):
        name = loop.run_until_complete(
            loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        return name.rsplit("_", 1)[0]

    assert compare(scenario) == "asyncio"


def test_run_in_executor_exception(compare):
    def scenario(loop):
        return outcome(loop.run_until_complete, loop.run_in_executor(None, fail, "in thread"))

    assert compare(scenario) == ("raise", ValueError, "in thread")


def test_run_in_executor_rejects_kwargs(compare):
    def scenario(loop):
        return outcome(loop.run_in_executor, None, add, 1, b=2)[:2]

    assert compare(scenario) == ("raise", TypeError)


def test_run_in_executor_runs_in_parallel(loop):
    # Five jobs on the default pool (min(32, cpus + 4) >= 5 workers) must all be
    # inside the executor at the same time: each waits at a barrier that only opens
    # when all five are there. Run one after the other, the first would time out.
    n = 5
    barrier = threading.Barrier(n, timeout=10)

    def job():
        barrier.wait()
        return threading.get_ident()

    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, job) for _ in range(n)))

    idents = loop.run_until_complete(main())
    assert len(set(idents)) == n
    assert threading.get_ident() not in idents


def test_run_in_custom_executor(compare):
    def scenario(loop):
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom") as pool:

            async def main():
                name = await loop.run_in_executor(pool, lambda: threading.current_thread().name)
                value = await loop.run_in_executor(pool, add, "a", "b")
                return name.startswith("custom"), value

            return loop.run_until_complete(main())

    assert compare(scenario) == (True, "ab")


def test_set_default_executor(compare):
    def scenario(loop):
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mydefault")
        try:
            loop.set_default_executor(pool)
            name = loop.run_until_complete(
                loop.run_in_executor(None, lambda: threading.current_thread().name)
            )
            return name.startswith("mydefault")
        finally:
            pool.shutdown(wait=True)

    assert compare(scenario) is True


def test_set_default_executor_rejects_non_thread_pool(compare):
    class NotAThreadPool(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):  # pragma: no cover - never used
            raise AssertionError("should not be used")

    class DuckPool:
        def submit(self, fn, *args, **kwargs):  # pragma: no cover - never used
            raise AssertionError("should not be used")

        def shutdown(self, wait=True, **kwargs):
            pass

    def scenario(loop):
        res = []
        for ex in (NotAThreadPool(), DuckPool()):
            res.append(outcome(loop.set_default_executor, ex))
        return res

    res = compare(scenario)
    if sys.version_info >= (3, 11):
        assert res == [("raise", TypeError, "executor must be ThreadPoolExecutor instance")] * 2
    else:
        # 3.9/3.10 accept it with a DeprecationWarning.
        warning = (
            "DeprecationWarning",
            "Using the default executor that is not an instance of ThreadPoolExecutor "
            "is deprecated and will be prohibited in Python 3.9",
        )
        assert res == [("ok", None, (warning,))] * 2


def test_shutdown_default_executor(compare):
    def scenario(loop):
        async def main():
            idents = await asyncio.gather(
                *(loop.run_in_executor(None, threading.get_ident) for _ in range(3))
            )
            await loop.shutdown_default_executor()
            after = outcome(loop.run_in_executor, None, add, 1, 2)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                custom = await loop.run_in_executor(pool, add, 1, 2)
            return len(idents), after, custom

        return loop.run_until_complete(main())

    assert compare(scenario) == (3, ("raise", RuntimeError, "Executor shutdown has been called"), 3)


def test_shutdown_default_executor_joins_worker_threads(loop):
    started = threading.Event()
    finished = []

    def work():
        started.set()
        time.sleep(0.05)
        finished.append(True)

    async def main():
        fut = loop.run_in_executor(None, work)
        await loop.run_in_executor(None, started.wait)
        await loop.shutdown_default_executor()
        # shutdown waits for the running job
        done_at_shutdown = list(finished)
        await fut
        return done_at_shutdown

    assert loop.run_until_complete(main()) == [True]


def test_shutdown_default_executor_without_executor(compare):
    def scenario(loop):
        res = loop.run_until_complete(loop.shutdown_default_executor())
        again = outcome(loop.run_in_executor, None, add, 1, 2)
        return res, again

    assert compare(scenario) == (None, ("raise", RuntimeError, "Executor shutdown has been called"))


def test_close_shuts_down_default_executor(compare):
    def scenario(loop):
        pool = concurrent.futures.ThreadPoolExecutor(1)
        loop.set_default_executor(pool)
        loop.run_until_complete(loop.run_in_executor(None, add, 1, 1))
        loop.close()
        res = outcome(pool.submit, add, 1, 1)
        pool.shutdown(wait=True)
        return res

    assert compare(scenario) == ("raise", RuntimeError, "cannot schedule new futures after shutdown")


def test_run_in_executor_coroutine_function_in_debug_mode(compare):
    def scenario(loop):
        res = outcome(loop.run_in_executor, None, coroutine_function)
        return res

    assert compare(scenario, debug=True) == (
        "raise",
        TypeError,
        "coroutines cannot be used with run_in_executor()",
    )
