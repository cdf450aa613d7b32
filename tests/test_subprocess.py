"""Subprocesses: ``create_subprocess_exec``/``create_subprocess_shell`` and
``loop.subprocess_exec``/``subprocess_shell``, every argument asyncio accepts.

Every test runs on stock asyncio and on ferroloop; ``compare`` where asyncio's exact
answer is the reference. Covered here: stdin/stdout/stderr as ``PIPE``, ``DEVNULL``,
``STDOUT``, file objects and fds; ``cwd``, ``env``, ``umask``, ``pass_fds``/``close_fds``,
``start_new_session``, ``process_group``, ``preexec_fn``, ``user``/``group``/
``extra_groups``; ``communicate``, ``wait``, ``returncode``, ``pid``;
``send_signal``/``terminate``/``kill`` (also on a child that ignores SIGTERM and after
the child is gone); the subprocess protocol's callbacks and the transport's methods,
``close()`` killing a running child; a child killed while it writes; a grandchild
keeping the pipe open after the child exited; argument errors and their messages;
writing to a child that closed its stdin, pausing a child's stdout, a child closing
stdout long before it exits, cancelled waits. Many children, big transfers, threads,
fds and zombies: ``test_subprocess_life.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import shutil
import signal
import sys
from asyncio.subprocess import DEVNULL, PIPE, STDOUT

import pytest
from looptest_net import TIMEOUT, run, spin, until
from looptest_procs import child_status, is_reading
from looptest_support import PY, outcome

PYTHON = sys.executable


def on(main):
    """A ``compare`` scenario running the coroutine function ``main()``."""
    return lambda loop: run(loop, main())


def python(code, *args, **kwargs):
    return asyncio.create_subprocess_exec(PYTHON, "-c", code, *args, **kwargs)


# ------------------------------------------------------------------ stdio


def test_pipes_communicate_wait_returncode_pid(compare):
    code = (
        "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data.upper());"
        " sys.stderr.write('err:%d' % len(data)); sys.exit(3)"
    )

    async def main():
        proc = await python(code, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        res = [proc.returncode, type(proc.pid), proc.pid > 0]
        res += [type(s).__name__ for s in (proc.stdin, proc.stdout, proc.stderr)]
        out, err = await proc.communicate(b"hello")
        res += [out, err, proc.returncode, await proc.wait(), await proc.wait()]
        res.append(child_status(proc.pid))
        return res

    assert compare(on(main)) == [
        None, int, True, "StreamWriter", "StreamReader", "StreamReader",
        b"HELLO", b"err:5", 3, 3, 3, "reaped",
    ]  # fmt: skip


def test_devnull_stdout_to_pipe_and_stderr_to_stdout(compare):
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True);" \
           " print(repr(sys.stdin.read()))"

    async def main():
        res = []
        proc = await python(code, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
        res += [proc.stdin, proc.stderr, await proc.communicate(), proc.returncode]
        proc = await python(code, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        res += [proc.stdout, await proc.communicate(), proc.returncode]
        return res

    assert compare(on(main)) == [
        None, None, (b"out\nerr\n''\n", None), 0, None, (None, None), 0,
    ]  # fmt: skip


def test_file_objects_and_fds(compare, tmp_path):
    code = "import sys; d = sys.stdin.read(); print(d.upper()); print(len(d), file=sys.stderr)"

    async def main():
        res = []
        src = tmp_path / "in.txt"
        src.write_text("from a file")
        out, err = tmp_path / "out.txt", tmp_path / "err.txt"
        with open(src, "rb") as fin, open(out, "wb") as fout:
            err_fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                proc = await python(code, stdin=fin, stdout=fout, stderr=err_fd)
                res += [proc.stdin, proc.stdout, proc.stderr, await proc.wait()]
            finally:
                os.close(err_fd)
        res += [out.read_text(), err.read_text()]
        # An fd of a pipe as stdin, a pipe's write end as stdout.
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        os.write(w_in, b"through fds")
        os.close(w_in)
        proc = await python(code, stdin=r_in, stdout=w_out, stderr=DEVNULL)
        os.close(r_in)
        os.close(w_out)
        res.append(await proc.wait())
        with os.fdopen(r_out, "rb") as f:
            res.append(f.read())
        return res

    assert compare(on(main)) == [
        None, None, None, 0, "FROM A FILE\n", "11\n", 0, b"THROUGH FDS\n",
    ]  # fmt: skip


def test_stdin_pipe_write_drain_and_close(compare):
    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        lines = []
        for i in range(50):
            proc.stdin.write(b"line %d\n" % i)
            await proc.stdin.drain()
            lines.append(await proc.stdout.readline())
        res = [proc.stdin.can_write_eof()]
        proc.stdin.write_eof()
        res += [await proc.stdout.read(), await proc.wait()]
        proc.stdin.close()
        await proc.stdin.wait_closed()
        return [lines == [b"line %d\n" % i for i in range(50)]] + res

    assert compare(on(main)) == [True, True, b"", 0]


def test_communicate_input_to_a_child_that_does_not_read(compare):
    # BrokenPipeError while feeding stdin is ignored by communicate().
    async def main():
        proc = await asyncio.create_subprocess_exec("true", stdin=PIPE, stdout=PIPE)
        res = await proc.communicate(b"x" * (4 * 1024 * 1024))
        if PY < (3, 11):
            # When the child exits while data is buffered, stdin's close waiter holds a
            # BrokenPipeError that asyncio 3.9/3.10 log as "Future exception was never
            # retrieved" unless wait_closed() is awaited (3.11 stops logging it).
            with contextlib.suppress(BrokenPipeError):
                await proc.stdin.wait_closed()
        return res, proc.returncode

    assert compare(on(main)) == ((b"", None), 0)


# ------------------------------------------------------------------ Popen arguments


def test_cwd_env_umask(compare, tmp_path):
    code = "import os; print(os.getcwd(), os.environ.get('FERRO_X'), oct(os.umask(0)))"

    async def main():
        proc = await python(
            code, stdout=PIPE, cwd=tmp_path, env={"FERRO_X": "set"}, umask=0o27,
        )
        out, _ = await proc.communicate()
        proc = await asyncio.create_subprocess_shell(
            "echo $FERRO_X; pwd; exit 4", stdout=PIPE, cwd=str(tmp_path),
            env={"FERRO_X": "from the shell", "PATH": os.environ["PATH"]},
        )
        out2, _ = await proc.communicate()
        return out.decode(), out2.decode(), proc.returncode

    assert compare(on(main)) == (
        f"{tmp_path} set 0o27\n", f"from the shell\n{tmp_path}\n", 4,
    )  # fmt: skip


def test_pass_fds_and_close_fds(compare):
    code = (
        "import os, sys; passed, other = map(int, sys.argv[1:]);"
        " os.write(passed, b'via passed fd');"
        " print(os.get_inheritable(passed), end=' ');"
        "\ntry: os.fstat(other)\nexcept OSError as e: print('closed', e.errno)\n"
        "else: print('open')"
    )

    async def main():
        r, w = os.pipe()
        r2, w2 = os.pipe()
        os.set_inheritable(w2, True)  # inheritable, yet closed: close_fds=True
        try:
            proc = await python(code, str(w), str(w2), stdout=PIPE, pass_fds=(w,))
            out, _ = await proc.communicate()
            os.close(w)
            res = [os.read(r, 100), out, proc.returncode]
            proc = await python(
                code, str(w2), str(w2), stdout=PIPE, close_fds=False
            )
            res.append((await proc.communicate())[0])
        finally:
            for fd in (r, r2, w2):
                os.close(fd)
        return res

    assert compare(on(main)) == [b"via passed fd", b"True closed 9\n", 0, b"True open\n"]


@pytest.mark.skipif(PY < (3, 11), reason="process_group= is new in Python 3.11")
def test_start_new_session_and_process_group(compare):
    code = "import os; p = os.getpid(); print(os.getsid(0) == p, os.getpgid(0) == p)"

    async def main():
        res = []
        for kwargs in ({}, {"start_new_session": True}, {"process_group": 0}):
            proc = await python(code, stdout=PIPE, **kwargs)
            res.append((await proc.communicate())[0])
        return res

    assert compare(on(main)) == [b"False False\n", b"True True\n", b"False True\n"]


def test_preexec_fn_user_group_extra_groups(compare):
    code = "import os; print(os.nice(0), os.getuid(), os.getgid(), sorted(os.getgroups()))"
    ids = (os.getuid(), os.getgid())

    async def main():
        base = os.nice(0)
        proc = await python(code, stdout=PIPE, preexec_fn=lambda: os.nice(3))
        out, _ = await proc.communicate()
        res = [out.split()[0] == str(base + 3).encode()]
        if os.geteuid() == 0:  # setgroups() needs CAP_SETGID
            proc = await python(
                code, stdout=PIPE, user=ids[0], group=ids[1], extra_groups=[ids[1]]
            )
            out, _ = await proc.communicate()
            res.append(out.split(maxsplit=1)[1].decode())
        return res

    expected = [True]
    if os.geteuid() == 0:
        expected.append(f"{ids[0]} {ids[1]} [{ids[1]}]\n")
    assert compare(on(main)) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_user_group_extra_groups_drop_privileges(compare):
    # Really switch ids: nobody/nogroup plus one more existing group, read back by the
    # child itself. ``id``/``cat`` rather than PYTHON, which may sit in a tree nobody
    # cannot enter (e.g. /root); /proc/self/status gives the exact kernel ids (real,
    # effective, saved, fs) and the exact supplementary list, which ``id -G`` dedups.
    uid = gid = 65534
    other = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, gid))
    ident = shutil.which("id") or "/usr/bin/id"
    cat = shutil.which("cat") or "/bin/cat"
    status = os.path.exists("/proc/self/status")
    ids = {"user": uid, "group": gid, "extra_groups": [gid, other]}

    async def child(*argv):
        proc = await asyncio.create_subprocess_exec(*argv, stdout=PIPE, stderr=PIPE, **ids)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err

    async def main():
        res = [await child(ident, flag) for flag in ("-u", "-ru", "-g", "-rg", "-G")]
        if status:
            code, out, err = await child(cat, "/proc/self/status")
            lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
            fields = [lines[k].split() for k in ("Uid", "Gid", "Groups")]
            res.append((code, fields[:2], sorted(map(int, fields[2])), err))
        return res

    expected = [(0, f"{n}\n", b"") for n in (uid, uid, gid, gid)]
    expected.append((0, f"{gid} {other}\n", b""))  # egid first, then the extra groups
    if status:
        expected.append((0, [[str(uid)] * 4, [str(gid)] * 4], sorted({gid, other}), b""))
    assert compare(on(main)) == expected


def test_argument_errors(compare, tmp_path):
    async def attempt(make, *args, **kwargs):
        try:
            proc = await make(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - described and compared
            return (type(exc).__name__, str(exc), getattr(exc, "filename", None))
        await proc.wait()
        return ("ok", proc.returncode)

    exe, sh = asyncio.create_subprocess_exec, asyncio.create_subprocess_shell

    def fails():
        raise RuntimeError("preexec_fn failed")

    async def main():
        return [
            await attempt(exe, "true", text=True),
            await attempt(exe, "true", universal_newlines=True),
            await attempt(exe, "true", bufsize=1),
            await attempt(exe, "true", encoding="utf-8"),
            await attempt(exe, "true", errors="strict"),
            await attempt(exe, "true", shell=True),
            await attempt(sh, "true", shell=False),
            await attempt(sh, ["true"]),
            await attempt(sh, "true", text=True),
            await attempt(sh, "true", bufsize=-1),
            await attempt(exe, str(tmp_path / "no-such-program")),
            await attempt(exe, "true", cwd=str(tmp_path / "no-such-dir")),
            await attempt(exe, "true", preexec_fn=fails),
            await attempt(exe, "true", text=False, universal_newlines=False, bufsize=0),
        ]

    missing = str(tmp_path / "no-such-program")
    assert compare(on(main)) == [
        ("ValueError", "text must be False", None),
        ("ValueError", "universal_newlines must be False", None),
        ("ValueError", "bufsize must be 0", None),
        ("ValueError", "encoding must be None", None),
        ("ValueError", "errors must be None", None),
        ("ValueError", "shell must be False", None),
        ("ValueError", "shell must be True", None),
        ("ValueError", "cmd must be a string", None),
        ("ValueError", "text must be False", None),
        ("ValueError", "bufsize must be 0", None),
        ("FileNotFoundError", f"[Errno 2] No such file or directory: '{missing}'", missing),
        ("FileNotFoundError",
         f"[Errno 2] No such file or directory: '{tmp_path / 'no-such-dir'}'",
         str(tmp_path / "no-such-dir")),
        ("SubprocessError", "Exception occurred in preexec_fn.", None),
        ("ok", 0),
    ]  # fmt: skip


# ------------------------------------------------------------------ signals to children

SLEEPER = "echo ready; exec sleep 30"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(30)"
)


def test_send_signal_terminate_kill(compare):
    async def main():
        res = []
        for act in ("send_signal", "terminate", "kill"):
            proc = await asyncio.create_subprocess_shell(SLEEPER, stdout=PIPE)
            res.append(await proc.stdout.readline())
            if act == "send_signal":
                proc.send_signal(signal.SIGUSR1)
            else:
                getattr(proc, act)()
            res += [await proc.wait(), proc.returncode, await proc.stdout.read()]
            # The child is gone (and reaped): no signal can reach it any more.
            res += [outcome(proc.send_signal, signal.SIGTERM), outcome(proc.kill)]
            res.append(child_status(proc.pid))
        return res

    once = [("raise", ProcessLookupError, ""), ("raise", ProcessLookupError, ""), "reaped"]
    assert compare(on(main)) == (
        [b"ready\n", -signal.SIGUSR1, -signal.SIGUSR1, b""] + once
        + [b"ready\n", -signal.SIGTERM, -signal.SIGTERM, b""] + once
        + [b"ready\n", -signal.SIGKILL, -signal.SIGKILL, b""] + once
    )  # fmt: skip


def test_child_that_ignores_sigterm(compare):
    async def main():
        proc = await python(IGNORES_SIGTERM, stdout=PIPE)
        res = [await proc.stdout.readline()]
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 0.5)
            res.append("terminate ended it")
        except asyncio.TimeoutError:
            res.append("still running")
        res.append(proc.returncode)
        proc.kill()
        res += [await proc.wait(), await proc.stdout.read(), child_status(proc.pid)]
        return res

    assert compare(on(main)) == [b"ready\n", "still running", None, -9, b"", "reaped"]


def test_child_killed_while_writing(compare):
    async def main():
        proc = await asyncio.create_subprocess_exec("yes", "ferroloop", stdout=PIPE)
        got = await proc.stdout.readexactly(1024 * 1024)
        proc.kill()
        rest = await asyncio.wait_for(proc.stdout.read(), TIMEOUT)  # EOF comes
        data = got + rest
        lines = data.split(b"\n")
        return [
            data[:10], set(lines[:-1]), b"ferroloop".startswith(lines[-1]),
            proc.stdout.at_eof(), await proc.wait(), child_status(proc.pid),
        ]  # fmt: skip

    # Everything up to the kill arrives, then EOF: whole lines and maybe a partial one.
    assert compare(on(main)) == [b"ferroloop\n", {b"ferroloop"}, True, True, -9, "reaped"]


def test_grandchild_keeps_the_pipe_open(compare):
    # The child starts `cat` (the grandchild, which inherits its stdout) and exits at
    # once; `cat` keeps stdout open until the test closes the pipe `cat` reads. The
    # child's exit is seen (returncode, a wait() started afterwards returns at once);
    # communicate() waits for the pipe as well, and so does a wait() started before the
    # exit since 3.11 (asyncio's transport wakes exit waiters only once the pipes are
    # closed; 3.9/3.10 wake them when the child exits).
    spawn_cat = (
        "import subprocess, sys; subprocess.Popen(['cat'], stdin=int(sys.argv[1]));"
        " print('child exits', flush=True)"
    )

    async def main():
        r, w = os.pipe()
        proc = await python(spawn_cat, str(r), stdout=PIPE, pass_fds=(r,))
        os.close(r)
        early_wait = asyncio.ensure_future(proc.wait())
        comm = asyncio.ensure_future(proc.communicate())
        await until(lambda: proc.returncode is not None, TIMEOUT)
        res = [proc.returncode, child_status(proc.pid)]
        res.append(await asyncio.wait_for(proc.wait(), 1))
        await spin(0.2)
        res += [early_wait.done(), comm.done()]
        os.write(w, b"grandchild's last words\n")
        os.close(w)
        res += [await asyncio.wait_for(comm, TIMEOUT), await early_wait]
        return res

    early_wait_done = PY < (3, 11)
    assert compare(on(main)) == [
        0, "reaped", 0, early_wait_done, False,
        (b"child exits\ngrandchild's last words\n", None), 0,
    ]  # fmt: skip


# ------------------------------------------------------------------ protocol and transport


class ProcProto(asyncio.SubprocessProtocol):
    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.done = loop.create_future()
        self.exited = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


def test_subprocess_protocol_and_transport(compare):
    code = "import sys; sys.stdout.write(sys.stdin.read()[::-1]); sys.stderr.write('e'); sys.exit(7)"

    def scenario(loop):
        async def main():
            tr, pr = await loop.subprocess_exec(lambda: ProcProto(loop), PYTHON, "-c", code)
            res = [list(pr.events), tr.get_returncode(), tr.get_pid() > 0]
            res += [type(tr.get_pipe_transport(fd)).__mro__[-3].__name__ for fd in (0, 1, 2)]
            res.append(tr.get_pipe_transport(3))
            stdin = tr.get_pipe_transport(0)
            stdin.write(b"olleh")
            stdin.write_eof()
            await asyncio.wait_for(pr.done, TIMEOUT)
            lost = sorted(e[1] for e in pr.events if e[0] == "pipe lost")
            res += [pr.events[0], pr.events[-1], lost, "exited" in pr.events]
            res += [bytes(pr.data[1]), bytes(pr.data[2]), tr.get_returncode()]
            res.append(child_status(tr.get_pid()))
            tr.close()
            return res

        return run(loop, main())

    assert compare(scenario) == [
        ["made"], None, True, "WriteTransport", "ReadTransport", "ReadTransport", None,
        "made", ("lost", None), [0, 1, 2], True, b"hello", b"e", 7, "reaped",
    ]  # fmt: skip


def test_transport_close_kills_a_running_child(compare):
    def scenario(loop):
        async def main():
            tr, pr = await loop.subprocess_exec(
                lambda: ProcProto(loop), "sleep", "30", stdin=DEVNULL, stdout=PIPE,
                stderr=DEVNULL,
            )
            pid = tr.get_pid()
            res = [tr.get_pipe_transport(0), tr.get_pipe_transport(2), tr.is_closing()]
            tr.close()
            res.append(tr.is_closing())
            await asyncio.wait_for(pr.done, TIMEOUT)
            res += [tr.get_returncode(), pr.events, child_status(pid)]
            tr.close()  # again: nothing happens
            return res

        return run(loop, main())

    assert compare(scenario) == [
        None, None, False, True, -9,
        ["made", ("pipe lost", 1, None), "exited", ("lost", None)], "reaped",
    ]  # fmt: skip


def test_transport_close_leaves_an_exited_child_alone(compare):
    def scenario(loop):
        async def main():
            tr, pr = await loop.subprocess_exec(
                lambda: ProcProto(loop), "sh", "-c", "exit 5", stdin=DEVNULL, stdout=DEVNULL,
                stderr=DEVNULL,
            )
            await asyncio.wait_for(pr.exited, TIMEOUT)
            tr.close()
            await asyncio.wait_for(pr.done, TIMEOUT)
            return tr.get_returncode(), pr.events, child_status(tr.get_pid())

        return run(loop, main())

    assert compare(scenario) == (5, ["made", "exited", ("lost", None)], "reaped")


# ------------------------------------------------------------------ pipes of a child


def test_writing_to_a_child_that_closed_its_stdin(compare):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "exec 0<&-; echo closed; sleep 0.3", stdin=PIPE, stdout=PIPE
        )
        res = [await proc.stdout.readline()]
        try:
            for _ in range(100):
                proc.stdin.write(b"x" * 65536)
                await proc.stdin.drain()
            res.append("no error")
        except ConnectionError as exc:
            res.append((type(exc), str(exc)))
        return res + [await proc.wait()]

    assert compare(on(main)) == [
        b"closed\n", (ConnectionResetError, "Connection lost"), 0,
    ]  # fmt: skip


def test_pause_reading_a_child_stdout_stops_the_child(compare):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "yes | head -c 3000000; echo done >&2", stdout=PIPE, stderr=PIPE
        )
        stdout = proc._transport.get_pipe_transport(1)
        await proc.stdout.readexactly(10)
        stdout.pause_reading()
        await spin(0.2)
        res = [proc.returncode, len(proc.stdout._buffer) < 3_000_000, is_reading(stdout)]
        stdout.resume_reading()
        data = await proc.stdout.read()
        return res + [len(data) + 10, await proc.stderr.read(), await proc.wait()]

    assert compare(on(main)) == [None, True, False, 3_000_000, b"done\n", 0]


def test_child_closes_stdout_long_before_it_exits(compare):
    def scenario(loop):
        async def main():
            tr, pr = await loop.subprocess_exec(
                lambda: ProcProto(loop), "sh", "-c", "exec 1>&-; sleep 0.3; kill -TERM $$",
                stdin=DEVNULL, stderr=DEVNULL,
            )  # fmt: skip
            await asyncio.wait_for(pr.done, TIMEOUT)
            tr.close()
            return pr.events, tr.get_returncode()

        return run(loop, main())

    assert compare(scenario) == (
        ["made", ("pipe lost", 1, None), "exited", ("lost", None)], -signal.SIGTERM
    )


def test_cancelled_waits_do_not_disturb_the_next(compare):
    async def main():
        proc = await asyncio.create_subprocess_shell("sleep 0.3; exit 255")
        try:
            await asyncio.wait_for(proc.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        return await proc.wait(), waiter.cancelled(), child_status(proc.pid)

    assert compare(on(main)) == (255, True, "reaped")
