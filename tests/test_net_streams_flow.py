"""Stream transports (TCP and Unix): flow control.

Reading side: ``pause_reading()``/``resume_reading()``/``is_reading()`` (also paused from
``connection_made``, and their no-op cases). Writing side: the values
``set_write_buffer_limits()`` accepts or refuses and what ``get_write_buffer_limits()``
then says, and when ``pause_writing()``/``resume_writing()`` are called around the
high- and low-water marks.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``. The other
stream-transport files are ``test_net_streams_io.py`` (data in and out, half-close),
``test_net_streams_close.py`` and ``test_net_streams_errors.py``.
"""

from __future__ import annotations

import sys

import pytest

from looptest_dgram import on
from looptest_net import (  # noqa: F401 (kind is a fixture)
    MB,
    fill_kernel_buffers,
    kind,
    read_until_eof,
    recorded_pair,
    run,
    spin,
    until,
)
from looptest_support import outcome

HIGH, LOW = 64 * 1024, 16 * 1024


# ------------------------------------------------------- pause/resume reading


def test_pause_resume_reading(loop, kind, loop_impl):
    if loop_impl == "asyncio" and sys.version_info < (3, 10):
        pytest.skip(
            "asyncio 3.9 undoes a pause_reading() made in connection_made: its transport "
            "starts reading from a callback scheduled after connection_made (fixed in 3.10)"
        )

    async def main():
        async with recorded_pair(loop, kind, pause_in_made=True) as (_, b, tr, pr):
            states = [tr.is_reading()]
            b.send(b"abc")
            await spin()
            states.append(bytes(pr.data))
            tr.pause_reading()  # already paused: no-op
            tr.resume_reading()
            states.append(tr.is_reading())
            await until(lambda: pr.data == b"abc")
            tr.pause_reading()
            states.append(tr.is_reading())
            b.send(b"def")
            await spin()
            states.append(bytes(pr.data))
            tr.resume_reading()
            tr.resume_reading()  # already reading: no-op
            await until(lambda: pr.data == b"abcdef")
            tr.close()
            states.append(tr.is_reading())
            tr.resume_reading()  # closing: no-op
            states.append(tr.is_reading())
            tr.pause_reading()
            await pr.lost
            return states

    assert run(loop, main()) == [False, b"", True, False, b"abc", False, False]


# ------------------------------------------------------------ write buffer limits


def test_write_buffer_limits_values(compare):
    async def main(loop):
        async with recorded_pair(loop, "unix") as (_, _, tr, pr):
            res = [tr.get_write_buffer_limits()]
            for kwargs in (
                {"high": 100, "low": 10},
                {"low": 8},
                {"high": 40},
                {},
                {"high": 0, "low": 0},
                {"high": 10, "low": 20},
                {"low": -1},
                {"high": 5, "low": 6},
            ):
                res.append((kwargs, outcome(tr.set_write_buffer_limits, **kwargs)))
                res.append(tr.get_write_buffer_limits())
            tr.close()
            await pr.lost
            return res

    res = compare(on(main))
    assert res[0] == (LOW, HIGH)
    results = {str(res[i][0]): (res[i][1], res[i + 1]) for i in range(1, len(res), 2)}
    assert results[str({"high": 100, "low": 10})] == (("ok", None), (10, 100))
    assert results[str({"low": 8})] == (("ok", None), (8, 32))
    assert results[str({})] == (("ok", None), (LOW, HIGH))
    assert results[str({"high": 10, "low": 20})] == (
        ("raise", ValueError, "high (10) must be >= low (20) must be >= 0"),
        (0, 0),  # unchanged
    )


def test_write_buffer_limits_negative_high_message(compare):
    async def main(loop):
        async with recorded_pair(loop, "unix") as (_, _, tr, pr):
            res = outcome(tr.set_write_buffer_limits, high=-1)
            tr.close()
            await pr.lost
            return res

    assert compare(on(main)) == (
        "raise",
        ValueError,
        "high (-1) must be >= low (-1) must be >= 0",
    )


# ------------------------------------------------------ pause/resume writing


def test_pause_resume_writing_at_water_marks(loop, kind):
    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (_, b, tr, pr):
            tr.set_write_buffer_limits(high=HIGH, low=LOW)
            assert tr.get_write_buffer_limits() == (LOW, HIGH)
            written = 0
            while not pr.pauses:
                tr.write(b"w" * 16 * 1024)
                written += 16 * 1024
                assert written < 64 * MB
            for _ in range(8):  # already paused: no second pause_writing()
                tr.write(b"w" * 16 * 1024)
                written += 16 * 1024
            await spin()
            assert len(pr.pauses) == 1 and pr.resumes == []
            assert pr.pauses[0] > HIGH
            assert tr.get_write_buffer_size() > HIGH
            received = await read_until_eof(loop, b, limit=written)
            await until(lambda: tr.get_write_buffer_size() == 0)
            await spin(0.01)
            tr.close()
            await pr.lost
            return len(received) == written, pr.pauses, pr.resumes

    complete, pauses, resumes = run(loop, main())
    assert complete
    assert len(pauses) == 1
    assert len(resumes) == 1 and resumes[0] <= LOW


def test_pause_writing_threshold_is_strict(loop, kind):
    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (_, _, tr, pr):
            tr.set_write_buffer_limits(high=16 * MB)
            fill_kernel_buffers(tr)
            size = tr.get_write_buffer_size()
            tr.set_write_buffer_limits(high=size + 100, low=0)
            steps = [len(pr.pauses)]
            tr.write(b"x" * 100)  # exactly at the high-water mark: not above it
            steps.append((len(pr.pauses), tr.get_write_buffer_size() - size))
            tr.write(b"x")
            steps.append((len(pr.pauses), tr.get_write_buffer_size() - size))
            tr.set_write_buffer_limits(high=size * 4)  # does not resume by itself
            steps.append(len(pr.resumes))
            tr.abort()
            await pr.lost
            return steps

    assert run(loop, main()) == [0, (0, 100), (1, 101), 0]


def test_set_write_buffer_limits_pauses_immediately(loop, kind):
    async def main():
        async with recorded_pair(loop, kind, small_buffers=True) as (_, _, tr, pr):
            tr.set_write_buffer_limits(high=16 * MB)
            fill_kernel_buffers(tr)
            assert pr.pauses == []
            tr.set_write_buffer_limits(high=0)
            res = (len(pr.pauses), tr.get_write_buffer_limits())
            tr.abort()
            await pr.lost
            return res

    assert run(loop, main()) == (1, (0, 0))
