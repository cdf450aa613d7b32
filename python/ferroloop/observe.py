"""Task tree: every pending task of an event loop as plain data, and who waits for whom.

``task_tree(loop=None)`` takes a snapshot of the loop's pending tasks (those of
``asyncio.all_tasks(loop)``) and returns one ``TaskInfo`` per task, in tree order: each
root task followed by its subtree, depth first. ``dump_tasks(loop=None, file=None)``
prints that snapshot as an indented tree, one line per task. Both work on any asyncio
loop (stock asyncio's and ferroloop's) and on Python 3.9 to 3.13.

What is recorded for a task
---------------------------
* ``stack``: the chain of suspended frames, outermost first. It starts at the task's
  coroutine and follows what each one awaits: ``cr_await`` of coroutines, ``ag_await``
  of async generators, ``gi_yieldfrom`` of generators (``yield from``, ``types.coroutine``,
  an ``__await__`` written as a generator). Where the chain reaches a wrapper object
  without such attributes (``async_generator_asend`` of ``async for``, the
  ``coroutine_wrapper`` of ``coro.__await__()``, a future's ``FutureIter``), the object it
  wraps is found with ``gc.get_referents``. The chain ends at the innermost future, which
  is ``awaiting``. For the task running when ``task_tree`` is called (state
  ``"running"``), the stack is the live one, from the task's coroutine down to the caller
  of ``task_tree``.
* ``state``: ``"running"`` (the loop's current task), ``"waiting"`` (suspended on a future
  that is not done yet) or ``"scheduled"`` (its next step is queued: just created, woken
  up, or after ``await asyncio.sleep(0)``).
* ``created_at``: the stack recorded when the task was created, which asyncio does in
  debug mode only (``Task._source_traceback``); ``None`` otherwise.

Who waits for whom
------------------
Task P is the parent of task C when P is waiting for C to finish. The links found:

1. ``await``: the future P awaits is C itself (``await task``, ``wait_for`` on 3.12+).
2. ``gather``: P awaits a ``gather()`` future and C is one of its children (nested
   gathers are followed).
3. ``taskgroup``: C was created by a ``TaskGroup`` whose parent task is P. The group is
   found through C's done callback, the group's bound ``_on_task_done`` method, so it is
   found even for ``async with TaskGroup():`` without ``as``.
4. ``callback``: P awaits a helper future that one of C's done callbacks completes, which
   is how ``shield``, ``asyncio.wait`` and ``wait_for`` before 3.12 wait: the callback
   closes over that future or takes it as a ``functools.partial`` argument.

The first link found for a task makes its parent (links 1-2 before 3-4, tasks taken
in snapshot order); every task linked to it is in ``awaited_by``. A link that would
close a cycle (two tasks awaiting each other, a deadlock) is kept in ``awaited_by``
only, so the parent links always form a forest and every task appears exactly once.

Relation to ``asyncio.capture_call_graph`` (Python 3.14): there asyncio records the
"awaited by" edges itself when ``gather``, ``TaskGroup`` and friends are used, and
``capture_call_graph(task)`` returns the task's coroutine frames (innermost first) and
the futures awaiting it, upwards. ``task_tree`` finds the same edges by inspection on
the Pythons that do not record them, and gives the whole forest downwards; its
``stack`` holds the same frames as ``call_stack``, outermost first.

Invariants
----------
* Inspection only: nothing is resumed, scheduled, cancelled or changed; no ``f_locals``.
* A snapshot holds no reference to a task, future or frame: only strings, ints, ``None``,
  tuples and the frozen dataclasses below (``dataclasses.asdict`` gives JSON-ready data).
* ``TaskInfo.id`` is ``id(task)``: unique within one snapshot.
* Snapshot order is deterministic for given task names: roots and tasks linked other than
  through ``gather`` are ordered by name (numbers inside names compare as numbers),
  ``gather`` children in argument order.
* It must run on the loop's thread (or while the loop is not running): asyncio's task
  registry and coroutine frames change under a running loop. Another thread gets
  ``RuntimeError``.

Private attributes read (there is no public way to the same facts on 3.9-3.13, and each
is present on the Python and C implementations of every supported version):
``Task._fut_waiter`` (the future a suspended task waits on, when the chain cannot name
it), ``Future._callbacks`` (links 3 and 4), ``_GatheringFuture._children`` (link 2),
``TaskGroup._parent_task`` (link 3), ``Task._source_traceback`` (``created_at``).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, TextIO, Tuple

__all__ = ("Awaited", "Frame", "SourceLine", "TaskInfo", "dump_tasks", "task_tree")

# Frames in these directories are asyncio's or ferroloop's own: ``TaskInfo.location``
# skips them to name the user's line.
_LIBRARY_DIRS = (
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
)
# A chain of awaits longer than this is cut (it would be a runaway recursion anyway).
_MAX_CHAIN = 1000
_DESCRIPTION_LIMIT = 200

_GatheringFuture = getattr(asyncio.tasks, "_GatheringFuture", ())
_TaskGroup = getattr(asyncio, "TaskGroup", ())  # 3.11+


@dataclass(frozen=True)
class SourceLine:
    """A place in the source: file, line number and function name (``co_name``)."""

    filename: str
    lineno: int
    function: str


@dataclass(frozen=True)
class Frame(SourceLine):
    """A frame of a task's stack; ``kind`` is what runs in it: ``"coroutine"``,
    ``"async_generator"``, ``"generator"`` or ``"function"``."""

    kind: str = "function"


@dataclass(frozen=True)
class Awaited:
    """The innermost future a task waits on.

    ``kind``: ``"task"``, ``"gather"`` (a ``gather()`` future) or ``"future"``;
    ``task_id``: the awaited task's ``TaskInfo.id`` when ``kind == "task"``;
    ``description``: ``Task '<name>'`` for a task, else the future's repr, shortened.
    """

    kind: str
    description: str
    task_id: Optional[int] = None


@dataclass(frozen=True)
class TaskInfo:
    """One pending task in a ``task_tree`` snapshot (the module doc has the details).

    ``id``: ``id(task)``; ``name``: ``task.get_name()``; ``state``: ``"running"``,
    ``"waiting"`` or ``"scheduled"``; ``coroutine``: qualified name of the task's
    coroutine; ``stack``: suspended frames, outermost first; ``awaiting``: the innermost
    future it waits on (None when running or scheduled without one); ``created_at``:
    creation stack, outermost first (debug mode only, else None); ``cancelling``:
    pending cancellation requests (``Task.cancelling()``, None before 3.11);
    ``parent``: id of the task waiting for this one in the tree (None for a root);
    ``link``: how that parent waits for it (``"await"``, ``"gather"``, ``"taskgroup"``,
    ``"callback"``); ``children``: ids of the tasks whose parent it is, in tree order;
    ``awaited_by``: ids of every task found waiting for it (the parent first);
    ``depth``: 0 for a root, parent's depth + 1 otherwise.
    """

    id: int
    name: str
    state: str
    coroutine: str
    stack: Tuple[Frame, ...]
    awaiting: Optional[Awaited]
    created_at: Optional[Tuple[SourceLine, ...]]
    cancelling: Optional[int]
    parent: Optional[int]
    link: Optional[str]
    children: Tuple[int, ...]
    awaited_by: Tuple[int, ...]
    depth: int

    @property
    def location(self) -> Optional[Frame]:
        """Innermost stack frame outside asyncio and ferroloop: the user's line where the
        task is suspended (or runs); the innermost frame if all are library frames."""
        return _innermost_user_frame(self.stack)

    @property
    def creation_site(self) -> Optional[SourceLine]:
        """Innermost frame of ``created_at`` outside asyncio and ferroloop, if recorded."""
        return _innermost_user_frame(self.created_at or ())


def task_tree(loop: Optional[asyncio.AbstractEventLoop] = None) -> List[TaskInfo]:
    """Snapshot of the pending tasks of ``loop`` (default: the running loop), tree order.

    Call it from the loop's thread (from a task or a callback), or with ``loop=`` while
    that loop is not running. Raises ``RuntimeError`` when there is no running loop and
    none is given, and when ``loop`` runs in another thread.
    """
    return _snapshot(_resolve_loop(loop), sys._getframe(1))


def dump_tasks(loop: Optional[asyncio.AbstractEventLoop] = None,
               file: Optional[TextIO] = None) -> None:
    """Print ``task_tree(loop)`` to ``file`` (default ``sys.stdout``) as an indented tree.

    One line per task, two spaces of indentation per level below its root::

        Task 'main' waiting in main() at /app/main.py:40
          Task 'worker-1' waiting in work() at /app/main.py:21  [taskgroup]

    That is: name, state (plus ``, cancelling`` when a cancellation is pending), the
    function, file and line of ``TaskInfo.location`` (or the coroutine's name when it
    has no frame), the link to the parent in brackets, and ``(also awaited by ...)``
    when more tasks wait for it. ``no pending tasks`` when there are none.
    """
    infos = _snapshot(_resolve_loop(loop), sys._getframe(1))
    out = sys.stdout if file is None else file
    for line in _tree_lines(infos):
        print(line, file=out)


# -- snapshot ----------------------------------------------------------------------------


def _resolve_loop(loop: Optional[asyncio.AbstractEventLoop]) -> asyncio.AbstractEventLoop:
    running = asyncio._get_running_loop()
    if loop is None:
        if running is None:
            raise RuntimeError("no running event loop: call from the loop's thread or pass loop=")
        return running
    if loop.is_running() and running is not loop:
        raise RuntimeError(
            "task_tree() and dump_tasks() must be called from the thread running the loop "
            "(its tasks change under a running loop)"
        )
    return loop


class _Node:
    """A task being placed in the tree (mutable while the snapshot is built)."""

    __slots__ = ("task", "stack", "awaited", "state", "parent", "link", "children",
                 "awaited_by")

    def __init__(self, task: "asyncio.Task[Any]", stack: Tuple[Frame, ...],
                 awaited: Optional["asyncio.Future[Any]"], state: str) -> None:
        self.task = task
        self.stack = stack
        self.awaited = awaited
        self.state = state
        self.parent: Optional[_Node] = None
        self.link: Optional[str] = None
        self.children: List[_Node] = []
        self.awaited_by: List[_Node] = []


def _snapshot(loop: asyncio.AbstractEventLoop, caller_frame: Any) -> List[TaskInfo]:
    current = asyncio.current_task(loop)
    tasks = sorted((t for t in asyncio.all_tasks(loop) if not t.done()), key=_task_order)
    nodes: Dict[int, _Node] = {}
    for task in tasks:
        nodes[id(task)] = _describe_task(task, task is current, caller_frame)
    helpers = _link_awaited_futures(nodes)
    _link_done_callbacks(nodes, helpers)
    infos: List[TaskInfo] = []
    for node in nodes.values():
        if node.parent is None:
            _append_subtree(node, 0, infos)
    return infos


def _task_order(task: "asyncio.Task[Any]") -> Tuple[Any, ...]:
    # Natural order of names (Task-9 before Task-10); equal names by id.
    parts = re.split(r"(\d+)", task.get_name())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), id(task)


def _describe_task(task: "asyncio.Task[Any]", running: bool, caller_frame: Any) -> _Node:
    coro = task.get_coro()
    stack: Optional[Tuple[Frame, ...]] = None
    if running:
        stack = _live_stack(coro, caller_frame)
    chain, innermost = _follow_awaits(coro)
    if stack is None:
        stack = chain
    # The chain ends at the future when it could name it; otherwise ask the task.
    # ``_fut_waiter`` (private, on both Task implementations) is the future a
    # suspended task waits on, None while it is scheduled or running.
    waiter = getattr(task, "_fut_waiter", None)
    awaited = innermost if innermost is not None else waiter
    if running:
        state, awaited = "running", None
    elif waiter is not None and not waiter.done():
        state = "waiting"
    else:
        state = "scheduled"
    return _Node(task, stack, awaited, state)


def _follow_awaits(start: Any) -> Tuple[Tuple[Frame, ...], Optional["asyncio.Future[Any]"]]:
    """Frames of the await chain from ``start`` down, and the future at its end (if any)."""
    frames: List[Frame] = []
    obj = start
    seen: Set[int] = set()
    while obj is not None and id(obj) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(obj))
        if asyncio.isfuture(obj):
            return tuple(frames), obj
        step = _suspension(obj)
        if step is None:
            obj = _wrapped_awaitable(obj)
            continue
        frame, obj = step
        if frame is not None:
            frames.append(_frame_entry(frame))
    return tuple(frames), None


def _suspension(obj: Any) -> Optional[Tuple[Any, Any]]:
    """``(frame, what it awaits)`` of a coroutine, async generator or generator (also
    duck-typed ones such as ``types.coroutine`` wrappers); None for anything else."""
    for frame_attr, await_attr in (("cr_frame", "cr_await"), ("ag_frame", "ag_await"),
                                   ("gi_frame", "gi_yieldfrom")):
        if hasattr(obj, frame_attr) or hasattr(obj, await_attr):
            return getattr(obj, frame_attr, None), getattr(obj, await_attr, None)
    return None


def _wrapped_awaitable(obj: Any) -> Any:
    """The coroutine, generator or future a wrapper stands for, via ``gc.get_referents``.

    ``async_generator_asend``/``athrow`` (what ``async for`` awaits), ``coroutine_wrapper``
    (``coro.__await__()``) and ``FutureIter`` (``fut.__await__()``) expose no attribute
    naming what they wrap, but hold it as a GC referent.
    """
    for referent in gc.get_referents(obj):
        if asyncio.isfuture(referent) or _suspension(referent) is not None:
            return referent
    return None


def _live_stack(coro: Any, caller_frame: Any) -> Optional[Tuple[Frame, ...]]:
    """The running task's frames, from its coroutine down to ``caller_frame``."""
    target = getattr(coro, "cr_frame", None)
    frames = []
    frame = caller_frame
    while frame is not None and target is not None:
        frames.append(frame)
        if frame is target:
            return tuple(_frame_entry(f) for f in reversed(frames))
        frame = frame.f_back
    return None  # not called from inside the task's own frames


