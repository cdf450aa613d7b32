"""ferroloop.task_tree / dump_tasks: the pending tasks of a loop as a tree, on both loops.

Every test builds a known nest of tasks, lets it settle (a fixed number of loop
iterations: every task reaches its ``await`` within two), takes a snapshot and checks it
exactly: names, states, parent/child links and how each parent waits, the functions of
each suspended stack and the line of the innermost user frame. Expected line numbers
come from markers (``# <name>``) at the end of the lines of this file, never typed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import pathlib
import threading
import types

import pytest

from ferroloop import dump_tasks, task_tree
from looptest_support import PY

THIS_FILE = pathlib.Path(__file__).read_text().splitlines()


def line_of(marker):
    """Line number of the line of this file ending with ``# <marker>``."""
    found = [n for n, text in enumerate(THIS_FILE, 1) if text.rstrip().endswith(f"# <{marker}>")]
    assert len(found) == 1, (marker, found)
    return found[0]


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


async def cancel_all_but_me():
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def assert_links_and_states(tree):
    """Each node's children and awaiters follow from the parent links; every task but
    the running "probe" waits; no creation site outside debug mode."""
    for info in tree:
        assert info.children == tuple(t.id for t in tree if t.parent == info.id)
        assert info.awaited_by == (() if info.parent is None else (info.parent,))
        assert info.state == ("running" if info.name == "probe" else "waiting")
        assert info.created_at is None  # not in debug mode


def by_name(tree):
    infos = {info.name: info for info in tree}
    assert len(infos) == len(tree), "task names of a test must be unique"
    return infos


def edges(tree):
    """{child name: (parent name, link)} for every task that has a parent."""
    names = {info.id: info.name for info in tree}
    return {info.name: (names[info.parent], info.link) for info in tree if info.parent is not None}


def functions(info):
    return [frame.function for frame in info.stack]


def where(info):
    """(function, line) of the innermost user frame; the file must be this one."""
    assert info.location.filename == HERE, info.location
    return info.location.function, info.location.lineno


# -- the nest: a task gathering two tasks, one of which runs a TaskGroup with two -----------


async def sleeper():
    await asyncio.sleep(3600)  # <sleeper-await>


async def event_waiter(event):
    await event.wait()  # <waiter-await>


async def quick():
    return "done"


HERE = sleeper.__code__.co_filename  # the file name frames of this module report


async def run_group(release):
    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper(), name="tg-sleeper")
        group.create_task(event_waiter(release), name="tg-waiter")
        await release.wait()  # <group-await>


async def gather_pair(release, finished):
    left = asyncio.create_task(run_group(release), name="left")
    right = asyncio.create_task(event_waiter(release), name="right")
    await asyncio.gather(left, right, finished)  # <outer-await>


async def in_the_nest(probe):
    """Run ``probe()`` (returning what to keep) as task 'probe' beside the nest, clean up."""
    release = asyncio.Event()
    finished = asyncio.create_task(quick(), name="finished")
    await settle()
    assert finished.done()
    asyncio.create_task(gather_pair(release, finished), name="outer")
    await settle()
    try:
        return probe()  # <nest-probe>
    finally:
        await cancel_all_but_me()


needs_taskgroup = pytest.mark.skipif(PY < (3, 11), reason="asyncio.TaskGroup is new in 3.11")


