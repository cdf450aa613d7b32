"""The cases of ``micro.py``: what each measures, and the check of its result.

Each case is ``async def run(loop, n, prep) -> ops`` plus an optional ``prep(n)`` executed
before the clock starts.  Every case checks its own result, so a loop that computes the
wrong thing fails loudly instead of looking fast.
"""

from __future__ import annotations

import asyncio
import random
import threading


class BenchError(AssertionError):
    pass


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise BenchError(msg)


async def bench_call_soon(loop, n, prep):
    """A feeder callback schedules a batch of 1000 no-op callbacks, then
    re-schedules itself, until n callbacks have been queued."""
    done = loop.create_future()
    batch = 1000
    state = [0, n]  # [callbacks run, callbacks still to schedule]

    def tick():
        state[0] += 1

    def feeder():
        k = batch if state[1] > batch else state[1]
        state[1] -= k
        call_soon = loop.call_soon
        for _ in range(k):
            call_soon(tick)
        if state[1]:
            call_soon(feeder)
        else:
            call_soon(done.set_result, None)

    loop.call_soon(feeder)
    await done
    _check(state[0] == n, f"ran {state[0]} callbacks, expected {n}")
    return n


async def bench_chain(loop, n, prep):
    """A callback that schedules the next one (``loop.call_soon(step)`` from inside
    ``step``), n steps: one callback per loop iteration, so this is the per-iteration cost."""
    done = loop.create_future()
    call_soon = loop.call_soon
    count = [0]

    def step():
        count[0] += 1
        if count[0] < n:
            call_soon(step)
        else:
            done.set_result(count[0])

    call_soon(step)
    steps = await done
    _check(steps == n and count[0] == n, f"ran {count[0]} steps, expected {n}")
    return n


async def bench_call_later0(loop, n, prep):
    """A feeder schedules a batch of 1000 ``loop.call_later(0, cb)`` timers, then
    re-schedules itself, until n timers have been scheduled; every timer must fire."""
    done = loop.create_future()
    batch = 1000
    state = [0, n]  # [timers fired, timers still to schedule]

    def cb():
        state[0] += 1
        if state[0] == n:
            done.set_result(None)

    def feeder():
        k = min(batch, state[1])
        state[1] -= k
        call_later = loop.call_later
        for _ in range(k):
            call_later(0, cb)
        if state[1]:
            loop.call_soon(feeder)

    loop.call_soon(feeder)
    await done
    # One more iteration: a timer that fires twice would show up here.
    await asyncio.sleep(0)
    _check(state[0] == n, f"{state[0]} timers fired, expected {n}")
    return n


def prep_timers(n):
    rng = random.Random(20240601)
    # 1 timer in 10 is kept and fires after 0-20 ms; the other 9 are
    # "timeouts" (0.2-2 s) that get cancelled one loop iteration later.
    return [
        rng.uniform(0.0, 0.02) if i % 10 == 0 else rng.uniform(0.2, 2.0)
        for i in range(n)
    ]


async def bench_call_later_cancel(loop, n, prep):
    """Schedule n timers in chunks of 1000 per loop iteration with random
    delays; cancel 90 % of them on the next iteration; wait for the
    surviving 10 % to fire."""
    delays = prep
    done = loop.create_future()
    expected = (n + 9) // 10
    fired = [0]
    cancelled = bytearray(n)
    chunk = 1000
    state = {"pos": 0, "pending": []}

    def on_fire(i):
        if cancelled[i]:
            if not done.done():
                done.set_exception(BenchError(f"cancelled timer {i} fired"))
            return
        if i % 10 == 0:
            fired[0] += 1
            if fired[0] == expected:
                done.set_result(None)

    def cancel_all(pending):
        for i, h in pending:
            cancelled[i] = 1
            h.cancel()

    def step():
        call_later = loop.call_later
        pos = state["pos"]
        end = min(pos + chunk, n)
        new_pending = []
        for i in range(pos, end):
            h = call_later(delays[i], on_fire, i)
            if i % 10:
                new_pending.append((i, h))
        cancel_all(state["pending"])
        state["pos"] = end
        if end < n:
            state["pending"] = new_pending
            loop.call_soon(step)
        else:
            state["pending"] = []
            cancel_all(new_pending)

    loop.call_soon(step)
    await done
    return n


async def _ret(i):
    return i


async def bench_gather(loop, n, prep):
    """create_task() n trivial coroutines, then gather() them."""
    create_task = loop.create_task
    tasks = [create_task(_ret(i)) for i in range(n)]
    res = await asyncio.gather(*tasks)
    _check(len(res) == n and res[-1] == n - 1, "gather returned wrong results")
    return n


async def _sleeper(k):
    sleep = asyncio.sleep
    for _ in range(k):
        await sleep(0)
    return k


