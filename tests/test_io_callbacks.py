"""add_reader / add_writer / remove_reader / remove_writer."""

import errno
import os
import socket
import tempfile

import pytest

from looptest_support import normalize_text, outcome, stop_after


def describe(res):
    """outcome() result with objects replaced by comparable descriptions."""
    if res[0] == "ok":
        value = res[1]
        return ("ok", None if value is None else type(value).__name__) + res[2:]
    return res[:1] + (res[1], normalize_text(res[2])) + res[3:]


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def make_sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


# ------------------------------------------------------------ return values


def test_add_remove_return_values(compare):
    def scenario(loop):
        a, b = make_sockpair()
        try:
            res = [
                ("remove_reader-unregistered", outcome(loop.remove_reader, a)),
                ("remove_writer-unregistered", outcome(loop.remove_writer, a)),
                ("add_reader", describe(outcome(loop.add_reader, a, print))),
                ("add_writer", describe(outcome(loop.add_writer, a, print))),
                ("remove_reader", outcome(loop.remove_reader, a)),
                ("remove_reader-again", outcome(loop.remove_reader, a)),
                ("remove_writer", outcome(loop.remove_writer, a.fileno())),
                ("remove_writer-again", outcome(loop.remove_writer, a.fileno())),
            ]
            return res
        finally:
            a.close()
            b.close()

    res = dict(compare(scenario))
    assert res["remove_reader-unregistered"] == ("ok", False)
    assert res["remove_reader"] == ("ok", True)
    assert res["remove_reader-again"] == ("ok", False)
    assert res["remove_writer"] == ("ok", True)
    assert res["remove_writer-again"] == ("ok", False)


def test_remove_on_closed_loop_returns_false(compare):
    def scenario(loop):
        a, b = make_sockpair()
        try:
            loop.add_reader(a, print)
            loop.add_writer(a, print)
            loop.close()
            return (
                outcome(loop.remove_reader, a),
                outcome(loop.remove_writer, a),
                describe(outcome(loop.add_reader, a, print)),
                describe(outcome(loop.add_writer, a, print)),
            )
        finally:
            a.close()
            b.close()

    assert compare(scenario) == (
        ("ok", False),
        ("ok", False),
        ("raise", RuntimeError, "Event loop is closed"),
        ("raise", RuntimeError, "Event loop is closed"),
    )


def test_invalid_file_descriptors(compare):
    def scenario(loop):
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        closed_sock = socket.socket()
        closed_sock.close()
        res = {}
        for name, fd in [
            ("closed-fd", r),
            ("negative", -1),
            ("closed-socket", closed_sock),
            ("no-fileno", object()),
            ("str", "3"),
            ("float", 1.5),
        ]:
            res[name] = (
                describe(outcome(loop.add_reader, fd, print)),
                describe(outcome(loop.add_writer, fd, print)),
            )
        res["remove-negative"] = describe(outcome(loop.remove_reader, -1))
        res["remove-closed-fd"] = describe(outcome(loop.remove_reader, r))
        return res

    res = compare(scenario)
    assert res["closed-fd"][0][:2] == ("raise", OSError)
    assert res["negative"][0] == ("raise", ValueError, "Invalid file descriptor: -1")
    assert res["no-fileno"][0][:2] == ("raise", ValueError)


def test_closed_fd_error_errno(compare):
    def scenario(loop):
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        try:
            loop.add_reader(r, print)
        except OSError as exc:
            return type(exc), exc.errno
        return None

    assert compare(scenario) == (OSError, errno.EBADF)


def test_regular_file_fd(compare):
    def scenario(loop):
        with tempfile.TemporaryFile() as f:
            res = (
                describe(outcome(loop.add_reader, f.fileno(), print)),
                describe(outcome(loop.add_writer, f.fileno(), print)),
            )
            removed = (outcome(loop.remove_reader, f.fileno()), outcome(loop.remove_writer, f.fileno()))
            return res, removed

    res, removed = compare(scenario)
    # epoll refuses regular files with EPERM; nothing stays registered.
    eperm = ("raise", PermissionError, f"[Errno {errno.EPERM}] {os.strerror(errno.EPERM)}")
    assert res == (eperm, eperm)
    assert removed == (("ok", False), ("ok", False))