@needs_taskgroup
def test_tree_of_gather_and_taskgroup_nest(loop):
    def probe():
        return task_tree()  # <probe-tree>

    tree = loop.run_until_complete(loop.create_task(in_the_nest(probe), name="probe"))
    assert [(info.name, info.depth) for info in tree] == [
        ("outer", 0),
        ("left", 1),
        ("tg-sleeper", 2),
        ("tg-waiter", 2),
        ("right", 1),
        ("probe", 0),
    ], "the finished task is left out; gather children in argument order"
    assert edges(tree) == {
        "left": ("outer", "gather"),
        "right": ("outer", "gather"),
        "tg-sleeper": ("left", "taskgroup"),
        "tg-waiter": ("left", "taskgroup"),
    }
    tasks = by_name(tree)
    assert_links_and_states(tree)
    assert functions(tasks["tg-sleeper"]) == ["sleeper", "sleep"]
    assert where(tasks["tg-sleeper"]) == ("sleeper", line_of("sleeper-await"))
    assert functions(tasks["tg-waiter"]) == ["event_waiter", "wait"]
    assert where(tasks["tg-waiter"]) == ("event_waiter", line_of("waiter-await"))
    assert functions(tasks["right"]) == ["event_waiter", "wait"]
    assert functions(tasks["left"]) == ["run_group", "wait"]
    assert where(tasks["left"]) == ("run_group", line_of("group-await"))
    assert functions(tasks["outer"]) == ["gather_pair"]
    assert where(tasks["outer"]) == ("gather_pair", line_of("outer-await"))
    # The running task's stack is live: from its coroutine down to task_tree()'s caller.
    assert [(f.function, f.lineno, f.kind) for f in tasks["probe"].stack] == [
        ("in_the_nest", line_of("nest-probe"), "coroutine"),
        ("probe", line_of("probe-tree"), "function"),
    ]
    assert tasks["outer"].awaiting.kind == "gather"
    assert tasks["tg-sleeper"].awaiting.kind == "future"
    assert tasks["probe"].awaiting is None
    assert tasks["outer"].coroutine == "gather_pair"


@needs_taskgroup
def test_dump_tasks_prints_the_nest_indented(loop):

    def probe():
        out = io.StringIO()
        dump_tasks(file=out)  # <probe-dump>
        return out.getvalue()

    text = loop.run_until_complete(loop.create_task(in_the_nest(probe), name="probe"))
    assert text.splitlines() == [
        f"Task 'outer' waiting in gather_pair() at {HERE}:{line_of('outer-await')}",
        f"  Task 'left' waiting in run_group() at {HERE}:{line_of('group-await')}  [gather]",
        f"    Task 'tg-sleeper' waiting in sleeper() at {HERE}:{line_of('sleeper-await')}"
        "  [taskgroup]",
        f"    Task 'tg-waiter' waiting in event_waiter() at {HERE}:{line_of('waiter-await')}"
        "  [taskgroup]",
        f"  Task 'right' waiting in event_waiter() at {HERE}:{line_of('waiter-await')}  [gather]",
        f"Task 'probe' running in probe() at {HERE}:{line_of('probe-dump')}",
    ]


# -- the other nest: a task running a TaskGroup whose child gathers leaf tasks -------------


async def gather_leaves(release):
    # Created in this order, named so that name order differs from argument order.
    leaves = [
        asyncio.create_task(event_waiter(release), name="leaf-3"),
        asyncio.create_task(sleeper(), name="leaf-1"),
        asyncio.create_task(event_waiter(release), name="leaf-2"),
    ]
    await asyncio.gather(*leaves)  # <leaves-await>


async def group_of_gatherer(release):
    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper(), name="tg-sleeper")
        group.create_task(gather_leaves(release), name="tg-gatherer")
        await release.wait()  # <root-group-await>