def _frame_entry(frame: Any) -> Frame:
    code = frame.f_code
    if code.co_flags & inspect.CO_COROUTINE:
        kind = "coroutine"
    elif code.co_flags & inspect.CO_ASYNC_GENERATOR:
        kind = "async_generator"
    elif code.co_flags & inspect.CO_GENERATOR:
        kind = "generator"
    else:
        kind = "function"
    return Frame(code.co_filename, frame.f_lineno, code.co_name, kind)


# -- who waits for whom ------------------------------------------------------------------


def _link_awaited_futures(nodes: Dict[int, _Node]) -> Dict[int, List[_Node]]:
    """Links 1 and 2 of the module doc. Returns the helper futures for link 4: id of a
    pending future that is not a task -> the tasks waiting on it."""
    helpers: Dict[int, List[_Node]] = {}
    for parent in list(nodes.values()):
        awaited = parent.awaited
        if awaited is None:
            continue
        if _is_gather(awaited):
            for child in _gather_leaves(awaited):
                child_node = nodes.get(id(child))
                if child_node is not None:
                    _link(parent, child_node, "gather")
                elif not isinstance(child, asyncio.Task):
                    helpers.setdefault(id(child), []).append(parent)
        elif id(awaited) in nodes:
            _link(parent, nodes[id(awaited)], "await")
        elif not isinstance(awaited, asyncio.Task):
            helpers.setdefault(id(awaited), []).append(parent)
    return helpers


