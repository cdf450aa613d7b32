"""Where a task was created, in the two reports asyncio gives about forgotten tasks.

"Task was destroyed but it is pending!" and "Task exception was never retrieved" name the
task but not where the program made it, which is what the reader needs. With task
origins on, the loop thread records the frame that created each coroutine (CPython's
``sys.set_coroutine_origin_tracking_depth(1)``: one frame, captured by the interpreter
itself) and the loop adds it to those reports as the context key ``task_created_at``
(``"file:line in function"``), which asyncio's default exception handler prints with the
other keys. The message itself is unchanged, so handlers that match it keep working.

Off by default: recording costs every coroutine creation a frame lookup and a tuple
(measured on a gather of nested coroutines: +20% to +50% CPU), more than the 3% a
default-on diagnosis may cost. Turned on by ``loop.set_task_origins(True)``, the
environment variable ``FERROLOOP_TASK_ORIGINS=1`` (read when a loop is created),
``python -m ferroloop run --task-origins`` and the pytest plugin's ``--ferroloop`` runs.
Debug mode records deeper stacks already (asyncio's ``source_traceback``); then nothing
is added.

Invariants: the tracking depth is raised only in the loop thread while ``run_forever``
runs and restored when it returns (it is per thread); a report without a task, with a
``source_traceback``, or whose coroutine has no recorded origin is passed on untouched.
"""

from __future__ import annotations

import os
import sys
from asyncio import base_events

ENV_TASK_ORIGINS = "FERROLOOP_TASK_ORIGINS"

# What asyncio's tasks report about themselves when garbage-collected or left unread.
_FORGOTTEN_TASK_MESSAGES = (
    "Task was destroyed but it is pending!",
    "Task exception was never retrieved",
)


class TaskOriginMethods:
    """``set_task_origins`` and the enriched ``call_exception_handler`` of
    ``ferroloop.Loop`` (a mixin)."""

    _task_origins = False
    _origin_depth_saved = None  # the thread's depth before run_forever raised it

    def set_task_origins(self, enabled: bool) -> None:
        """Record where each task's coroutine was created, for the forgotten-task reports
        (see ``ferroloop._origins``); takes effect at once if the loop is running."""
        self._task_origins = bool(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._apply_task_origins)

    def get_task_origins(self) -> bool:
        return self._task_origins

    def _task_origins_from_environment(self) -> None:
        if os.environ.get(ENV_TASK_ORIGINS, "") not in ("", "0"):
            self._task_origins = True

    def _apply_task_origins(self) -> None:
        """In the loop thread: raise the tracking depth to 1 while origins are on."""
        if self._task_origins and self._origin_depth_saved is None:
            depth = sys.get_coroutine_origin_tracking_depth()
            self._origin_depth_saved = depth
            sys.set_coroutine_origin_tracking_depth(max(depth, 1))
        elif not self._task_origins:
            self._restore_origin_depth()

    def _restore_origin_depth(self) -> None:
        if self._origin_depth_saved is not None:
            sys.set_coroutine_origin_tracking_depth(self._origin_depth_saved)
            self._origin_depth_saved = None

    def call_exception_handler(self, context):
        # A destroyed pending task reports itself as "task", an unread exception as
        # "future".
        task = context.get("task", context.get("future"))
        if (
            task is not None
            and "source_traceback" not in context
            and "task_created_at" not in context
            and context.get("message") in _FORGOTTEN_TASK_MESSAGES
        ):
            origin = _origin_of(task)
            if origin is not None:
                context = {**context, "task_created_at": origin}
        return base_events.BaseEventLoop.call_exception_handler(self, context)


def _origin_of(task):
    """``"file:line in function"`` where ``task``'s coroutine was created, if recorded."""
    get_coro = getattr(task, "get_coro", None)
    coro = get_coro() if get_coro is not None else None
    frames = getattr(coro, "cr_origin", None)
    if not frames:
        return None
    filename, lineno, function = frames[0]
    return f"{filename}:{lineno} in {function}"
