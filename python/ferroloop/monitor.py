"""The monitor: a read-only view of a running ferroloop loop, on a Unix socket.

``loop.start_monitor(path)`` (or ``FERROLOOP_MONITOR=path`` when a loop is created, or
``python -m ferroloop run --monitor PATH``) serves the loop's task tree and counters on
the Unix stream socket ``path``; ``python -m ferroloop ps PATH`` prints the task tree,
``python -m ferroloop top PATH`` redraws the counters and the busiest tasks every
second. ``loop.stop_monitor()`` and ``loop.close()`` stop it. A monitor that
``FERROLOOP_MONITOR`` cannot start (the path is in use...) is a warning on the
``ferroloop`` logger, and the loop runs without one. ferroloop only: stock asyncio has
no monitor.

Protocol: newline-delimited JSON, UTF-8. A request is one line holding a JSON object
``{"cmd": "ps" | "stats" | "top"}``, at most 4096 bytes with its newline; each request
gets one answer line. A client may send several requests on one connection, one after
the other. Answers:

* ``stats``: ``loop.stats()`` as it is (``ferroloop._stats`` lists the keys);
* ``ps``: ``{"pid": ..., "tasks": [...], "text": "..."}``: ``tasks`` is
  ``ferroloop.task_tree(loop)``, each ``TaskInfo`` as ``dataclasses.asdict`` makes it,
  and ``text`` what ``ferroloop.dump_tasks`` prints for that same snapshot;
* ``top``: ``{"pid": ..., "stats": {...}, "tasks": [...], "timed": true | false}``:
  ``stats`` is ``loop.stats()`` without its ``busiest_tasks`` entry, and ``tasks`` that
  entry (``timed``: dicts with ``"task"``, its name, ``"seconds"``, ``"steps"``,
  ``"done"``, busiest first) when the loop times its callbacks, which a running monitor
  turns on; otherwise (someone turned it off) the names of the pending tasks, sorted,
  as ``{"task": name, "seconds": null}`` (not ``timed``).

Per-callback timing (``loop.set_callback_timing``, two clock reads per callback) is on
while a monitor runs; stopping the monitor puts it back as it was when it started.

An answer that cannot be given is ``{"error": "..."}``. When the watched loop does not
answer a snapshot within ``ANSWER_TIMEOUT`` (it is blocked, or not running), the error
answer also has ``"blocked"`` (it is running but did not answer), ``"running"`` and
``"stats"`` (``loop.stats()``, read without the loop): ``ps`` on a stuck loop says so.
A request that is not valid (not JSON, not an object, an unknown ``cmd``, a line longer
than 4096 bytes), a refused connection (another uid, too many clients) and a client
idle for ``IDLE_TIMEOUT`` seconds get one error line, then the connection is closed; a
client that does not take an answer within ``IDLE_TIMEOUT`` is cut off.

Access: the socket file is made mode 0600 before the socket listens, and each
connection's peer uid (``SO_PEERCRED``) must be this process's effective uid, which
owns the file: any other uid is refused, root included (root can still read the
process's memory; refusing it keeps the rule "the owner only" simple to state and to
test). ``start_monitor`` refuses a path holding something other than a socket, or a
socket some process listens on; a socket file nobody listens on (left by a process that
died) is replaced.

Invariants:

* The server runs in a daemon thread with a loop of its own, so it answers while the
  watched loop is blocked. It never touches the watched loop's tasks: a snapshot is
  taken by a callback it schedules with ``call_soon_threadsafe``, on the watched loop's
  thread (``task_tree`` must run there), and sent back to the server's loop.
  ``loop.stats()`` is read from the server's thread (it is safe from any thread).
* The watched loop does little for the monitor: at most one snapshot callback of each
  kind (task tree, task names) is queued on it at a time (concurrent requests share
  it), two of a kind are sent at least ``MIN_SNAPSHOT_INTERVAL`` apart, and the JSON
  is made on the server's thread (which still shares the GIL with it: ``task_tree``
  and the JSON of 3000 tasks take about 0.1 s and 0.03 s of CPU).
* Nothing a client does raises into the watched loop or reaches an exception handler:
  garbage, floods and hang-ups end that client's connection only. At most
  ``MAX_CLIENTS`` connections are served at a time; each waits at most ``IDLE_TIMEOUT``
  for a request and for the client to take its answer.
* The monitor holds the loop: a loop with a monitor is not garbage until ``close()`` or
  ``stop_monitor()``; at interpreter exit the monitors still running are stopped.
  Stopping joins the thread and removes the socket file if it is still the one bound.
* After ``fork()``, the child has no monitor (the thread is the parent's, and so is the
  socket file): ``stop_monitor`` there only forgets it, and ``start_monitor`` may start a
  new one at another path.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import errno
import functools
import json
import logging
import os
import socket
import stat
import struct
import threading
from typing import Any

from .observe import _tree_lines, task_tree

__all__ = ("ENV_MONITOR", "MonitorClient", "MonitorMethods")

logger = logging.getLogger("ferroloop")

ENV_MONITOR = "FERROLOOP_MONITOR"

MAX_LINE = 4096  # bytes of a request line, its newline included
MAX_CLIENTS = 64  # connections served at a time
IDLE_TIMEOUT = 10.0  # seconds a connection may wait to send a request or take an answer
ANSWER_TIMEOUT = 1.0  # seconds the watched loop has to take a snapshot
MIN_SNAPSHOT_INTERVAL = 0.1  # seconds between two snapshots of a kind
BACKLOG = 128

COMMANDS = ("ps", "stats", "top")
_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid

# Monitors serving in this process, stopped at exit.
_running: set[_Monitor] = set()


class MonitorMethods:
    """``start_monitor``/``stop_monitor`` of ``ferroloop.Loop`` (a mixin)."""

    _monitor: _Monitor | None = None

    def start_monitor(self, path: str | os.PathLike[str]) -> None:
        """Serve this loop's task tree and stats on the Unix socket ``path`` (mode 0600).

        Returns once the socket listens. Raises ``FileExistsError`` when ``path`` holds
        something other than a socket or a socket that is in use, ``RuntimeError`` when
        this loop already has a monitor or is closed, ``OSError`` when the socket cannot
        be made. May be called from any thread (see the ``ferroloop.monitor`` docs).
        """
        monitor = self._monitor
        if monitor is not None and monitor.inherited():
            monitor = None  # a forked child's copy of the parent's
        if monitor is not None:
            raise RuntimeError(f"this loop already has a monitor, at {monitor.path!r}")
        self._check_closed()
        monitor = self._monitor = _Monitor.start(self, os.path.abspath(os.fsdecode(path)))
        monitor.timing_was_on = self._callback_timing
        self.set_callback_timing(True)

    def stop_monitor(self) -> None:
        """Stop the monitor, if any: close its connections, remove its socket file, turn
        per-callback timing back off if the monitor turned it on."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor.stop()
        if not monitor.timing_was_on:
            self.set_callback_timing(False)

    def _monitor_from_environment(self) -> None:
        """Called by ``Loop.__init__``: ``FERROLOOP_MONITOR`` starts a monitor.

        A monitor that cannot start (the path is in use, e.g. by the monitor of another
        loop or of the parent process, whose environment this one inherited) is logged
        as a warning on the ``ferroloop`` logger; the loop works without one.
        """
        path = os.environ.get(ENV_MONITOR)
        if not path:
            return
        try:
            self.start_monitor(path)
        except (OSError, ValueError) as exc:
            logger.warning("%s=%s: no monitor for %r: %s", ENV_MONITOR, path, self, exc)


