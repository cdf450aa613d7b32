"""Pipe transports, writing side: ``connect_write_pipe``.

Every test runs on stock asyncio and on ferroloop; ``compare`` where asyncio's exact
answer is the reference. Covered: flow control with a slow reader
(``pause_writing``/``resume_writing``, ``get_write_buffer_size``, the limits), the
write end closing when the read end closes (``BrokenPipeError`` when data was
buffered), ``write_eof``/``close``/``abort``, writes after close and asyncio's warning
after the fifth, written bytearrays copied, a pty slave whose master closed, no fd leak
(both sides). Reading: ``test_pipes.py``.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from looptest_net import TIMEOUT, run, spin, until
from looptest_procs import (
    EIO,
    MB,
    PIPE_KINDS,
    asyncio_log_records,
    blob,
    close_quietly,
    connect_read,
    connect_write,
    expected_fill,
    fd_list,
    fill_pipe,
    is_closed,
    make_pipe,
    on_loop,
    raw_read,
    read_all,
)


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_flow_control_with_a_slow_reader(loop, tmp_path, kind):
    data = blob(2 * MB)

    async def main():
        reader, writer = make_pipe(kind, tmp_path)
        os.set_blocking(reader.fileno(), False)
        tr, pr = await connect_write(loop, writer)
        res = {"default limits": tr.get_write_buffer_limits()}
        tr.set_write_buffer_limits(high=100_000)
        res["limits"] = tr.get_write_buffer_limits()
        tr.write(data)  # the kernel takes what fits, the rest is buffered
        res["buffered"] = tr.get_write_buffer_size()
        res["events after write"] = list(pr.events)
        got = await read_all(reader, limit=len(data), pace=0.0005)
        await until(lambda: tr.get_write_buffer_size() == 0)
        res["received"] = got == data
        tr.close()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        res["events"] = pr.events
        close_quietly(reader)
        return res

    res = run(loop, main(), 60)
    assert res["default limits"] == (16 * 1024, 64 * 1024)
    assert res["limits"] == (25_000, 100_000)
    buffered = res["buffered"]
    assert 100_000 < buffered < len(data)
    assert res["events after write"] == ["made", ("pause", buffered)]
    assert res["received"]
    events = res["events"]
    assert events[:2] == ["made", ("pause", buffered)]
    assert [e[0] for e in events[2:]] == ["resume", "lost"]
    assert events[2][1] <= 25_000  # resumed at or below the low-water mark
    assert events[3] == ("lost", None)


def test_resume_writing_when_the_buffer_is_empty_as_asyncio(compare):
    # asyncio's write pipe calls resume_writing() only once its buffer is empty (its
    # _write_ready resumes only after a complete write), not as soon as it drops to the
    # low-water mark as its socket transports do.
    async def main(loop):
        r, w = os.pipe()
        os.set_blocking(r, False)
        tr, pr = await connect_write(loop, os.fdopen(w, "wb", buffering=0))
        for _ in range(10):
            tr.write(b"x" * 50_000)
        while tr.get_write_buffer_size():
            await asyncio.sleep(0.005)
            try:
                os.read(r, 4096)  # small reads: the buffer shrinks step by step
            except BlockingIOError:
                pass
        tr.close()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        os.close(r)
        return pr.events

    events = compare(on_loop(main))
    assert [e if e == "made" else e[0] for e in events] == ["made", "pause", "resume", "lost"]
    assert events[2:] == [("resume", 0), ("lost", None)]


@pytest.mark.parametrize("kind", [k for k in PIPE_KINDS if k != "pty"])
def test_write_end_closes_when_the_read_end_closes(compare, tmp_path, kind):
    # (A tty is not watched for its other side closing, in asyncio either: a pty's
    # writer learns it at its next write, see test_pty_write_after_the_master_closed.)
    async def main(loop):
        reader, writer = make_pipe(kind, tmp_path)
        tr, pr = await connect_write(loop, writer)
        res = [tr.get_extra_info("pipe") is writer, tr.get_extra_info("nope", 7)]
        tr.write(b"read, then the reader goes away")
        await spin(0.02)
        res.append(raw_read(reader, 100))
        reader.close()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        res += [pr.events, tr.is_closing(), is_closed(writer)]
        # Data still buffered: the transport closes with BrokenPipeError.
        reader, writer = make_pipe(kind, tmp_path)
        tr, pr = await connect_write(loop, writer)
        fill_pipe(tr)
        res.append(tr.get_write_buffer_size() > 0)
        reader.close()
        await asyncio.wait_for(pr.lost, TIMEOUT)
        await spin(0.02)
        res += [pr.events[-1], tr.get_write_buffer_size(), tr.is_closing(), is_closed(writer)]
        return res

    assert compare(on_loop(main)) == [
        True, 7, b"read, then the reader goes away", ["made", ("lost", None)], True, True,
        True, ("lost", ("BrokenPipeError", None)), 0, True, True,
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
def test_write_eof_close_and_abort(compare, tmp_path, kind):
    async def main(loop):
        res = []
        for how in ("write_eof", "close"):
            reader, writer = make_pipe(kind, tmp_path)
            os.set_blocking(reader.fileno(), False)
            tr, pr = await connect_write(loop, writer)
            sent = fill_pipe(tr)
            res.append(tr.can_write_eof())
            getattr(tr, how)()
            getattr(tr, how)()  # twice: no-op
            res += [tr.is_closing(), list(pr.events)]  # connection_lost waits for the flush
            got = await read_all(reader)
            await asyncio.wait_for(pr.lost, TIMEOUT)
            res += [got == expected_fill(sent), pr.events, is_closed(writer)]
            reader.close()
        # abort: the buffered data is dropped, connection_lost(None) comes at once.
        reader, writer = make_pipe(kind, tmp_path)
        os.set_blocking(reader.fileno(), False)
        tr, pr = await connect_write(loop, writer)
        sent = fill_pipe(tr)
        buffered = tr.get_write_buffer_size()
        tr.abort()
        res += [tr.is_closing(), tr.get_write_buffer_size()]
        await asyncio.wait_for(pr.lost, TIMEOUT)
        got = await read_all(reader)
        res += [got == expected_fill(sent)[: sent - buffered], pr.events, is_closed(writer)]
        reader.close()
        return res

    once = [True, True, ["made"], True, ["made", ("lost", None)], True]
    assert compare(on_loop(main)) == once + once + [True, 0, True, ["made", ("lost", None)], True]


def test_writes_after_close_are_dropped_with_asyncio_warning(compare):
    async def main(loop):
        r, w = os.pipe()
        tr, pr = await connect_write(loop, os.fdopen(w, "wb", buffering=0))
        with asyncio_log_records() as records:
            tr.write(b"before")
            tr.close()
            written = [tr.write(b"after close %d" % i) for i in range(8)]
            await asyncio.wait_for(pr.lost, TIMEOUT)
            written += [tr.write(b"after lost"), tr.writelines([b"a", b"b"]), tr.write(b"")]
        got = os.read(r, 100)
        os.close(r)
        warnings = [msg for level, msg in records if level == "WARNING"]
        return written, got, pr.events, warnings

    written, got, events, warnings = compare(on_loop(main))
    assert written == [None] * 11
    assert got == b"before"
    assert events == ["made", ("lost", None)]
    assert warnings == ["pipe closed by peer or os.write(pipe, data) raised exception."] * 5


def test_writes_after_the_reader_left(compare):
    async def main(loop):
        r, w = os.pipe()
        tr, pr = await connect_write(loop, os.fdopen(w, "wb", buffering=0))
        os.close(r)
        with asyncio_log_records() as records:
            await asyncio.wait_for(pr.lost, TIMEOUT)
            written = [tr.write(b"x") for _ in range(7)]
        warnings = [msg for level, msg in records if level == "WARNING"]
        return written, pr.events, warnings

    assert compare(on_loop(main)) == (
        [None] * 7, ["made", ("lost", None)],
        ["pipe closed by peer or os.write(pipe, data) raised exception."] * 2,
    )  # fmt: skip


def test_written_bytearray_is_copied(compare, tmp_path):
    async def main(loop):
        reader, writer = make_pipe("pipe", tmp_path)
        os.set_blocking(reader.fileno(), False)
        tr, pr = await connect_write(loop, writer)
        sent = fill_pipe(tr)
        data = bytearray(b"original")
        tr.write(data)
        tr.writelines([bytearray(b"-1"), memoryview(b"-2")])
        data[:] = b"CHANGED!"
        tr.write_eof()
        got = await read_all(reader)
        await asyncio.wait_for(pr.lost, TIMEOUT)
        reader.close()
        return got[sent:]

    assert compare(on_loop(main)) == b"original-1-2"


# ------------------------------------------------------------------ ptys


def test_pty_write_after_the_master_closed(compare):
    # Writing to a pty slave whose master is closed fails with EIO: asyncio closes the
    # transport with that error and does not call the exception handler.
    async def main(loop):
        master, slave = os.openpty()
        tr, pr = await connect_write(loop, os.fdopen(slave, "wb", buffering=0))
        tr.write(b"seen")
        res = [os.read(master, 100)]
        os.close(master)
        tr.write(b"nobody reads this")
        await asyncio.wait_for(pr.lost, TIMEOUT)
        return res + [pr.events, tr.is_closing()]

    # (the slave is not in raw mode here: the tty turns nothing in b"seen" into more)
    assert compare(on_loop(main)) == [b"seen", ["made", ("lost", EIO)], True]


# ------------------------------------------------------------------ resources


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_no_fd_leak(loop, tmp_path, kind):
    async def cycle():
        # Both ends as transports, data, end of file.
        reader, writer = make_pipe(kind, tmp_path)
        rtr, rpr = await connect_read(loop, reader)
        wtr, wpr = await connect_write(loop, writer)
        wtr.write(b"data")
        await until(lambda: rpr.data == b"data")
        wtr.close()
        await asyncio.wait_for(rpr.lost, TIMEOUT)
        await asyncio.wait_for(wpr.lost, TIMEOUT)
        # Closed from the reading side, and aborted with data buffered.
        reader, writer = make_pipe(kind, tmp_path)
        rtr, rpr = await connect_read(loop, reader)
        wtr, wpr = await connect_write(loop, writer)
        rtr.pause_reading()
        fill_pipe(wtr)
        wtr.abort()
        await asyncio.wait_for(wpr.lost, TIMEOUT)
        rtr.close()
        await asyncio.wait_for(rpr.lost, TIMEOUT)

    async def main():
        await cycle()  # anything created once per process is created now
        before = fd_list()
        for _ in range(20):
            await cycle()
        await spin(0.02)
        return before, fd_list()

    before, after = run(loop, main(), 60)
    assert after == before