@pytest.mark.parametrize("fd", [2**31, 2**32, 2**63, 2**64], ids=["2**31", "2**32", "2**63", "2**64"])
def test_fd_beyond_c_int_range(compare, fd):
    # An int too large for a C int can never be registered: removing it answers
    # False like for any unwatched fd; adding it fails like asyncio's selector.
    def scenario(loop):
        return (
            outcome(loop.remove_reader, fd),
            outcome(loop.remove_writer, fd),
            outcome(loop.add_reader, fd, print)[:2],
            outcome(loop.add_writer, fd, print)[:2],
            outcome(loop.remove_reader, fd),
        )

    assert compare(scenario) == (
        ("ok", False),
        ("ok", False),
        ("raise", OverflowError),
        ("raise", OverflowError),
        ("ok", False),
    )


# ----------------------------------------------------------------- readers


def test_reader_called_when_data_arrives(compare):
    def scenario(loop):
        a, b = make_sockpair()
        got = []

        def on_readable(sock, tag):
            data = sock.recv(100)
            got.append((tag, data))
            if data == b"hello":
                # Only now send the second message: each read sees exactly one.
                loop.call_soon(b.send, b"stop")
            elif data == b"stop":
                loop.remove_reader(sock)
                loop.stop()

        try:
            loop.add_reader(a, on_readable, a, "tag")
            loop.call_later(0.005, b.send, b"hello")  # arrives while the loop polls
            stop_after(loop, 5)
            loop.run_forever()
            return got
        finally:
            a.close()
            b.close()

    assert compare(scenario) == [("tag", b"hello"), ("tag", b"stop")]


def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_readable():
        calls.append(loop.time())  # deliberately does NOT read
        if len(calls) == 5:
            loop.remove_reader(a)
            loop.stop()

    b.send(b"x")
    loop.add_reader(a, on_readable)
    stop_after(loop, 5)
    loop.run_forever()
    assert len(calls) == 5
    assert calls[-1] - calls[0] < 1.0  # called on consecutive iterations
    assert a.recv(10) == b"x"


def test_reader_not_called_without_data(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a, calls.append, "called")
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == []
    assert loop.remove_reader(a) is True


def test_replacing_reader(compare):
    def scenario(loop):
        a, b = make_sockpair()
        got = []

        def first():
            got.append("first")

        def second():
            got.append(("second", a.recv(10)))
            loop.stop()

        try:
            loop.add_reader(a, first)
            loop.add_reader(a, second)
            b.send(b"data")
            stop_after(loop, 5)
            loop.run_forever()
            return got, loop.remove_reader(a), loop.remove_reader(a)
        finally:
            a.close()
            b.close()

    assert compare(scenario) == ([("second", b"data")], True, False)


def test_remove_reader_inside_callback_stops_calls(compare):
    def scenario(loop):
        a, b = make_sockpair()
        calls = []

        def cb():
            calls.append("cb")
            loop.remove_reader(a)  # data stays unread

        try:
            b.send(b"unread")
            loop.add_reader(a, cb)
            loop.call_later(0.03, loop.stop)
            loop.run_forever()
            return calls
        finally:
            a.close()
            b.close()

    assert compare(scenario) == ["cb"]


def test_reader_on_pipe_and_eof(compare):
    def scenario(loop):
        r, w = os.pipe()
        os.set_blocking(r, False)
        got = []

        def on_readable():
            data = os.read(r, 100)
            got.append(data)
            if not data:  # EOF
                loop.remove_reader(r)
                loop.stop()

        try:
            loop.add_reader(r, on_readable)
            loop.call_later(0.005, os.write, w, b"abc")
            loop.call_later(0.02, os.close, w)
            stop_after(loop, 5)
            loop.run_forever()
            return got
        finally:
            os.close(r)

    assert compare(scenario) == [b"abc", b""]


def test_reader_on_peer_close(compare):
    def scenario(loop):
        a, b = make_sockpair()
        got = []

        def on_readable():
            got.append(a.recv(10))
            loop.remove_reader(a)
            loop.stop()

        try:
            loop.add_reader(a, on_readable)
            loop.call_later(0.005, b.close)
            stop_after(loop, 5)
            loop.run_forever()
            return got
        finally:
            a.close()

    assert compare(scenario) == [b""]