@functools.cache
def _monitor_loop_class() -> type:
    from ._loop import Loop  # not at the top: _loop imports this module

    class MonitorLoop(Loop):
        """The monitor's own loop: no monitor, blocking detector, callback timing or debug
        mode of its own (``FERROLOOP_*``, ``PYTHONASYNCIODEBUG``): what they would report
        is not the program's."""

        def __init__(self) -> None:
            super().__init__()
            self.set_debug(False)

        def _blocking_from_environment(self) -> None:
            pass

        def _callback_timing_from_environment(self) -> None:
            pass

        def _monitor_from_environment(self) -> None:
            pass

    return MonitorLoop


class _Unavailable(Exception):
    """The watched loop gave no snapshot, or ``stats()`` failed: ``answer`` is the error
    answer to send."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer["error"])
        self.answer = answer


class _Ask:
    """A snapshot asked of the watched loop: a future on the monitor's loop, resolved with
    ``(True, data)`` or ``(False, error)``, and when the request was sent."""

    __slots__ = ("future", "sent")

    def __init__(self, future: asyncio.Future[Any], sent: float) -> None:
        self.future = future
        self.sent = sent


class _Monitor:
    """One monitor: the listening socket and the thread serving it."""

    def __init__(self, watched: Any, path: str, sock: socket.socket, inode: int) -> None:
        self.path = path
        self._watched = watched
        self._sock = sock
        self._inode = inode
        self._pid = os.getpid()
        self._loop = _monitor_loop_class()()
        self._clients: set[asyncio.Task[None]] = set()
        self._asks: dict[str, _Ask] = {}
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopped = False
        self.timing_was_on = False  # per-callback timing, when the monitor started
        self._server: Any = None  # the asyncio.Server, once the thread made it
        self._thread = threading.Thread(
            target=self._run, name=f"ferroloop-monitor {path}", daemon=True
        )

    @classmethod
    def start(cls, watched: Any, path: str) -> _Monitor:
        sock, inode = _listen_owner_only(path)
        try:
            monitor = cls(watched, path, sock, inode)
            try:
                monitor._thread.start()
            except BaseException:
                monitor._loop.close()
                raise
            monitor._started.wait()
            if monitor._start_error is not None:
                monitor._thread.join()
                raise monitor._start_error
        except BaseException:
            sock.close()
            _remove_socket_file(path, inode)
            raise
        _running.add(monitor)
        return monitor

    def inherited(self) -> bool:
        """True in a forked child: the thread and the socket file are the parent's."""
        return os.getpid() != self._pid

    def stop(self) -> None:
        if self._stopped or self.inherited():
            return
        self._stopped = True
        _running.discard(self)
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # its loop is closed: the thread has ended
            pass
        self._thread.join()
        _remove_socket_file(self.path, self._inode)

    # -- the monitor's thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        try:
            try:
                loop.run_until_complete(self._start_serving())
            except BaseException as exc:  # noqa: BLE001 - raised again by start()
                self._start_error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
            loop.run_until_complete(self._shut_down())
        finally:
            loop.close()

    async def _start_serving(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._serve_client, sock=self._sock, limit=MAX_LINE - 1, backlog=BACKLOG
        )

    async def _shut_down(self) -> None:
        self._server.close()
        await asyncio.sleep(0)  # connections accepted last get their handler tasks
        # Every live transport of this loop (ferroloop's registry): all its connections.
        for transport in list(self._loop._transports.values()):
            transport.abort()
        me = asyncio.current_task()
        handlers = [task for task in asyncio.all_tasks() if task is not me]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        refusal = self._refusal(writer)
        if refusal is not None:
            _hang_up(writer, refusal)
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            error = await self._converse(reader, writer)
        except (OSError, asyncio.TimeoutError):
            # The client left mid-answer, or took no answer for IDLE_TIMEOUT.
            writer.transport.abort()
            return
        finally:
            self._clients.discard(task)
        _hang_up(writer, error)

    def _refusal(self, writer: asyncio.StreamWriter) -> str | None:
        """Why this connection is refused, or None."""
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
        uid = _PEER_CREDENTIALS.unpack(creds)[1]
        if uid != os.geteuid():
            return f"uid {uid} may not use this monitor: only its owner, uid {os.geteuid()}"
        if len(self._clients) >= MAX_CLIENTS:
            return f"too many clients: the monitor serves {MAX_CLIENTS} at a time"
        return None

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str | None:
        """Answers requests until the client closes (None) or errs (the error to send)."""
        while True:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError:
                return f"a request line is at most {MAX_LINE} bytes long"
            except asyncio.TimeoutError:
                return f"no request for {IDLE_TIMEOUT:g} s"
            command, error = _parse_request(line)
            if error is not None:
                return error
            writer.write(_encode(await self._answer(command)))
            await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)

    async def _answer(self, command: str) -> dict[str, Any]:
        try:
            if command == "stats":
                return self._stats()
            if command == "ps":
                tree = await self._snapshot("tree")
                text = "\n".join(_tree_lines(tree))
                return {"pid": os.getpid(), "tasks": tree, "text": text}  # see _jsonable
            stats = self._stats()
            busiest = stats.pop("busiest_tasks", None)
            if busiest is not None:
                return {"pid": os.getpid(), "stats": stats, "tasks": busiest, "timed": True}
            names = await self._snapshot("names")
            pending = [{"task": name, "seconds": None} for name in names]
            return {"pid": os.getpid(), "stats": stats, "tasks": pending, "timed": False}
        except _Unavailable as exc:
            return exc.answer

    def _stats(self) -> dict[str, Any]:
        """``loop.stats()``; if it fails, the client is told why (``_Unavailable``)."""
        try:
            return self._watched.stats()
        except Exception as exc:  # noqa: BLE001 - for the client, never for the monitor
            raise _Unavailable({"error": f"loop.stats() failed: {exc!r}"}) from None

    async def _snapshot(self, kind: str) -> Any:
        """A snapshot taken on the watched loop's thread; raises ``_Unavailable``."""
        loop = self._loop
        now = loop.time()
        ask = self._asks.get(kind)
        if ask is None or ask.future.done():
            send_at = now if ask is None else max(now, ask.sent + MIN_SNAPSHOT_INTERVAL)
            ask = _Ask(loop.create_future(), send_at)
            self._asks[kind] = ask
            loop.call_at(send_at, self._send_ask, kind, ask.future)
        try:
            ok, data = await asyncio.wait_for(
                asyncio.shield(ask.future), max(ask.sent + ANSWER_TIMEOUT - now, 0.0)
            )
        except asyncio.TimeoutError:
            raise _Unavailable(self._unanswered(loop.time() - ask.sent)) from None
        if not ok:
            raise _Unavailable({"error": data})
        return data

    def _send_ask(self, kind: str, future: asyncio.Future[Any]) -> None:
        watched = self._watched
        try:
            watched.call_soon_threadsafe(_take_snapshot, watched, kind, self._loop, future)
        except RuntimeError:  # closed
            future.set_result((False, "the event loop is closed"))

    def _unanswered(self, waited: float) -> dict[str, Any]:
        watched = self._watched
        running = watched.is_running()
        if watched.is_closed():
            error = "the event loop is closed"
        elif running:
            error = (
                f"the event loop has not answered for {waited:.1f} s: it is blocked "
                "(or very busy)"
            )
        else:
            error = (
                "the event loop is not running: its tasks are read on its own thread, "
                "while it runs"
            )
        return {"error": error, "blocked": running, "running": running, "stats": self._stats()}


