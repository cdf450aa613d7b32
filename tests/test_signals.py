"""Signal handlers: ``add_signal_handler`` / ``remove_signal_handler``.

Every test runs on stock asyncio and on ferroloop. The checks and messages are compared
with asyncio in the pytest process (no signal is sent there; the process's handlers
and wake-up fd are restored after each test). Everything that sends a signal runs in a
child interpreter (``run_child``), so that a handler left installed, or a signal that
kills, cannot touch the pytest process: handlers running as loop callbacks in the
context they were added in, bursts (also beyond what the wake-up fd holds, quietly),
``signal.signal`` handlers beside the loop's, SIGINT handlers, Ctrl-C in
``asyncio.run``/``ferroloop.run``, failing and self-removing handlers, signals sent by
another thread, a new loop after a closed one. Graceful shutdown on
SIGTERM and fork: ``test_signals_shutdown.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from looptest_support import RESTORE_SIGINT, outcome, run_child

WATCHED = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


@pytest.fixture(autouse=True)
def _restore_signal_state():
    saved = {sig: signal.getsignal(sig) for sig in WATCHED}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(wakeup)


def wakeup_fd_is_set():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd != -1


def noop(*args):
    pass


async def coro_fn():
    pass


def describe_handler(sig):
    handler = signal.getsignal(sig)
    if handler in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler):
        return handler
    return "python handler" if callable(handler) else handler


# ------------------------------------------------------------------ checks and messages


def test_argument_checks_and_messages(compare):
    def scenario(loop):
        coro = coro_fn()
        try:
            res = [
                outcome(loop.add_signal_handler, "2", noop),
                outcome(loop.add_signal_handler, 2.0, noop),
                outcome(loop.add_signal_handler, None, noop),
                outcome(loop.add_signal_handler, 0, noop),
                outcome(loop.add_signal_handler, -1, noop),
                outcome(loop.add_signal_handler, signal.NSIG, noop),
                outcome(loop.add_signal_handler, 1000, noop),
                outcome(loop.add_signal_handler, signal.SIGKILL, noop),
                outcome(loop.add_signal_handler, signal.SIGSTOP, noop),
                outcome(loop.add_signal_handler, signal.SIGUSR1, coro_fn),
                outcome(loop.add_signal_handler, signal.SIGUSR1, coro),
                outcome(loop.add_signal_handler, "not even a signal", coro_fn),
                # A refused signal leaves neither a handler nor the wake-up fd behind.
                wakeup_fd_is_set(), describe_handler(signal.SIGUSR1),
                outcome(loop.remove_signal_handler, "2"),
                outcome(loop.remove_signal_handler, 0),
                outcome(loop.remove_signal_handler, signal.SIGUSR1),
                outcome(loop.remove_signal_handler, signal.SIGKILL),
            ]
        finally:
            coro.close()
        return res

    assert compare(scenario) == [
        ("raise", TypeError, "sig must be an int, not '2'"),
        ("raise", TypeError, "sig must be an int, not 2.0"),
        ("raise", TypeError, "sig must be an int, not None"),
        ("raise", ValueError, "invalid signal number 0"),
        ("raise", ValueError, "invalid signal number -1"),
        ("raise", ValueError, f"invalid signal number {signal.NSIG}"),
        ("raise", ValueError, "invalid signal number 1000"),
        ("raise", RuntimeError, f"sig {signal.SIGKILL:d} cannot be caught"),
        ("raise", RuntimeError, f"sig {signal.SIGSTOP:d} cannot be caught"),
        ("raise", TypeError, "coroutines cannot be used with add_signal_handler()"),
        ("raise", TypeError, "coroutines cannot be used with add_signal_handler()"),
        ("raise", TypeError, "coroutines cannot be used with add_signal_handler()"),
        False, signal.SIG_DFL,
        ("raise", TypeError, "sig must be an int, not '2'"),
        ("raise", ValueError, "invalid signal number 0"),
        ("ok", False),
        ("ok", False),
    ]  # fmt: skip


def test_add_remove_and_close_restore_the_defaults(compare):
    def scenario(loop):
        res = [outcome(loop.add_signal_handler, sig, noop, sig) for sig in WATCHED]
        res += [describe_handler(sig) for sig in WATCHED] + [wakeup_fd_is_set()]
        # Adding again replaces the handler.
        res.append(outcome(loop.add_signal_handler, signal.SIGUSR1, print))
        res.append(outcome(loop.remove_signal_handler, signal.SIGUSR2))
        res.append(outcome(loop.remove_signal_handler, signal.SIGUSR2))
        res += [describe_handler(signal.SIGUSR2), wakeup_fd_is_set()]
        loop.close()
        res += [describe_handler(sig) for sig in WATCHED] + [wakeup_fd_is_set()]
        res += [outcome(loop.remove_signal_handler, signal.SIGUSR1)]
        res += [outcome(loop.add_signal_handler, signal.SIGUSR1, noop)]
        res += [outcome(loop.add_signal_handler, "x", noop)]
        res += [describe_handler(signal.SIGUSR1), wakeup_fd_is_set()]
        return res

    assert compare(scenario) == (
        [("ok", None)] * 4 + ["python handler"] * 4 + [True]
        + [("ok", None), ("ok", True), ("ok", False), signal.SIG_DFL, True]
        + [signal.default_int_handler, signal.SIG_DFL, signal.SIG_DFL, signal.SIG_DFL, False]
        + [("ok", False), ("raise", RuntimeError, "Event loop is closed")]
        + [("raise", TypeError, "sig must be an int, not 'x'"), signal.SIG_DFL, False]
    )  # fmt: skip


def test_removing_the_last_handler_clears_the_wakeup_fd(compare):
    def scenario(loop):
        loop.add_signal_handler(signal.SIGUSR1, noop)
        loop.add_signal_handler(signal.SIGUSR2, noop)
        res = [loop.remove_signal_handler(signal.SIGUSR1), wakeup_fd_is_set()]
        res += [loop.remove_signal_handler(signal.SIGUSR2), wakeup_fd_is_set()]
        return res

    assert compare(scenario) == [True, True, True, False]


def test_from_a_thread_other_than_the_main_thread(compare):
    def in_thread(fn, *args):
        box = []
        thread = threading.Thread(target=lambda: box.append(outcome(fn, *args)))
        thread.start()
        thread.join(10)
        return box[0]

    def scenario(loop):
        res = [in_thread(loop.add_signal_handler, signal.SIGUSR1, noop)]
        res += [describe_handler(signal.SIGUSR1), wakeup_fd_is_set()]
        res.append(in_thread(loop.remove_signal_handler, signal.SIGUSR1))
        loop.add_signal_handler(signal.SIGUSR1, noop)
        # signal.signal() refuses to run outside the main thread: its ValueError is not
        # translated, and the handler is forgotten by the loop all the same.
        res.append(in_thread(loop.remove_signal_handler, signal.SIGUSR1))
        res += [loop.remove_signal_handler(signal.SIGUSR1), describe_handler(signal.SIGUSR1)]
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        return res

    main_thread_only = "main thread of the main interpreter"
    assert compare(scenario) == [
        ("raise", RuntimeError, f"set_wakeup_fd only works in {main_thread_only}"),
        signal.SIG_DFL, False, ("ok", False),
        ("raise", ValueError, f"signal only works in {main_thread_only}"),
        False, "python handler",
    ]  # fmt: skip


# ------------------------------------------------------------------ delivery (children)

DELIVERY = textwrap.dedent(
    """
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    loop = new_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("message")))
    calls = []
    order = []


    def handler(*args):
        calls.append(args)
        order.append(("handler", var.get(), asyncio.current_task(), loop.is_running()))


    async def main():
        # A callback of the loop, in the context it was added in, with its args.
        var.set("when added")
        loop.add_signal_handler(signal.SIGUSR1, handler, "a", 1)
        var.set("when sent")
        os.kill(os.getpid(), signal.SIGUSR1)
        order.append("kill returned")
        await asyncio.sleep(0.05)
        print("order", order)
        # 100 signals, each followed by a short await: 100 calls.
        calls.clear()
        for _ in range(100):
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        print("paced", len(calls), set(calls))
        # A burst without awaits: the loop cannot read while it is sent.
        calls.clear()
        for _ in range(1000):
            os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.1)
        print("burst", len(calls))
        # Removed while its signal waits to be handled: not called.
        calls.clear()
        loop.add_signal_handler(signal.SIGUSR2, handler, "usr2")
        os.kill(os.getpid(), signal.SIGUSR2)
        print("removed", loop.remove_signal_handler(signal.SIGUSR2))
        await asyncio.sleep(0.05)
        print("after removal", calls)


    loop.run_until_complete(asyncio.wait_for(main(), 30))
    loop.close()
    print("errors", errors)
    """
)


def test_handlers_run_as_loop_callbacks_and_bursts_are_not_lost(loop_impl):
    lines = run_child(DELIVERY, loop_impl)
    burst = int(lines.pop(2).removeprefix("burst "))
    assert lines == [
        "order ['kill returned', ('handler', 'when added', None, True)]",
        "paced 100 {('a', 1)}",
        "removed True",
        "after removal []",
        "errors []",
    ]
    if loop_impl == "ferroloop":
        # One byte per signal in a 64 KiB pipe: each of the 1000 gets its handler call.
        assert burst == 1000
    else:
        # asyncio's self-pipe is a socketpair that fills after a few hundred one-byte
        # writes (278 here); the rest are dropped (with an "Exception ignored" line
        # each on stderr), so a burst only guarantees at least one call.
        assert 1 <= burst <= 1000


OVERFLOW = textwrap.dedent(
    """
    pairs = PAIRS
    loop = new_loop()
    calls = {signal.SIGUSR1: 0, signal.SIGUSR2: 0}


    def handler(sig):
        calls[sig] += 1


    async def settled():
        # Until no handler call came for 0.1 s (the loop drains the pipe meanwhile).
        deadline = time.monotonic() + 20
        seen = None
        while seen != dict(calls) and time.monotonic() < deadline:
            seen = dict(calls)
            await asyncio.sleep(0.1)
        return seen


    async def main():
        loop.add_signal_handler(signal.SIGUSR1, handler, signal.SIGUSR1)
        loop.add_signal_handler(signal.SIGUSR2, handler, signal.SIGUSR2)
        # Far more signals than the wake-up pipe holds, without the loop reading.
        for _ in range(pairs):
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
        burst = await settled()
        print("each number handled", all(n >= 1 for n in burst.values()))
        print("at most one call per signal", sum(burst.values()) <= 2 * pairs)
        # The pipe was drained: the next signal is handled.
        os.kill(os.getpid(), signal.SIGUSR1)
        after = await settled()
        print("next signal", after[signal.SIGUSR1] - burst[signal.SIGUSR1])


    loop.run_until_complete(asyncio.wait_for(main(), 60))
    loop.close()
    """
)


def test_a_burst_beyond_the_wakeup_pipe_is_quiet_and_loses_no_signal_number(loop_impl):
    # Beyond what each wake-up fd holds (ferroloop's pipe: 64 KiB; asyncio's socketpair: a
    # few hundred bytes): 100,000 signals on ferroloop, 4,000 on asyncio, which writes a
    # traceback to stderr per dropped byte (31 MB and 10 s for 100,000).
    pairs = 50_000 if loop_impl == "ferroloop" else 2_000
    lines, err = run_child(OVERFLOW.replace("PAIRS", str(pairs)), loop_impl, with_stderr=True)
    assert lines == [
        "each number handled True",
        "at most one call per signal True",
        "next signal 1",
    ]
    if loop_impl == "ferroloop":
        # The wake-up fd is set with warn_on_full_buffer=False: dropped bytes are silent.
        # (Stock asyncio's unix_events does not pass it: one "Exception ignored when
        # trying to write to the signal wakeup fd" traceback per dropped signal.)
        assert err == ""


BESIDE = textwrap.dedent(
    """
    seen = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append("python USR2"))
    loop = new_loop()
    loop.add_signal_handler(signal.SIGUSR1, seen.append, "loop USR1")
    # A signal.signal handler installed after the loop set the wake-up fd works too.
    signal.signal(signal.SIGHUP, lambda signum, frame: seen.append("python HUP"))


    async def main():
        for _ in range(10):
            for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
                os.kill(os.getpid(), sig)
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)


    loop.run_until_complete(asyncio.wait_for(main(), 30))
    print(sorted((x, seen.count(x)) for x in set(seen)))
    loop.close()
    # The Python handlers are still there after close(), the loop's is gone.
    print(signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL,
          callable(signal.getsignal(signal.SIGUSR2)), callable(signal.getsignal(signal.SIGHUP)))
    os.kill(os.getpid(), signal.SIGUSR2)
    print(seen.count("python USR2"))
    """
)


def test_signal_signal_handlers_keep_working_beside(loop_impl):
    assert run_child(BESIDE, loop_impl) == [
        "[('loop USR1', 10), ('python HUP', 10), ('python USR2', 10)]",
        "True True True",
        "11",
    ]


SIGINT_HANDLER = textwrap.dedent(
    """
    loop = new_loop()
    got = []
    loop.add_signal_handler(signal.SIGINT, got.append, "sigint")


    async def main():
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.01)
        print("handled", got)
        print("removed", loop.remove_signal_handler(signal.SIGINT))
        print("default", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(1)
            print("no KeyboardInterrupt")
        except KeyboardInterrupt:
            print("KeyboardInterrupt")


    loop.run_until_complete(main())
    loop.close()
    """
)


def test_sigint_handler(loop_impl):
    assert run_child(SIGINT_HANDLER, loop_impl) == [
        "handled ['sigint', 'sigint', 'sigint']",
        "removed True",
        "default True",
        "KeyboardInterrupt",
    ]


CTRL_C = RESTORE_SIGINT + textwrap.dedent(
    """
    import asyncio, sys
    if sys.argv[1] == "ferroloop":
        import ferroloop
        run = ferroloop.run
    else:
        run = asyncio.run


    async def main():
        try:
            # "ready" once the main task waits: a KeyboardInterrupt raised by the default
            # SIGINT handler (no asyncio.Runner before 3.11) cannot hit the task's code.
            asyncio.get_running_loop().call_soon(lambda: print("ready", flush=True))
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            print("main task cancelled", flush=True)
            raise
        finally:
            print("finally", flush=True)


    try:
        run(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt out of run()", flush=True)
        raise
    """
)


def run_interrupted(loop_impl, sig=signal.SIGINT):
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C, loop_impl],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.splitlines(), err.strip().splitlines()[-1:]


def test_ctrl_c_cancels_the_main_task_and_raises_keyboard_interrupt(loop_impl):
    result = run_interrupted(loop_impl)
    assert result == run_interrupted("asyncio")
    # The main task is cancelled on every version: since 3.11 asyncio.Runner's SIGINT
    # handler cancels it; on 3.9/3.10 the KeyboardInterrupt leaves run_until_complete()
    # and asyncio.run() cancels the tasks left (the main one) on its way out.
    assert result == (
        -signal.SIGINT,
        ["main task cancelled", "finally", "KeyboardInterrupt out of run()"],
        ["KeyboardInterrupt"],
    )


HANDLER_LIFE = textwrap.dedent(
    """
    import socket, threading

    loop = new_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(
        (ctx["message"].split("(")[0], repr(ctx.get("exception")))))
    calls = []


    def failing(tag):
        calls.append(tag)
        raise ValueError("handler failed")


    def once():
        calls.append("once")
        calls.append(loop.remove_signal_handler(signal.SIGUSR2))


    def from_a_thread(handled):
        calls.append(1)
        handled.set()


    def send_from_a_thread(count, handled):
        # One at a time: a SIGUSR1 still pending when the next is sent would be one.
        for _ in range(count):
            handled.clear()
            os.kill(os.getpid(), signal.SIGUSR1)
            handled.wait(5)


    async def main():
        # A failing handler goes to the exception handler, and stays installed.
        loop.add_signal_handler(signal.SIGUSR1, failing, "failing")
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.02)
        print("failing", calls, errors)
        # A handler that removes itself.
        calls.clear()
        loop.add_signal_handler(signal.SIGUSR2, once)
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.05)
        print("self-removal", calls, signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL)
        # Signals sent by another thread wake the loop up in its poller.
        calls.clear()
        handled = threading.Event()
        loop.add_signal_handler(signal.SIGUSR1, from_a_thread, handled)
        thread = threading.Thread(target=send_from_a_thread, args=(50, handled))
        thread.start()
        await loop.run_in_executor(None, thread.join)
        await asyncio.sleep(0.05)
        print("from a thread", len(calls))


    loop.run_until_complete(asyncio.wait_for(main(), 30))
    loop.remove_signal_handler(signal.SIGUSR1)
    # Another wake-up fd set by someone else is replaced, and cleared on removal.
    a, b = socket.socketpair()
    a.setblocking(False)
    signal.set_wakeup_fd(a.fileno())
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "again")
    current = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(current)
    print("replaced", current not in (-1, a.fileno()))
    loop.close()
    print("after close", signal.set_wakeup_fd(-1))
    # A new loop after the first one closed gets the signals.
    loop = new_loop()
    calls.clear()
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "new loop")


    async def again():
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)


    loop.run_until_complete(again())
    loop.close()
    print("new loop", calls, errors[2:])
    """
)


def test_failing_self_removing_and_threaded_handlers_and_new_loops(loop_impl):
    assert run_child(HANDLER_LIFE, loop_impl) == [
        "failing ['failing', 'failing'] [('Exception in callback failing', "
        "\"ValueError('handler failed')\"), ('Exception in callback failing', "
        "\"ValueError('handler failed')\")]",
        "self-removal ['once', True] True",
        "from a thread 50",
        "replaced True",
        "after close -1",
        "new loop ['new loop'] []",
    ]