def _link_done_callbacks(nodes: Dict[int, _Node], helpers: Dict[int, List[_Node]]) -> None:
    """Links 3 and 4 of the module doc: what each task's done callbacks act on."""
    for child in list(nodes.values()):
        # ``_callbacks`` (private, Python and C futures): list of (callback, context),
        # or None when empty.
        for entry in getattr(child.task, "_callbacks", None) or ():
            callback = entry[0] if isinstance(entry, tuple) else entry
            for held in _held_by_callback(callback):
                if _TaskGroup and isinstance(held, _TaskGroup):
                    parent_task = getattr(held, "_parent_task", None)
                    parent = nodes.get(id(parent_task))
                    if parent is not None and parent is not child:
                        _link(parent, child, "taskgroup")
                elif asyncio.isfuture(held):
                    for parent in helpers.get(id(held), ()):
                        if parent is not child:
                            _link(parent, child, "callback")


def _held_by_callback(callback: Any) -> List[Any]:
    """Objects a done callback acts on: a bound method's owner, a partial's arguments,
    a closure's cells."""
    held: List[Any] = []
    if isinstance(callback, functools.partial):
        held.extend(callback.args)
        held.extend(callback.keywords.values())
        callback = callback.func
    owner = getattr(callback, "__self__", None)
    if owner is not None:
        held.append(owner)
    function = getattr(callback, "__func__", callback)
    for cell in getattr(function, "__closure__", None) or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return held


