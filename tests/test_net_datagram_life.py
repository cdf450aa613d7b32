"""Datagram transports: errors and life cycle.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``.
Covered: ICMP and synchronous send errors into ``error_received``; extra info,
write-buffer limits (ints and floats), close/abort, ``connection_lost`` and writes
after close; pausing reads; a failing ``datagram_received``; KeyboardInterrupt; the
transport's base classes; no fd leak; cancelled creation and loop shutdown without
ResourceWarnings. Moving datagrams: ``test_net_datagram.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
import warnings
from asyncio import selector_events, trsock

import pytest

from looptest_dgram import (
    LOCAL4,
    OK,
    Dgram,
    close_all,
    endpoint,
    on,
    udp_pair,
)
from looptest_net import run, spin, until
from looptest_support import PY, open_fd_count, outcome

# ----------------------------------------------------------------------- send errors


def test_icmp_port_unreachable_goes_to_error_received(compare):
    async def main(loop):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(LOCAL4)
            port = gone.getsockname()[1]
        tr, pr = await endpoint(loop, remote_addr=("127.0.0.1", port))
        tr.sendto(b"nobody listens")
        await until(lambda: pr.errors)
        await spin(0.02)
        res = [[(type(e), e.errno) for e in pr.errors], tr.is_closing()]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", port))  # the port is free again: still usable?
            peer.setblocking(False)
            tr.sendto(b"now someone does")
            res.append(await loop.sock_recv(peer, 100))
            peer.sendto(b"back", tr.get_extra_info("sockname"))
            res.append(await pr.wait_for(1))
        await close_all((tr, pr))
        return res + [len(pr.errors), pr.lost_calls]

    assert compare(on(main)) == [
        [(ConnectionRefusedError, errno.ECONNREFUSED)], False, b"now someone does", [b"back"],
        1, [None],
    ]  # fmt: skip


def test_synchronous_send_errors(compare):
    # An OSError from sendto() goes to error_received (whose own failure raises out of
    # sendto, as in asyncio); any other error is fatal: exception handler, connection_lost.
    def failing_error_received(exc):
        raise RuntimeError(f"error_received({type(exc).__name__}) failed")

    async def main(loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            srv_tr.sendto(b"no SO_BROADCAST", ("255.255.255.255", 9))
            srv_tr.sendto(b"port 0", ("127.0.0.1", 0))
            res = [[(type(e), e.errno) for e in srv.errors], srv_tr.is_closing()]
            srv.error_received = failing_error_received
            res.append(outcome(srv_tr.sendto, b"port 0", ("127.0.0.1", 0)))
            srv_tr.sendto(b"still usable", cli_tr.get_extra_info("sockname"))
            res += [await cli.wait_for(1), srv_tr.is_closing(), len(contexts)]
            res.append(outcome(srv_tr.sendto, b"no address: TypeError"))
            exc = await srv.lost
            checks = [(c["message"], c["exception"] is exc, c["transport"] is srv_tr,
                       c["protocol"] is srv) for c in contexts]  # fmt: skip
            return res + [type(exc), checks]

    res = compare(on(main))
    assert res[0][1] == (OSError, errno.EINVAL) and issubclass(res[0][0][0], OSError)
    message = "Fatal write error on datagram transport"
    assert res[1:] == [False, ("raise", RuntimeError, "error_received(OSError) failed"),
                       [b"still usable"], False, 0, OK, TypeError,
                       [(message, True, True, True)]]  # fmt: skip


# ------------------------------------------------ extra info, limits, close and abort


@pytest.mark.parametrize("how", ["close", "abort"])
def test_extra_info_and_closing(compare, how):
    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            sock = cli_tr.get_extra_info("socket")
            res = [(isinstance(sock, trsock.TransportSocket), sock.family, sock.type),
                   cli_tr.get_extra_info("sockname") == sock.getsockname(),
                   cli_tr.get_extra_info("peername") == srv_tr.get_extra_info("sockname"),
                   srv_tr.get_extra_info("peername"),
                   (cli_tr.get_extra_info("nope"), cli_tr.get_extra_info("nope", 7))]  # fmt: skip
            for _ in range(3):
                cli_tr.sendto(b"x" * 1000)
            res += [cli_tr.get_write_buffer_size(), cli_tr.get_protocol() is cli]
            res.append(cli_tr.is_closing())
            getattr(cli_tr, how)()
            res.append((cli_tr.is_closing(), list(cli.lost_calls)))  # never called synchronously
            res.append([outcome(cli_tr.close), outcome(cli_tr.abort)])
            await cli.lost
            await spin(0.02)
            res.append((cli.lost_calls, sock.fileno(), cli_tr.is_closing()))
            res.append(cli_tr.get_write_buffer_size())
            return res + [[outcome(cli_tr.close), outcome(cli_tr.abort)]]

    assert compare(on(main)) == [
        (True, socket.AF_INET, socket.SOCK_DGRAM), True, True, None, (None, 7), 0, True, False,
        (True, []), [OK, OK], ([None], -1, True), 0, [OK, OK],
    ]  # fmt: skip


def test_write_buffer_limits(compare):
    async def main(loop):
        tr, pr = await endpoint(loop, local_addr=LOCAL4)
        res = [tr.get_write_buffer_limits()]
        for kwargs in [dict(high=100, low=10), dict(low=8), dict(high=40), {}, dict(high=0, low=0),
                       dict(high=10, low=20), dict(low=-1), dict(high=-1)]:  # fmt: skip
            res.append((kwargs, outcome(tr.set_write_buffer_limits, **kwargs)))
            res.append(tr.get_write_buffer_limits())
        await close_all((tr, pr))
        return res + [(pr.pauses, pr.resumes)]

    res = compare(on(main))
    assert res[:5] == [(16384, 65536), (dict(high=100, low=10), OK), (10, 100), (dict(low=8), OK),
                       (8, 32)]  # fmt: skip
    assert res[11][1] == ("raise", ValueError, "high (10) must be >= low (20) must be >= 0")
    assert res[15][1] == ("raise", ValueError, "high (-1) must be >= low (-1) must be >= 0")
    assert res[-1] == ([], [])


def test_write_buffer_limits_accept_floats(compare):
    # asyncio only compares the limits: floats are accepted and kept as they are.
    async def main(loop):
        tr, pr = await endpoint(loop, local_addr=LOCAL4)
        res = [outcome(tr.set_write_buffer_limits, high=1000.0), tr.get_write_buffer_limits()]
        res.append(outcome(tr.set_write_buffer_limits, high=64e3, low=1.5))
        res.append(tr.get_write_buffer_limits())
        await close_all((tr, pr))
        return res

    assert compare(on(main)) == [OK, (250.0, 1000.0), OK, (1.5, 64000.0)]


def test_sendto_after_close_is_dropped_and_logged(compare, caplog):
    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            cli_tr.close()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                res = [outcome(cli_tr.sendto, b"late") for _ in range(3)]
                await cli.lost
                res += [outcome(cli_tr.sendto, b"later", None) for _ in range(4)]
                res.append(outcome(cli_tr.sendto, "text")[:2])  # still type-checked
            res.append([r.getMessage() for r in caplog.records if r.name == "asyncio"])
            await spin(0.02)
            return res + [srv.got]

    logged = ["socket.send() raised exception."] * 3
    assert compare(on(main)) == [OK] * 7 + [("raise", TypeError), logged, []]


# --------------------------------------------------------- reading and protocol errors

NO_DGRAM_PAUSE = pytest.mark.skipif(
    "pause_reading" not in vars(selector_events._SelectorTransport),
    reason="this Python's asyncio datagram transport has no pause_reading() (NotImplementedError)",
)


@NO_DGRAM_PAUSE
def test_pause_and_resume_reading(compare):
    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            res = [srv_tr.is_reading()]
            srv_tr.pause_reading()
            srv_tr.pause_reading()
            res.append(srv_tr.is_reading())
            for i in range(5):
                cli_tr.sendto(b"p%d" % i)
            await spin(0.05)
            res.append(len(srv.got))  # nothing delivered while paused
            srv_tr.resume_reading()
            srv_tr.resume_reading()
            res += [srv_tr.is_reading(), await srv.wait_for(5)]
            srv_tr.close()
            res.append((srv_tr.is_reading(), outcome(srv_tr.resume_reading)))
            return res + [srv_tr.is_reading()]

    got = [b"p0", b"p1", b"p2", b"p3", b"p4"]
    assert compare(on(main)) == [True, False, 0, True, got, (False, OK), False]


class Failing(Dgram):
    def __init__(self, loop, echo=False):
        super().__init__(loop, echo)
        self.exc = ValueError("datagram_received failed")

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if data == b"boom":
            raise self.exc
        if data == b"interrupt":
            raise KeyboardInterrupt


def test_datagram_received_error_goes_to_handler_and_reading_goes_on(loop, loop_errors):
    async def main():
        srv_tr, srv = await endpoint(loop, cls=Failing, local_addr=LOCAL4)
        cli_tr, cli = await endpoint(loop, remote_addr=srv_tr.get_extra_info("sockname"))
        for data in (b"before", b"boom", b"after", b"and more"):
            cli_tr.sendto(data)
        got = await srv.wait_for(4)
        await spin(0.02)
        state = (srv_tr.is_closing(), list(srv.lost_calls), list(srv.errors))
        await close_all((srv_tr, srv), (cli_tr, cli))
        return got, state, srv.exc

    got, state, exc = run(loop, main())
    assert got == [b"before", b"boom", b"after", b"and more"]
    assert state == (False, [], [])
    assert len(loop_errors) == 1 and loop_errors[0]["exception"] is exc
    loop_errors.clear()


def test_keyboard_interrupt_in_datagram_received_leaves_the_loop(compare):
    def scenario(loop):
        srv_tr, srv = run(loop, endpoint(loop, cls=Failing, local_addr=LOCAL4))
        cli_tr, cli = run(loop, endpoint(loop, remote_addr=srv_tr.get_extra_info("sockname")))
        cli_tr.sendto(b"interrupt")
        cli_tr.sendto(b"after")
        sleeper = loop.create_task(asyncio.sleep(5))
        res = [outcome(loop.run_until_complete, sleeper)[:2], srv.got[-1][0], srv_tr.is_closing()]
        sleeper.cancel()
        res.append(run(loop, srv.wait_for(2)))
        run(loop, close_all((srv_tr, srv), (cli_tr, cli)))
        return res + [srv.lost_calls]

    assert compare(scenario) == [
        ("raise", KeyboardInterrupt), b"interrupt", False, [b"interrupt", b"after"], [None]
    ]


# ------------------------------------------------------------------------ resources


@pytest.mark.parametrize("cls", [asyncio.BaseTransport, asyncio.DatagramTransport])
def test_transport_classes(loop, loop_impl, cls):
    if cls is asyncio.DatagramTransport and loop_impl == "asyncio" and PY < (3, 12):
        pytest.skip("asyncio before 3.12: its datagram transport does not derive DatagramTransport")

    async def main():
        tr, pr = await endpoint(loop, local_addr=LOCAL4)
        await close_all((tr, pr))
        return isinstance(tr, cls)

    assert run(loop, main()) is True


def test_no_fd_leak_after_200_endpoints(loop):
    async def main():
        async with udp_pair(loop) as ((srv_tr, srv), _):
            srv_addr = srv_tr.get_extra_info("sockname")
            before = open_fd_count()
            kinds = [{"local_addr": LOCAL4}, {"remote_addr": srv_addr}, {"family": socket.AF_INET}]
            pairs = []
            for i in range(200):
                pairs.append(await endpoint(loop, **kinds[i % 3]))
                pairs[-1][0].sendto(b"%d" % i, None if i % 3 == 1 else srv_addr)
            during = open_fd_count()
            await srv.wait_for(200)
            for i, (tr, _) in enumerate(pairs):
                tr.abort() if i % 2 else tr.close()
            for _, pr in pairs:
                await pr.lost
            await spin(0.02)
            lost_once = sum(pr.lost_calls == [None] for _, pr in pairs)
            return before, during, open_fd_count(), lost_once

    before, during, after, lost_once = run(loop, main())
    assert during >= before + 200
    assert after == before
    assert lost_once == 200


def test_cancelled_create_datagram_endpoint(compare):
    async def main(loop):
        made = []

        def factory():
            made.append(Dgram(loop))
            return made[-1]

        task = loop.create_task(loop.create_datagram_endpoint(factory, local_addr=LOCAL4))
        await asyncio.sleep(0)  # the task is now waiting for connection_made
        task.cancel()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await made[0].lost
            await spin(0.02)
            tr = made[0].transport
            res = [task.cancelled(), made[0].events, tr.is_closing()]
            res.append(tr.get_extra_info("socket").fileno())
            del tr, made[:]
            gc.collect()
        return res + [[str(w.message) for w in caught]]

    assert compare(on(main)) == [True, ["made", ("lost", None)], True, -1, []]


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "left-open"])
def test_loop_close_with_datagram_transport(compare, closed):
    async def main(loop):
        tr, pr = await endpoint(loop, local_addr=LOCAL4)
        if closed:
            tr.close()
            await pr.lost
        return tr.get_extra_info("socket")

    def scenario(loop):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sock = run(loop, main(loop))
            loop.close()
            gc.collect()
        warned = [(w.category, str(w.message).startswith("unclosed transport <")) for w in caught]
        return sock.fileno(), warned

    fileno, caught = compare(scenario)
    assert fileno == -1
    assert caught == ([] if closed else [(ResourceWarning, True)])