@needs_taskgroup
def test_tree_of_gather_inside_taskgroup_inside_a_task(loop):
    async def main():
        release = asyncio.Event()
        asyncio.create_task(group_of_gatherer(release), name="root")
        await settle()
        try:
            return task_tree()  # <main-tree>
        finally:
            await cancel_all_but_me()

    tree = loop.run_until_complete(loop.create_task(main(), name="probe"))
    assert [(info.name, info.depth) for info in tree] == [
        ("probe", 0),
        ("root", 0),
        ("tg-gatherer", 1),
        ("leaf-3", 2),
        ("leaf-1", 2),
        ("leaf-2", 2),
        ("tg-sleeper", 1),
    ], "roots and TaskGroup children by name, gather children in argument order"
    assert edges(tree) == {
        "tg-gatherer": ("root", "taskgroup"),
        "tg-sleeper": ("root", "taskgroup"),
        "leaf-3": ("tg-gatherer", "gather"),
        "leaf-1": ("tg-gatherer", "gather"),
        "leaf-2": ("tg-gatherer", "gather"),
    }
    tasks = by_name(tree)
    assert_links_and_states(tree)
    assert functions(tasks["root"]) == ["group_of_gatherer", "wait"]
    assert where(tasks["root"]) == ("group_of_gatherer", line_of("root-group-await"))
    assert functions(tasks["tg-gatherer"]) == ["gather_leaves"]
    assert where(tasks["tg-gatherer"]) == ("gather_leaves", line_of("leaves-await"))
    assert functions(tasks["tg-sleeper"]) == ["sleeper", "sleep"]
    for name in ("leaf-3", "leaf-2"):
        assert functions(tasks[name]) == ["event_waiter", "wait"]
        assert where(tasks[name]) == ("event_waiter", line_of("waiter-await"))
    assert functions(tasks["leaf-1"]) == ["sleeper", "sleep"]
    assert where(tasks["leaf-1"]) == ("sleeper", line_of("sleeper-await"))
    assert [(f.function, f.lineno, f.kind) for f in tasks["probe"].stack] == [
        ("main", line_of("main-tree"), "coroutine"),
    ]
    assert tasks["tg-gatherer"].awaiting.kind == "gather"
    assert tasks["root"].awaiting.kind == "future"
    assert tasks["leaf-1"].awaiting.kind == "future"
    assert tasks["probe"].awaiting is None
    assert tasks["root"].coroutine == "group_of_gatherer"


# -- links other than TaskGroup, on every Python --------------------------------------------


async def await_task(task):
    return await task  # <await-task>


async def nested_gather(first, second, third):
    await asyncio.gather(first, asyncio.gather(second, third))  # <nested-gather>


def test_direct_await_and_nested_gather(loop):
    async def main():
        release = asyncio.Event()
        first, second, third = (
            asyncio.create_task(event_waiter(release), name=name)
            for name in ("first", "second", "third")
        )
        gatherer = asyncio.create_task(nested_gather(first, second, third), name="gatherer")
        asyncio.create_task(await_task(gatherer), name="awaiter")
        await settle()
        try:
            return task_tree()
        finally:
            await cancel_all_but_me()

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    assert [(info.name, info.depth) for info in tree] == [
        ("awaiter", 0),
        ("gatherer", 1),
        ("first", 2),
        ("second", 2),
        ("third", 2),
        ("main", 0),
    ]
    assert edges(tree) == {
        "gatherer": ("awaiter", "await"),
        "first": ("gatherer", "gather"),
        "second": ("gatherer", "gather"),
        "third": ("gatherer", "gather"),
    }
    tasks = by_name(tree)
    assert tasks["awaiter"].awaiting.kind == "task"
    assert tasks["awaiter"].awaiting.task_id == tasks["gatherer"].id
    assert tasks["awaiter"].awaiting.description == "Task 'gatherer'"
    assert where(tasks["awaiter"]) == ("await_task", line_of("await-task"))
    assert where(tasks["gatherer"]) == ("nested_gather", line_of("nested-gather"))
    assert tasks["gatherer"].awaiting.kind == "gather"


async def shield_it(task):
    await asyncio.shield(task)  # <shield>


async def wait_on(task):
    await asyncio.wait([task])  # <wait>


async def wait_for_it(task):
    await asyncio.wait_for(task, 3600)  # <wait-for>


def test_shield_wait_and_wait_for_children(loop):
    async def main():
        release = asyncio.Event()
        parents = {}
        for name, parent in (("shield", shield_it), ("wait", wait_on), ("wait_for", wait_for_it)):
            child = asyncio.create_task(event_waiter(release), name=f"{name}-child")
            parents[name] = asyncio.create_task(parent(child), name=f"{name}-parent")
        await settle()
        try:
            return task_tree()
        finally:
            await cancel_all_but_me()

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    # wait_for awaits the task itself since 3.12; before, a helper future that the
    # child's done callback completes (like shield and wait, always).
    wait_for_link = "await" if PY >= (3, 12) else "callback"
    assert edges(tree) == {
        "shield-child": ("shield-parent", "callback"),
        "wait-child": ("wait-parent", "callback"),
        "wait_for-child": ("wait_for-parent", wait_for_link),
    }
    tasks = by_name(tree)
    assert where(tasks["shield-parent"]) == ("shield_it", line_of("shield"))
    assert where(tasks["wait-parent"]) == ("wait_on", line_of("wait"))
    assert where(tasks["wait_for-parent"]) == ("wait_for_it", line_of("wait-for"))
    assert functions(tasks["wait-parent"]) == ["wait_on", "wait", "_wait"]