def _is_gather(future: Any) -> bool:
    return bool(_GatheringFuture) and isinstance(future, _GatheringFuture)


def _gather_leaves(future: Any) -> List[Any]:
    """The futures a gather future waits for, nested gathers flattened, in order."""
    leaves: List[Any] = []
    pending = [future]
    seen: Set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        # ``_children`` (private): the futures given to gather(), in argument order.
        for child in getattr(current, "_children", None) or ():
            if _is_gather(child):
                pending.append(child)
            elif not child.done():
                leaves.append(child)
    return leaves


def _link(parent: _Node, child: _Node, how: str) -> None:
    if parent not in child.awaited_by:
        child.awaited_by.append(parent)
    if child.parent is not None or _is_ancestor(child, parent):
        return
    child.parent = parent
    child.link = how
    parent.children.append(child)


def _is_ancestor(candidate: _Node, node: _Node) -> bool:
    current: Optional[_Node] = node
    while current is not None:
        if current is candidate:
            return True
        current = current.parent
    return False


def _append_subtree(node: _Node, depth: int, out: List[TaskInfo]) -> None:
    out.append(_task_info(node, depth))
    for child in node.children:
        _append_subtree(child, depth + 1, out)


def _task_info(node: _Node, depth: int) -> TaskInfo:
    task = node.task
    cancelling = task.cancelling() if hasattr(task, "cancelling") else None
    return TaskInfo(
        id=id(task),
        name=task.get_name(),
        state=node.state,
        coroutine=_coroutine_name(task.get_coro()),
        stack=node.stack,
        awaiting=_describe_awaited(node.awaited),
        created_at=_creation_stack(task),
        cancelling=cancelling,
        parent=None if node.parent is None else id(node.parent.task),
        link=node.link,
        children=tuple(id(child.task) for child in node.children),
        awaited_by=tuple(id(other.task) for other in node.awaited_by),
        depth=depth,
    )


