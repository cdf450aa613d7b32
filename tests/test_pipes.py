"""Pipe transports, reading side: ``connect_read_pipe``.

Every test runs on stock asyncio and on ferroloop; where asyncio's exact answer is the
reference the test uses ``compare``. The kinds of pipe (``PIPE_KINDS``): ``os.pipe``, a
FIFO made with ``os.mkfifo``, a ``socket.socketpair`` and a pty from ``os.openpty`` in
raw mode (the loop reads the master, the slave is the writing side).

Covered: data in order, callback order at end of file (``eof_received`` then
``connection_lost(None)``; a pty reports ``EIO`` instead, which asyncio passes to
``connection_lost`` and never to the exception handler), 20 MB between two pipe
transports checked by hash, pausing reads, extra info, files that are not pipes (and a
character device epoll refuses), a failing ``data_received``, ``set_protocol``,
``close()`` with unread data, the warning of an unclosed transport. Writing, flow
control and fds: ``test_pipes_write.py``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import warnings

import pytest
from looptest_net import TIMEOUT, run, spin, until
from looptest_procs import (
    EIO,
    MB,
    PIPE_KINDS,
    PipeProto,
    blob,
    connect_read,
    connect_write,
    is_closed,
    is_reading,
    make_pipe,
    on_loop,
    raw_write,
)
from looptest_support import PY

# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_data_in_order_then_end_of_file(compare, tmp_path, kind):
    async def main(loop):
        reader, writer = make_pipe(kind, tmp_path)
        # eof_received's answer (True: "keep open") is ignored for pipes.
        tr, pr = await connect_read(loop, reader, eof_answer=True)
        res = [tr.get_extra_info("pipe") is reader, tr.get_extra_info("nope", 7)]
        res += [is_reading(tr), tr.is_closing(), list(pr.events)]
        sent = bytearray()
        for i in range(300):
            chunk = b"%d," % i * (i % 7 + 1)
            raw_write(writer, chunk)
            sent += chunk
            if i % 10 == 0:
                await asyncio.sleep(0)
        await until(lambda: len(pr.data) >= len(sent))
        res.append(bytes(pr.data) == bytes(sent))
        writer.close()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        await spin(0.02)
        res += [pr.events, tr.is_closing(), is_reading(tr), is_closed(reader)]
        tr.close()  # closing again: nothing happens
        await spin(0.01)
        return res + [pr.events[-1]]

    end = [("lost", EIO)] if kind == "pty" else ["eof", ("lost", None)]
    assert compare(on_loop(main)) == [
        True, 7, True, False, ["made"], True, ["made", "data"] + end, True, False, True,
        end[-1],
    ]  # fmt: skip


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_20mb_between_two_pipe_transports(loop, tmp_path, kind):
    size = 20 * MB
    data = blob(size)

    async def main():
        reader, writer = make_pipe(kind, tmp_path)
        _, rpr = await connect_read(loop, reader)
        wtr, wpr = await connect_write(loop, writer)
        digest = hashlib.sha256()
        received = [0]

        def data_received(chunk):
            digest.update(chunk)
            received[0] += len(chunk)

        rpr.data_received = data_received
        view = memoryview(data)
        for offset in range(0, size, 256 * 1024):
            await wpr.can_write
            wtr.write(view[offset:offset + 256 * 1024])
        wtr.write_eof()
        await asyncio.wait_for(wpr.lost, 60)
        await asyncio.wait_for(rpr.lost, 60)
        return received[0], digest.hexdigest(), wpr.lost_exc, rpr.events, wpr.events

    got, hexdigest, write_exc, read_events, write_events = run(loop, main(), 120)
    assert got == size
    assert hexdigest == hashlib.sha256(data).hexdigest()
    assert write_exc is None
    assert read_events[-1] == (("lost", EIO) if kind == "pty" else ("lost", None))
    pauses = [e for e in write_events if e[0] == "pause"]
    resumes = [e for e in write_events if e[0] == "resume"]
    assert len(pauses) == len(resumes)  # every pause was followed by its resume
    assert write_events[-1] == ("lost", None)


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_pause_and_resume_reading(compare, tmp_path, kind):
    async def main(loop):
        reader, writer = make_pipe(kind, tmp_path)
        tr, pr = await connect_read(loop, reader)
        tr.pause_reading()
        tr.pause_reading()  # twice: no-op
        res = [is_reading(tr)]
        raw_write(writer, b"while paused")
        await spin(0.05)
        res.append(bytes(pr.data))
        tr.resume_reading()
        tr.resume_reading()
        await until(lambda: pr.data == b"while paused")
        res.append(is_reading(tr))
        # End of file while paused is seen only after resume_reading().
        tr.pause_reading()
        raw_write(writer, b"last")
        writer.close()
        await spin(0.05)
        res += [bytes(pr.data), list(pr.events)]
        tr.resume_reading()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        res += [bytes(pr.data), pr.events]
        tr.pause_reading()  # after the end: no-ops
        tr.resume_reading()
        return res + [is_reading(tr)]

    end = [("lost", EIO)] if kind == "pty" else ["eof", ("lost", None)]
    assert compare(on_loop(main)) == [
        False, b"", True, b"while paused", ["made", "data"],
        b"while pausedlast", ["made", "data"] + end, False,
    ]  # fmt: skip


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_pause_reading_in_connection_made(loop, loop_impl, tmp_path, kind):
    # Paused in connection_made: nothing is read until resume_reading().
    if loop_impl == "asyncio" and PY < (3, 11):
        pytest.skip(
            "asyncio 3.9/3.10 undoes a pause_reading() made in connection_made: its pipe "
            "transport starts reading from a callback scheduled after connection_made "
            "(fixed in 3.11, which also added is_reading() to pipe transports)"
        )

    class PausedFromTheStart(PipeProto):
        def connection_made(self, transport):
            transport.pause_reading()  # before the loop starts watching the pipe
            self.events.append("made-paused")
            self.transport = transport

    async def main():
        reader, writer = make_pipe(kind, tmp_path)
        raw_write(writer, b"early")
        tr, proto = await loop.connect_read_pipe(lambda: PausedFromTheStart(loop), reader)
        await spin(0.05)
        res = [tr.is_reading(), bytes(proto.data)]
        tr.resume_reading()
        await until(lambda: proto.data == b"early")
        res.append(tr.is_reading())
        writer.close()
        await asyncio.wait_for(proto.lost, TIMEOUT)
        return res + [proto.events, tr.is_reading()]

    end = [("lost", EIO)] if kind == "pty" else ["eof", ("lost", None)]
    assert run(loop, main()) == [False, b"", True, ["made-paused", "data"] + end, False]


def test_char_device_epoll_cannot_watch(compare):
    # /dev/null is a character device, so it is accepted; epoll refuses to watch it
    # (EPERM): the error goes to the exception handler and the transport stays open.
    async def main(loop):
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(type(ctx.get("exception"))))
        with open(os.devnull, "rb", buffering=0) as devnull:
            tr, pr = await connect_read(loop, devnull)
            await spin(0.05)
            res = [errors, tr.is_closing(), list(pr.events)]
            tr.close()
            await asyncio.wait_for(pr.lost, TIMEOUT)
            return res + [pr.events, devnull.closed]

    assert compare(on_loop(main)) == [
        [PermissionError], False, ["made"], ["made", ("lost", None)], True
    ]


class RawFd:
    """A pipe-like object around an fd that ``open()`` refuses (a directory)."""

    def __init__(self, fd):
        self.fd = fd
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def test_files_that_are_not_pipes_are_refused(compare, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"a regular file")

    async def main(loop):
        res = []
        for connect, target in (
            (connect_read, lambda: open(path, "rb", buffering=0)),
            (connect_read, lambda: RawFd(os.open(tmp_path, os.O_RDONLY))),
            (connect_write, lambda: open(path, "wb", buffering=0)),
        ):
            f = target()
            try:
                await connect(loop, f)
                res.append("accepted")
            except ValueError as exc:
                res.append(str(exc))
            # Left as it was: open, blocking.
            res += [f.closed, os.get_blocking(f.fileno())]
            f.close()
        return res

    assert compare(on_loop(main)) == [
        "Pipe transport is for pipes/sockets only.", False, True,
        "Pipe transport is for pipes/sockets only.", False, True,
        "Pipe transport is only for pipes, sockets and character devices", False, True,
    ]  # fmt: skip


# ------------------------------------------------------------------ ptys


def test_pty_slave_closing_is_not_an_error(loop, tmp_path):
    # The loop fixture fails the test if the exception handler is called.
    async def main():
        master, slave = make_pipe("pty", tmp_path)
        _, pr = await connect_read(loop, master)
        raw_write(slave, b"bye")
        await until(lambda: pr.data == b"bye")
        slave.close()
        exc = await asyncio.wait_for(pr.lost, TIMEOUT)
        return exc, pr.events, master.closed

    exc, events, master_closed = run(loop, main())
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert events == ["made", "data", ("lost", EIO)]
    assert master_closed


# ------------------------------------------------------------------ protocol


def test_data_received_raising_goes_to_the_exception_handler(compare):
    async def main(loop):
        errors = []
        loop.set_exception_handler(
            lambda lp, ctx: errors.append((type(ctx.get("exception")), ctx["message"][:12]))
        )
        r, w = os.pipe()
        tr, pr = await connect_read(loop, os.fdopen(r, "rb", buffering=0))
        received = []

        def data_received(data):
            received.append(data)
            if len(received) == 1:
                raise RuntimeError("data_received failed")

        pr.data_received = data_received
        os.write(w, b"one")
        await until(lambda: errors)
        res = [tr.is_closing(), is_reading(tr)]
        os.write(w, b"two")  # the transport goes on reading
        await until(lambda: len(received) == 2)
        os.close(w)
        await asyncio.wait_for(pr.lost, TIMEOUT)
        return res + [received, pr.events, errors]

    assert compare(on_loop(main)) == [
        False, True, [b"one", b"two"], ["made", "eof", ("lost", None)],
        [(RuntimeError, "Exception in")],
    ]  # fmt: skip


def test_set_protocol_and_close_with_data_pending(compare):
    async def main(loop):
        r, w = os.pipe()
        tr, pr = await connect_read(loop, os.fdopen(r, "rb", buffering=0))
        os.write(w, b"first")
        await until(lambda: pr.data)
        second = PipeProto(loop)
        tr.set_protocol(second)
        res = [tr.get_protocol() is second]
        os.write(w, b"second")
        await until(lambda: second.data)
        # close() with unread data: connection_lost(None), no eof_received, nothing read.
        os.write(w, b"never read")
        tr.close()
        res += [tr.is_closing(), is_reading(tr)]
        await asyncio.wait_for(second.lost, TIMEOUT)
        os.close(w)
        return res + [bytes(pr.data), pr.events, bytes(second.data), second.events]

    assert compare(on_loop(main)) == [
        True, True, False, b"first", ["made", "data"], b"second", ["data", ("lost", None)],
    ]  # fmt: skip


def test_unclosed_transport_warns_and_closes_its_pipe(compare):
    def scenario(loop):
        async def main():
            r, w = os.pipe()
            pipe = os.fdopen(r, "rb", buffering=0)
            await connect_read(loop, pipe)
            return pipe, w

        pipe, w = run(loop, main())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.close()  # the loop lets go of the transport, nobody else holds it
            gc.collect()
        os.close(w)
        messages = [str(c.message) for c in caught if c.category is ResourceWarning]
        return pipe.closed, [m[: len("unclosed transport <")] for m in messages]

    assert compare(scenario) == (True, ["unclosed transport <"])