# -- what the stack follows: async generators, generators, wrappers ----------------------


async def ticker(event):
    yield 1
    await event.wait()  # <agen-await>
    yield 2


async def consume(event):
    async for _ in ticker(event):  # <async-for>
        pass


@contextlib.asynccontextmanager
async def guarded(event):
    await event.wait()  # <cm-await>
    yield


async def enter_guarded(event):
    async with guarded(event):  # <async-with>
        pass


class EventAwaitable:
    """An awaitable whose ``__await__`` is a generator delegating to a coroutine."""

    def __init__(self, event):
        self.event = event

    def __await__(self):
        return (yield from self.event.wait().__await__())  # <dunder-await>


async def await_custom(event):
    await EventAwaitable(event)  # <custom-await>


@types.coroutine
def legacy_wait(future):
    return (yield from future)  # <yield-from>


async def await_legacy(future):
    await legacy_wait(future)  # <legacy-await>


def test_stack_follows_async_generators_generators_and_wrappers(loop):
    async def main():
        release = asyncio.Event()
        future = asyncio.get_running_loop().create_future()
        asyncio.create_task(consume(release), name="async-for")
        asyncio.create_task(enter_guarded(release), name="async-with")
        asyncio.create_task(await_custom(release), name="custom")
        asyncio.create_task(await_legacy(future), name="legacy")
        await settle()
        try:
            return task_tree()
        finally:
            await cancel_all_but_me()

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    tasks = by_name(tree)
    frames = {
        name: [(f.function, f.lineno, f.kind) for f in tasks[name].stack if f.filename == HERE]
        for name in ("async-for", "async-with", "custom", "legacy")
    }
    assert frames == {
        "async-for": [
            ("consume", line_of("async-for"), "coroutine"),
            ("ticker", line_of("agen-await"), "async_generator"),
        ],
        "async-with": [
            ("enter_guarded", line_of("async-with"), "coroutine"),
            ("guarded", line_of("cm-await"), "async_generator"),
        ],
        "custom": [
            ("await_custom", line_of("custom-await"), "coroutine"),
            ("__await__", line_of("dunder-await"), "generator"),
        ],
        "legacy": [
            ("await_legacy", line_of("legacy-await"), "coroutine"),
            ("legacy_wait", line_of("yield-from"), "generator"),
        ],
    }
    assert functions(tasks["async-for"])[-1] == "wait"  # Event.wait, under the generator
    assert functions(tasks["async-with"]) == ["enter_guarded", "__aenter__", "guarded", "wait"]
    assert functions(tasks["custom"]) == ["await_custom", "__await__", "wait"]
    assert where(tasks["legacy"]) == ("legacy_wait", line_of("yield-from"))
    for name in ("async-for", "async-with", "custom", "legacy"):
        assert tasks[name].state == "waiting"
        assert tasks[name].awaiting.kind == "future"
    assert all(info.awaiting is None or info.awaiting.task_id is None for info in tree)
    assert tasks["legacy"].awaiting.description.startswith("<Future pending")


# -- states, cancellation, creation site --------------------------------------------------


def test_states_scheduled_waiting_running_and_cancelling(loop):
    async def main():
        release = asyncio.Event()
        waiting = asyncio.create_task(event_waiter(release), name="waiting")
        await settle()
        waiting.cancel()  # its future is cancelled: the task is woken up, not yet run
        asyncio.create_task(event_waiter(release), name="not-started")
        try:
            return task_tree()
        finally:
            await cancel_all_but_me()

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    tasks = by_name(tree)
    assert {name: info.state for name, info in tasks.items()} == {
        "main": "running",
        "not-started": "scheduled",
        "waiting": "scheduled",
    }
    expected_cancelling = {"main": 0, "not-started": 0, "waiting": 1} if PY >= (3, 11) else {
        "main": None, "not-started": None, "waiting": None}
    assert {name: info.cancelling for name, info in tasks.items()} == expected_cancelling
    assert tasks["not-started"].stack[0].function == "event_waiter"
    assert tasks["not-started"].awaiting is None