def _coroutine_name(coro: Any) -> str:
    return getattr(coro, "__qualname__", None) or type(coro).__name__


def _describe_awaited(future: Any) -> Optional[Awaited]:
    if future is None:
        return None
    if isinstance(future, asyncio.Task):
        return Awaited("task", f"Task {future.get_name()!r}", id(future))
    text = repr(future)
    if len(text) > _DESCRIPTION_LIMIT:
        text = text[: _DESCRIPTION_LIMIT - 3] + "..."
    return Awaited("gather" if _is_gather(future) else "future", text)


def _creation_stack(task: Any) -> Optional[Tuple[SourceLine, ...]]:
    # ``_source_traceback``: a traceback.StackSummary recorded in debug mode only.
    recorded = getattr(task, "_source_traceback", None)
    if not recorded:
        return None
    return tuple(SourceLine(entry.filename, entry.lineno, entry.name) for entry in recorded)


def _innermost_user_frame(frames: Any) -> Any:
    for frame in reversed(frames):
        if not frame.filename.startswith(_LIBRARY_DIRS):
            return frame
    return frames[-1] if frames else None


def _tree_lines(infos: list[TaskInfo]) -> list[str]:
    """The lines ``dump_tasks`` prints for a snapshot (also the monitor's ``ps`` text)."""
    if not infos:
        return ["no pending tasks"]
    names = {info.id: info.name for info in infos}
    return [_format_line(info, names) for info in infos]


def _format_line(info: TaskInfo, names: Dict[int, str]) -> str:
    state = info.state + (", cancelling" if info.cancelling else "")
    where = info.location
    if where is not None:
        place = f"in {where.function}() at {where.filename}:{where.lineno}"
    else:
        place = f"in {info.coroutine}"
    line = f"{'  ' * info.depth}Task {info.name!r} {state} {place}"
    if info.link is not None:
        line += f"  [{info.link}]"
    others = [names[i] for i in info.awaited_by if i != info.parent and i in names]
    if others:
        line += "  (also awaited by " + ", ".join(repr(n) for n in others) + ")"
    return line