def test_exception_in_reader_goes_to_handler(compare):
    def scenario(loop):
        a, b = make_sockpair()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        def bad_reader():
            a.recv(10)
            loop.call_soon(loop.stop)
            raise ValueError("reader failed")

        try:
            loop.add_reader(a, bad_reader)
            b.send(b"x")
            stop_after(loop, 5)
            loop.run_forever()
            loop.remove_reader(a)
            return [
                (sorted(c), normalize_text(c["message"]), repr(c["exception"]),
                 normalize_text(repr(c["handle"])))
                for c in contexts
            ]
        finally:
            a.close()
            b.close()

    res = compare(scenario)
    assert len(res) == 1
    keys, message, exc, handle = res[0]
    assert keys == ["exception", "handle", "message"]
    assert message.startswith("Exception in callback ") and "bad_reader()" in message
    assert exc == "ValueError('reader failed')"
    assert handle.startswith("<Handle ")


# ----------------------------------------------------------------- writers


def test_writer_called_when_writable(compare):
    def scenario(loop):
        a, b = make_sockpair()
        got = []

        def on_writable(tag):
            got.append(tag)
            a.send(b"payload")
            loop.remove_writer(a)
            loop.call_soon(loop.stop)

        try:
            loop.add_writer(a, on_writable, "w")
            stop_after(loop, 5)
            loop.run_forever()
            return got, b.recv(100)
        finally:
            a.close()
            b.close()

    assert compare(scenario) == (["w"], b"payload")


def test_writer_on_pipe(compare):
    def scenario(loop):
        r, w = os.pipe()
        calls = []

        def on_writable():
            calls.append(os.write(w, b"xyz"))
            loop.remove_writer(w)
            loop.stop()

        try:
            loop.add_writer(w, on_writable)
            stop_after(loop, 5)
            loop.run_forever()
            return calls, os.read(r, 10)
        finally:
            os.close(r)
            os.close(w)

    assert compare(scenario) == ([3], b"xyz")


def test_writer_waits_for_buffer_space(loop, sockpair):
    a, b = sockpair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    try:
        while True:
            sent += a.send(b"\0" * 65536)
    except BlockingIOError:
        pass
    assert sent > 0
    calls = []
    loop.add_writer(a, lambda: calls.append(loop.time()))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == [], "writer called although the send buffer is full"

    def drain():
        try:
            while b.recv(1 << 20):
                pass
        except BlockingIOError:
            pass

    def check():
        if calls:
            loop.stop()
        else:
            drain()
            loop.call_later(0.005, check)

    loop.call_soon(check)
    stop_after(loop, 5)
    loop.run_forever()
    assert calls, "writer never called after the buffer drained"
    assert loop.remove_writer(a) is True


def test_reader_and_writer_on_same_fd(compare):
    def scenario(loop):
        a, b = make_sockpair()
        events = []

        def on_writable():
            events.append("writable")
            loop.remove_writer(a)
            b.send(b"ping")

        def on_readable():
            events.append(("readable", a.recv(10)))
            loop.remove_reader(a)
            loop.stop()

        try:
            loop.add_reader(a, on_readable)
            loop.add_writer(a, on_writable)
            stop_after(loop, 5)
            loop.run_forever()
            return events
        finally:
            a.close()
            b.close()

    assert compare(scenario) == ["writable", ("readable", b"ping")]


def test_remove_writer_keeps_reader(compare):
    def scenario(loop):
        a, b = make_sockpair()
        events = []

        def on_readable():
            events.append(a.recv(10))
            loop.stop()

        try:
            loop.add_reader(a, on_readable)
            loop.add_writer(a, events.append, "writer")
            removed = loop.remove_writer(a)
            b.send(b"r")
            stop_after(loop, 5)
            loop.run_forever()
            return removed, events, loop.remove_reader(a)
        finally:
            a.close()
            b.close()

    assert compare(scenario) == (True, [b"r"], True)


def test_many_sockets(loop):
    pairs = [make_sockpair() for _ in range(50)]
    got = {}
    try:
        for i, (a, b) in enumerate(pairs):

            def cb(i=i, a=a):
                got[i] = a.recv(10)
                loop.remove_reader(a)
                if len(got) == len(pairs):
                    loop.stop()

            loop.add_reader(a, cb)
        for i, (a, b) in enumerate(pairs):
            b.send(str(i).encode())
        stop_after(loop, 5)
        loop.run_forever()
        assert got == {i: str(i).encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