def test_creation_site_recorded_in_debug_mode(loop):
    loop.set_debug(True)

    async def main():
        task = asyncio.create_task(sleeper(), name="made-here")  # <create-task>
        await settle()
        try:
            return task_tree()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    tasks = by_name(tree)
    site = tasks["made-here"].creation_site
    assert (site.filename, site.lineno, site.function) == (HERE, line_of("create-task"), "main")
    assert tasks["made-here"].created_at[-1].filename.endswith("tasks.py")  # asyncio.create_task


def test_no_creation_site_outside_debug_mode(loop):
    async def main():
        task = asyncio.create_task(sleeper(), name="made-here")
        await settle()
        try:
            return task_tree()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    tree = loop.run_until_complete(loop.create_task(main(), name="main"))
    assert by_name(tree)["made-here"].created_at is None
    assert by_name(tree)["made-here"].creation_site is None


# -- where it may be called from ---------------------------------------------------------


def test_snapshot_of_a_stopped_loop_and_from_a_callback(loop):
    task = loop.create_task(sleeper(), name="left-pending")
    loop.run_until_complete(settle())
    stopped = task_tree(loop)
    from_callback = []
    loop.call_soon(lambda: from_callback.append(task_tree()))
    loop.run_until_complete(loop.create_task(settle(), name="settling"))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    assert [(info.name, info.state) for info in stopped] == [("left-pending", "waiting")]
    assert [(info.name, info.state) for info in from_callback[0]] == [
        ("left-pending", "waiting"),
        ("settling", "scheduled"),  # created, its first step not run yet
    ]
    for tree in (stopped, from_callback[0]):
        assert where(tree[0]) == ("sleeper", line_of("sleeper-await"))
    assert task_tree(loop) == []
    out = io.StringIO()
    dump_tasks(loop, file=out)
    assert out.getvalue() == "no pending tasks\n"


def test_refuses_another_thread_and_no_loop(loop):
    with pytest.raises(RuntimeError, match="no running event loop"):
        task_tree()
    outcome = []

    def from_thread():
        try:
            task_tree(loop)
        except RuntimeError as exc:
            outcome.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=from_thread).start)
    loop.run_forever()
    assert outcome == [
        "task_tree() and dump_tasks() must be called from the thread running the loop "
        "(its tasks change under a running loop)"
    ]


def test_tasks_waiting_for_each_other_appear_once(loop):
    async def wait_for_other(box):
        await asyncio.wait([box["b"]])  # <cycle-wait>

    async def main():
        box = {}
        a = asyncio.create_task(wait_for_other(box), name="a")
        box["b"] = asyncio.create_task(await_task(a), name="b")
        await settle()
        out = io.StringIO()
        try:
            dump_tasks(file=out)
            return task_tree(), out.getvalue()
        finally:
            box["b"].cancel()  # a's wait() returns, then b's await raises: both end
            await asyncio.gather(a, box["b"], return_exceptions=True)

    tree, text = loop.run_until_complete(loop.create_task(main(), name="main"))
    # b awaits a (link 1) and a waits for b through wait()'s helper future (link 4):
    # the first link found makes the tree, the other is kept in awaited_by only.
    assert [(info.name, info.depth) for info in tree] == [("b", 0), ("a", 1), ("main", 0)]
    assert edges(tree) == {"a": ("b", "await")}
    tasks = by_name(tree)
    assert tasks["a"].awaited_by == (tasks["b"].id,)
    assert tasks["b"].awaited_by == (tasks["a"].id,)
    assert text.splitlines()[:2] == [
        f"Task 'b' waiting in await_task() at {HERE}:{line_of('await-task')}"
        "  (also awaited by 'a')",
        f"  Task 'a' waiting in wait_for_other() at {HERE}:{line_of('cycle-wait')}  [await]",
    ]