async def bench_sleep0(loop, n, prep):
    """100 tasks each doing n/100 ``await asyncio.sleep(0)``."""
    ntasks = 100
    k = max(1, n // ntasks)
    res = await asyncio.gather(*[loop.create_task(_sleeper(k)) for _ in range(ntasks)])
    _check(sum(res) == ntasks * k, "sleep0 tasks did not all finish")
    return ntasks * k


async def bench_semaphore(loop, n, prep):
    """gather() batches of 10k tasks, at most 100 inside the Semaphore at
    once, each doing sleep(0) while holding it."""
    limit = 100
    sem = asyncio.Semaphore(limit)
    st = [0, 0]  # [active, peak]

    async def worker(i):
        async with sem:
            st[0] += 1
            if st[0] > st[1]:
                st[1] = st[0]
            await asyncio.sleep(0)
            st[0] -= 1
        return i

    batch = 10_000
    done = 0
    while done < n:
        k = min(batch, n - done)
        res = await asyncio.gather(*[worker(i) for i in range(k)])
        _check(len(res) == k and res[-1] == k - 1, "semaphore gather wrong result")
        done += k
    _check(st[1] == min(limit, batch, n), f"peak concurrency {st[1]} != {limit}")
    return n


async def bench_wait_for(loop, n, prep):
    """n sequential ``await asyncio.wait_for(coro_that_returns(), timeout=1)``."""
    wait_for = asyncio.wait_for
    total = 0
    for i in range(n):
        total += await wait_for(_ret(i), timeout=1)
    _check(total == n * (n - 1) // 2, "wait_for returned wrong results")
    return n


async def bench_future_roundtrip(loop, n, prep):
    """n times in one task: ``fut = loop.create_future()``, ``loop.call_soon(fut.set_result,
    i)``, ``await fut``."""
    create_future, call_soon = loop.create_future, loop.call_soon
    total = 0
    for i in range(n):
        fut = create_future()
        call_soon(fut.set_result, i)
        total += await fut
    _check(total == n * (n - 1) // 2, "awaited futures returned wrong results")
    return n


async def bench_queue(loop, n, prep):
    """2 producers / 2 consumers pass n items through Queue(maxsize=128)."""
    q = asyncio.Queue(maxsize=128)
    nprod, ncons = 2, 2
    per = n // nprod

    async def producer():
        put = q.put
        for i in range(per):
            await put(i)

    async def consumer():
        get = q.get
        cnt = 0
        while True:
            item = await get()
            if item is None:
                return cnt
            cnt += 1

    consumers = [loop.create_task(consumer()) for _ in range(ncons)]
    await asyncio.gather(*[producer() for _ in range(nprod)])
    for _ in range(ncons):
        await q.put(None)
    got = sum(await asyncio.gather(*consumers))
    _check(got == per * nprod, f"consumed {got} items, expected {per * nprod}")
    return per * nprod


async def bench_threadsafe(loop, n, prep):
    """A second thread calls loop.call_soon_threadsafe(cb) n times; the
    loop counts the callbacks and finishes when all n have arrived."""
    done = loop.create_future()
    count = [0]

    def cb():
        count[0] += 1
        if count[0] == n:
            done.set_result(None)

    errors = []

    def producer():
        try:
            cst = loop.call_soon_threadsafe
            for _ in range(n):
                cst(cb)
        except BaseException as e:  # noqa: BLE001 - reported by the watchdog
            errors.append(e)

    def watchdog():
        # If the producer thread died, don't wait forever for callbacks.
        if done.done():
            return
        if errors:
            done.set_exception(BenchError(
                f"producer thread failed: {type(errors[0]).__name__}: {errors[0]}"))
        else:
            loop.call_later(0.05, watchdog)

    t = threading.Thread(target=producer, name="bench-producer")
    t.start()
    loop.call_later(0.05, watchdog)
    try:
        await done
    finally:
        t.join()
    _check(count[0] == n, f"received {count[0]} callbacks, expected {n}")
    return n


# name -> (run, prep, full n, quick n, short description)
CASES = {
    "call_soon": (bench_call_soon, None, 1_000_000, 200_000,
                  "loop.call_soon() callbacks, 1000 per batch"),
    "chain": (bench_chain, None, 500_000, 100_000,
              "a callback that call_soon()s the next: one per loop iteration"),
    "call_later0": (bench_call_later0, None, 500_000, 100_000,
                    "call_later(0, cb) timers, 1000 per batch, all fire"),
    "call_later_cancel": (bench_call_later_cancel, prep_timers, 200_000, 50_000,
                          "call_later timers, 90% cancelled, 10% fire"),
    "gather": (bench_gather, None, 100_000, 25_000,
               "create_task + gather of trivial coroutines"),
    "sleep0": (bench_sleep0, None, 400_000, 100_000,
               "100 tasks doing sleep(0) in turn"),
    "semaphore": (bench_semaphore, None, 30_000, 10_000,
                  "gather 10k tasks/batch, Semaphore(100), sleep(0) inside"),
    "wait_for": (bench_wait_for, None, 100_000, 20_000,
                 "wait_for(fast coroutine, timeout=1)"),
    "future_roundtrip": (bench_future_roundtrip, None, 200_000, 50_000,
                         "create_future, call_soon(fut.set_result), await it; one task"),
    "queue": (bench_queue, None, 300_000, 60_000,
              "Queue(128) items, 2 producers / 2 consumers"),
    "threadsafe": (bench_threadsafe, None, 200_000, 50_000,
                   "call_soon_threadsafe from another thread"),
}
