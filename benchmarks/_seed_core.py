"""The main job's core patterns (no I/O): gather, wait_for with timeouts, a
Semaphore-limited gather, TaskGroup, cancelling a tree of tasks, run_in_executor.

Each pattern is an ``async def`` that returns plain data (lists, dicts, ints, strings), so
``seed_demo.py`` can compare the result on every loop with stock asyncio's.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HAS_TASKGROUP = sys.version_info >= (3, 11)


async def gather_many():
    """gather() 20,000 coroutines; every 1000th one raises."""

    async def work(i):
        await asyncio.sleep(0)
        if i % 1000 == 999:
            raise ValueError(f"item {i}")
        return i * i % 1009

    results = await asyncio.gather(*(work(i) for i in range(20_000)),
                                   return_exceptions=True)
    values = [r for r in results if not isinstance(r, BaseException)]
    errors = [str(r) for r in results if isinstance(r, BaseException)]
    return {"values": len(values), "checksum": sum(values),
            "errors": len(errors), "first_error": errors[0]}


async def wait_for_timeouts():
    """500 jobs under wait_for(timeout=0.1 s); every 5th job is too slow."""
    cancelled_jobs = []

    async def job(i):
        try:
            await asyncio.sleep(0.5 if i % 5 == 0 else 0.001 * (i % 3))
            return i * 2
        except asyncio.CancelledError:
            cancelled_jobs.append(i)  # the timeout cancelled us
            raise

    async def guarded(i):
        try:
            return ("ok", await asyncio.wait_for(job(i), timeout=0.1))
        except asyncio.TimeoutError:
            return ("timeout", i)

    outcomes = await asyncio.gather(*(guarded(i) for i in range(500)))
    ok = [v for kind, v in outcomes if kind == "ok"]
    timed_out = [v for kind, v in outcomes if kind == "timeout"]
    return {"completed": len(ok), "sum_completed": sum(ok),
            "timed_out": timed_out, "cancelled_inside_job": sorted(cancelled_jobs)}


async def semaphore_gather():
    """2,000 tasks through a Semaphore(10); records peak concurrency."""
    sem = asyncio.Semaphore(10)
    active = peak = 0

    async def fetch(i):
        nonlocal active, peak
        async with sem:
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)      # pretend to do I/O
            await asyncio.sleep(0)
            active -= 1
        return i % 7

    results = await asyncio.gather(*(fetch(i) for i in range(2_000)))
    return {"results": len(results), "checksum": sum(results),
            "peak_concurrency": peak, "active_at_end": active}


async def task_group():
    """TaskGroup: 1,000 children succeed; then a group where one child fails
    and its 50 sleeping siblings get cancelled (Python 3.11+)."""
    if not HAS_TASKGROUP:
        return "skipped: needs Python 3.11+"

    async def square(i):
        await asyncio.sleep(0)
        return i * i

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(square(i)) for i in range(1_000)]
    total = sum(t.result() for t in tasks)

    cancelled = []

    async def sibling(i):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    errors = None
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(50):
                tg.create_task(sibling(i))
            tg.create_task(failing())
    except Exception as eg:  # an ExceptionGroup
        errors = [f"{type(e).__name__}: {e}" for e in eg.exceptions]
        group = type(eg).__name__
    return {"sum_of_squares": total, "group": group, "errors": errors,
            "siblings_cancelled": sorted(cancelled)}


async def cancel_task_tree():
    """Build a 4-level tree of tasks (4 children per node, 256 sleeping
    leaves), cancel the root, and check cancellation reached every node and
    every finally: block ran (including one that awaits)."""
    events = []
    fanout, depth = 4, 4
    leaves_total = fanout ** depth
    leaves_started = 0
    all_started = asyncio.Event()

    async def leaf(path):
        nonlocal leaves_started
        leaves_started += 1
        if leaves_started == leaves_total:
            all_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append(("leaf-cancelled", path))
            raise
        finally:
            await asyncio.sleep(0)     # awaiting inside cleanup is allowed
            events.append(("leaf-cleanup", path))

    async def node(path, depth):
        if depth == 0:
            return await leaf(path)
        children = [asyncio.create_task(node(path + (i,), depth - 1))
                    for i in range(fanout)]
        try:
            return await asyncio.gather(*children)
        except asyncio.CancelledError:
            events.append(("node-cancelled", path))
            raise

    root = asyncio.create_task(node((), depth))
    await all_started.wait()
    root.cancel()
    try:
        await root
        outcome = "root finished?!"
    except asyncio.CancelledError:
        outcome = "root cancelled"
    await asyncio.sleep(0)  # let the last child callbacks settle

    def count(kind):
        return sum(1 for k, _ in events if k == kind)

    return {"outcome": outcome, "root.cancelled()": root.cancelled(),
            "nodes_cancelled": count("node-cancelled"),
            "leaves_cancelled": count("leaf-cancelled"),
            "leaf_cleanups": count("leaf-cleanup"),
            "paths": sorted({"/".join(map(str, p)) for _, p in events})[:5]}


def _blocking_hash(i):
    time.sleep(0.002)                 # a blocking call (e.g. legacy I/O)
    return hashlib.sha256(f"item-{i}".encode()).hexdigest()[:12]


def _blocking_fail():
    return 1 / 0


async def run_in_executor():
    """Blocking work in threads: the default executor, an explicit
    ThreadPoolExecutor, asyncio.to_thread, and an exception crossing back."""
    loop = asyncio.get_running_loop()
    a = await asyncio.gather(*(loop.run_in_executor(None, _blocking_hash, i)
                               for i in range(100)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        b = await asyncio.gather(*(loop.run_in_executor(pool, _blocking_hash, i)
                                   for i in range(100, 200)))
    c = await asyncio.to_thread(_blocking_hash, 999)
    try:
        await loop.run_in_executor(None, _blocking_fail)
        error = None
    except ZeroDivisionError as e:
        error = f"ZeroDivisionError: {e}"
    digest = hashlib.sha256("".join(a + b + [c]).encode()).hexdigest()[:16]
    return {"calls": len(a) + len(b) + 1, "digest": digest, "error": error}


CORE_PATTERNS = [
    ("gather", gather_many),
    ("wait_for+timeout", wait_for_timeouts),
    ("semaphore", semaphore_gather),
    ("taskgroup", task_group),
    ("cancel_tree", cancel_task_tree),
    ("run_in_executor", run_in_executor),
]