def _take_snapshot(
    loop: Any, kind: str, reply_loop: Any, future: asyncio.Future[Any]
) -> None:
    """Runs on the watched loop's thread: the only code of the monitor that does."""
    try:
        if kind == "tree":
            result: tuple[bool, Any] = (True, task_tree(loop))
        else:
            result = (True, sorted(task.get_name() for task in asyncio.all_tasks(loop)))
    except Exception as exc:  # noqa: BLE001 - for the client, never for the watched loop
        result = (False, f"taking the snapshot failed: {exc!r}")
    try:
        reply_loop.call_soon_threadsafe(future.set_result, result)
    except RuntimeError:  # the monitor stopped meanwhile: nobody waits for it
        pass


def _parse_request(line: bytes) -> tuple[str, str | None]:
    """``(command, None)``, or ``("", error)`` for a request that is not valid."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        return "", 'a request is one line of JSON, e.g. {"cmd": "ps"}'
    command = request.get("cmd") if isinstance(request, dict) else None
    if command not in COMMANDS:
        return "", 'unknown request: "cmd" is one of ' + ", ".join(map(repr, COMMANDS))
    return command, None


def _encode(answer: Any) -> bytes:
    return json.dumps(answer, separators=(",", ":"), default=_jsonable).encode() + b"\n"


def _jsonable(obj: Any) -> Any:
    """What ``json`` cannot encode itself: the frozen dataclasses of ``task_tree`` as their
    fields (what ``dataclasses.asdict`` gives, five times faster), anything else as text."""
    if dataclasses.is_dataclass(obj):
        return vars(obj)
    return str(obj)


def _hang_up(writer: asyncio.StreamWriter, error: str | None) -> None:
    """Close a connection, after an error line if ``error`` (``close`` flushes it)."""
    if error is not None:
        writer.write(_encode({"error": error}))
    writer.close()


# -- the socket file ----------------------------------------------------------------------


def _listen_owner_only(path: str) -> tuple[socket.socket, int]:
    """A socket listening at ``path``, made mode 0600 before it listens, and the inode
    of its file."""
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        inode = os.stat(path).st_ino
        try:
            os.chmod(path, 0o600)
            sock.listen(BACKLOG)
        except BaseException:
            _remove_socket_file(path, inode)
            raise
    except BaseException:
        sock.close()
        raise
    return sock, inode


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse anything else at ``path``."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(ANSWER_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: left by a process that is gone
        return
    except socket.timeout:  # a full backlog: someone listens
        pass
    finally:
        probe.close()
    raise FileExistsError(errno.EADDRINUSE, "a process is listening on this socket", path)


def _remove_socket_file(path: str, inode: int) -> None:
    """Remove ``path`` if it is still the file this monitor bound."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


@atexit.register
def _stop_running_monitors() -> None:
    for monitor in list(_running):
        monitor.stop()


# -- client -------------------------------------------------------------------------------


class MonitorClient:
    """A blocking client of a monitor socket (what ``python -m ferroloop ps/top`` use).

    ``MonitorClient(path).request("ps")`` returns the answer as a dict; an error answer
    is returned too (it has an ``"error"`` key). ``OSError`` when the socket cannot be
    reached or the monitor closes the connection before answering.
    """

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except BaseException:
            self._sock.close()
            raise
        self._buffer = bytearray()

    def request(self, command: str) -> dict[str, Any]:
        try:
            self._sock.sendall(_encode({"cmd": command}))
        except BrokenPipeError:
            pass  # the monitor refused this connection: it wrote why before closing
        end = self._buffer.find(b"\n")
        while end < 0:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the monitor closed the connection without answering")
            end = chunk.find(b"\n")
            if end >= 0:
                end += len(self._buffer)
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(line)

    def close(self) -> None:
        self._sock.close()
