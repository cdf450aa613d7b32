"""Datagram transports and ``loop.create_datagram_endpoint``: moving datagrams.

Every test runs on stock asyncio and on ferroloop (the loop fixtures of
``conftest.py``); tests that need asyncio's exact answer use ``compare``.
Covered: UDP over IPv4 and IPv6 (500 datagrams of up to 60 KiB echoed intact,
the form of the ``addr`` given to ``datagram_received``, replies with
``sendto(data, addr)``); ``sock=`` (bound and connected), ``reuse_port``,
``allow_broadcast``, ``family`` without addresses, host names; Unix datagram
sockets; datagrams queued while the peer's queue is full (copies, flow control,
close/abort); ``sendto`` argument checks, bytes-like types and empty datagrams
(dropped before 3.13, sent since). Errors and life cycle: ``test_net_datagram_life.py``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import inspect
import os
import socket
from asyncio import selector_events

import pytest
from looptest_dgram import (
    HOSTS,
    LOCAL4,
    OK,
    addr_form,
    close_all,
    endpoint,
    on,
    sockopt,
    udp_pair,
)
from looptest_net import run, spin, unix_path, until
from looptest_support import PY, outcome

# ------------------------------------------------------------------ UDP round trips

SIZES = [4, 7, 100, 512, 1400, 1472, 1473, 4096, 9000, 32 * 1024, 60 * 1024]


@pytest.mark.parametrize("host", HOSTS)
def test_udp_500_datagrams_echoed_intact(compare, host):
    payloads = [i.to_bytes(4, "big") + os.urandom(SIZES[i % len(SIZES)] - 4) for i in range(500)]

    async def main(loop):
        async with udp_pair(loop, host) as ((srv_tr, srv), (cli_tr, cli)):
            srv_addr = srv_tr.get_extra_info("sockname")
            cli_addr = cli_tr.get_extra_info("sockname")
            in_flight = 0
            for i, data in enumerate(payloads):  # a window: the kernel would drop a burst
                if in_flight + len(data) > 96 * 1024:
                    await cli.wait_for(i)
                    in_flight = 0
                cli_tr.sendto(data)
                in_flight += len(data)
            echoed = await cli.wait_for(len(payloads))
            return (
                [d for d, _ in srv.got] == payloads and echoed == payloads,
                (srv.types, cli.types),
                addr_form(srv.got[0][1], cli_addr),
                all(a == cli_addr for _, a in srv.got),
                addr_form(cli.got[0][1], srv_addr),
                addr_form(cli_tr.get_extra_info("peername"), srv_addr),
                (srv_tr.get_write_buffer_size(), cli_tr.get_write_buffer_size()),
                srv.errors + cli.errors,
            )

    tail = () if host == "127.0.0.1" else (0, 0)
    form = ("tuple", 2 + len(tail), host, True, tail)
    assert compare(on(main, 30)) == (True, ({bytes}, {bytes}), form, True, form, form, (0, 0), [])


@pytest.mark.parametrize("host", HOSTS)
def test_sendto_address_must_match_remote_addr(compare, host):
    async def main(loop):
        async with udp_pair(loop, host) as ((srv_tr, srv), (cli_tr, cli)):
            addr = srv_tr.get_extra_info("sockname")
            tos = [None, addr, addr[:2], (host, 9), list(addr)]
            res = [outcome(cli_tr.sendto, b"%d" % i, to) for i, to in enumerate(tos)]
            port = str(addr[1])
            res = [r[:2] + (r[2].replace(port, "PORT"),) if r[0] == "raise" else r for r in res]
            cli_tr.sendto(b"end")
            await until(lambda: srv.got and srv.got[-1][0] == b"end")
            return res + [[d for d, _ in srv.got]]

    res = compare(on(main))
    full = "('127.0.0.1', PORT)" if host == "127.0.0.1" else "('::1', PORT, 0, 0)"
    wrong = ("raise", ValueError, f"Invalid address: must be None or {full}")
    assert res[:5] == [OK, OK, OK if host == "127.0.0.1" else wrong, wrong, wrong]


# ------------------------------------------------------ create_datagram_endpoint options


def test_sock_bound_and_connected(compare):
    async def main(loop):
        peer, bound, connected = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in "123")
        with peer:
            peer.bind(LOCAL4)
            peer.setblocking(False)
            bound.bind(LOCAL4)
            connected.connect(peer.getsockname())
            tr1, p1 = await endpoint(loop, sock=bound)
            tr2, p2 = await endpoint(loop, sock=connected)
            res = [(bound.gettimeout(), connected.gettimeout()),
                   tr1.get_extra_info("socket").fileno() == bound.fileno(),
                   tr1.get_extra_info("sockname") == bound.getsockname(),
                   tr1.get_extra_info("peername"),
                   tr2.get_extra_info("peername") == peer.getsockname()]  # fmt: skip
            peer.sendto(b"to-bound", bound.getsockname())
            await p1.wait_for(1)
            res.append(addr_form(p1.got[0][1], peer.getsockname()))
            tr1.sendto(b"reply", p1.got[0][1])
            tr2.sendto(b"addr-ignored", ("127.0.0.1", 9))  # connected: send() to the peer
            res.append([await loop.sock_recv(peer, 100) for _ in range(2)])
            await close_all((tr1, p1), (tr2, p2))
            return res + [(bound.fileno(), connected.fileno())]

    assert compare(on(main)) == [
        (0.0, 0.0), True, True, None, True, ("tuple", 2, "127.0.0.1", True, ()),
        [b"reply", b"addr-ignored"], (-1, -1),
    ]  # fmt: skip


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT on this OS")
def test_reuse_port(loop):
    async def main():
        tr1, p1 = await endpoint(loop, local_addr=LOCAL4, reuse_port=True)
        addr = tr1.get_extra_info("sockname")
        tr2, p2 = await endpoint(loop, local_addr=addr, reuse_port=True)
        opts = [sockopt(tr, socket.SO_REUSEPORT) for tr in (tr1, tr2)]
        with pytest.raises(OSError) as refused:
            await endpoint(loop, local_addr=addr)  # without the option: address in use
        same = tr2.get_extra_info("sockname") == addr
        await close_all((tr1, p1), (tr2, p2))
        return opts, same, refused.value.errno

    opts, same, err = run(loop, main())
    assert all(opts) and same and err == errno.EADDRINUSE


def test_allow_broadcast(compare):
    async def main(loop):
        srv_tr, srv = await endpoint(loop, local_addr=LOCAL4, allow_broadcast=True)
        srv_addr = srv_tr.get_extra_info("sockname")
        plain_tr, plain = await endpoint(loop, remote_addr=srv_addr)
        cli_tr, cli = await endpoint(loop, remote_addr=srv_addr, allow_broadcast=True)
        res = [[bool(sockopt(tr, socket.SO_BROADCAST)) for tr in (srv_tr, plain_tr, cli_tr)],
               # with allow_broadcast, remote_addr is not connect()ed: sendto() uses it
               cli_tr.get_extra_info("peername"),
               outcome(cli_tr.sendto, b"x", ("127.0.0.1", 9))[:2]]  # fmt: skip
        cli_tr.sendto(b"via-remote-addr")
        res.append(await srv.wait_for(1))
        await close_all((srv_tr, srv), (plain_tr, plain), (cli_tr, cli))
        return res

    res = compare(on(main))
    assert res == [[True, False, True], None, ("raise", ValueError), [b"via-remote-addr"]]


def test_family_without_addresses_and_host_names(compare):
    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), _):
            srv_addr = srv_tr.get_extra_info("sockname")
            tr, pr = await endpoint(loop, family=socket.AF_INET)
            sock = tr.get_extra_info("socket")
            res = [sock.family, tr.get_extra_info("sockname"), tr.get_extra_info("peername")]
            tr.sendto(b"hello", srv_addr)  # binds the socket to an ephemeral port
            res.append(await pr.wait_for(1))  # the echo
            res.append(addr_form(pr.got[0][1], srv_addr))
            seen = srv.got[0][1]
            res.append((seen[0], seen[1] == sock.getsockname()[1]))
            with pytest.raises(ValueError) as no_family:
                await endpoint(loop)
            named = await endpoint(loop, local_addr=("localhost", 0))  # getaddrinfo()
            res += [str(no_family.value), named[0].get_extra_info("sockname")[0]]
            await close_all((tr, pr), named)
            return res

    res = compare(on(main))
    assert res[:-1] == [
        socket.AF_INET, ("0.0.0.0", 0), None, [b"hello"], ("tuple", 2, "127.0.0.1", True, ()),
        ("127.0.0.1", True), "unexpected address family",
    ]  # fmt: skip


# --------------------------------------------------------------------- Unix datagrams

# CPython 3.13.0 counts 8 header bytes per queued datagram in, but not out: its
# get_write_buffer_size() keeps 8 bytes per datagram that was queued (a CPython bug).
_LEAKED_HEADER = 8 * (
    PY >= (3, 13)
    and "+ 8" not in inspect.getsource(selector_events._SelectorDatagramTransport._sendto_ready)
)


def test_unix_datagram_endpoints(compare, tmp_path):
    srv_path, cli_path = unix_path(tmp_path, "srv.sock"), unix_path(tmp_path, "cli.sock")
    payloads = [bytes([i]) * (i * 997 % 50_000 + 1) for i in range(60)]
    unix = {"family": socket.AF_UNIX}

    async def main(loop):
        srv_tr, srv = await endpoint(loop, echo=True, local_addr=srv_path, **unix)
        cli_tr, cli = await endpoint(loop, local_addr=cli_path, remote_addr=srv_path, **unix)
        anon_tr, anon = await endpoint(loop, remote_addr=srv_path, **unix)
        for i in range(0, len(payloads), 5):  # the receiver queues only a few datagrams
            for data in payloads[i : i + 5]:
                cli_tr.sendto(data)
            await cli.wait_for(i + 5)
        anon_tr.sendto(b"anonymous")
        await until(lambda: srv.got[-1][0] == b"anonymous")
        info = [tr.get_extra_info(k) for tr in (srv_tr, cli_tr) for k in ("sockname", "peername")]
        res = [[d for d, _ in srv.got[:-1]] == payloads and [d for d, _ in cli.got] == payloads,
               ({a for _, a in srv.got[:-1]}, {a for _, a in cli.got}),
               info,
               outcome(cli_tr.sendto, b"x", srv_path + "x"),
               cli_tr.get_extra_info("socket").family,
               # what an unbound sender looks like (compared only)
               (srv.got[-1][1], anon_tr.get_extra_info("sockname"))]  # fmt: skip
        await close_all((srv_tr, srv), (cli_tr, cli), (anon_tr, anon))
        return res

    res = compare(on(main, 30))
    assert res[:5] == [True, ({cli_path}, {srv_path}), [srv_path, None, cli_path, srv_path],
                       ("raise", ValueError, f"Invalid address: must be None or {srv_path}"),
                       socket.AF_UNIX]  # fmt: skip


@pytest.mark.parametrize("how", ["close", "abort"])
def test_datagrams_queued_while_the_peer_queue_is_full(compare, tmp_path, how):
    # A connected Unix datagram socket gets EAGAIN once the receiver's queue is full:
    # the transport queues copies, pauses the protocol, and flushes them in order.
    path = unix_path(tmp_path, "r.sock")

    async def main(loop):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as r:
            r.bind(path)
            r.setblocking(False)
            tr, pr = await endpoint(loop, family=socket.AF_UNIX, remote_addr=path)
            tr.set_write_buffer_limits(high=5000, low=2000)
            buf, sizes = bytearray(1000), []
            for i in range(40):
                buf[:] = bytes([i]) * 1000  # reused: what is queued must be a copy
                tr.sendto(buf)
                sizes.append(tr.get_write_buffer_size())
            first = next(i for i, size in enumerate(sizes) if size)
            res = [first, sizes[-1], list(pr.pauses)]
            getattr(tr, how)()
            # (asyncio's abort() leaves a stale get_write_buffer_size() behind)
            res.append((tr.is_closing(), how == "abort" or tr.get_write_buffer_size() == sizes[-1]))
            await spin(0.02)
            res.append(list(pr.lost_calls))  # close(): not before the queue is flushed
            received = []
            while how == "close" and len(received) < 40:
                received.append(await loop.sock_recv(r, 2000))
            await pr.lost
            await spin(0.01)
            with contextlib.suppress(BlockingIOError):
                while True:
                    received.append(r.recv(2000))
            res.append([(d[0], d == bytes([d[0]]) * 1000) for d in received])
            res.append((len(pr.resumes), pr.lost_calls))
            stock = isinstance(loop, asyncio.BaseEventLoop)
            leaked = _LEAKED_HEADER * (40 - first) if stock else 0
            return res + [how == "abort" or tr.get_write_buffer_size() - leaked]

    first, size, pauses, *rest = compare(on(main))
    assert 0 < first < 40 and size == (40 - first) * (1000 + (8 if PY >= (3, 13) else 0))
    assert len(pauses) == 1 and pauses[0] > 5000
    if how == "close":
        assert rest == [(True, True), [], [(i, True) for i in range(40)], (1, [None]), 0]
    else:
        assert rest == [(True, True), [None], [(i, True) for i in range(first)], (0, [None]), True]


# --------------------------------------------------------------------------- sendto


def test_sendto_data_types(compare):
    class Local:
        pass

    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            values = ("text", 42, None, [b"a"], array.array("b", b"ab"), Local())
            refused = [outcome(cli_tr.sendto, value) for value in values]
            ints = memoryview(array.array("i", [1, 2]))
            accepted = [bytearray(b"ba"), memoryview(b"xmvx")[1:3], ints]
            accepted = [outcome(cli_tr.sendto, value) for value in accepted]
            return refused, accepted, await srv.wait_for(3), srv.types

    refused, accepted, got, types = compare(on(main))
    msg = "data argument must be a bytes-like object, not 'str'"
    assert refused[0] == ("raise", TypeError, msg)
    assert [r[:2] for r in refused] == [("raise", TypeError)] * 6
    assert accepted == [OK] * 3
    assert got == [b"ba", b"mv", array.array("i", [1, 2]).tobytes()] and types == {bytes}


def test_empty_datagrams(compare):
    async def main(loop):
        async with udp_pair(loop) as ((srv_tr, srv), (cli_tr, cli)):
            res = [outcome(cli_tr.sendto, b""), outcome(cli_tr.sendto, bytearray()),
                   outcome(cli_tr.sendto, memoryview(b"abc")[3:]),
                   outcome(cli_tr.sendto, b"", ("127.0.0.1", 9))[:2],  # address checked if sent
                   outcome(cli_tr.sendto, b"end")]  # fmt: skip
            res.append(await srv.wait_for(4 if PY >= (3, 13) else 1))
            res.append(await cli.wait_for(len(res[-1])))  # the echoes
            await spin(0.02)
            return res + [[d for d, _ in srv.got]]

    got = [b"", b"", b"", b"end"] if PY >= (3, 13) else [b"end"]
    wrong = ("raise", ValueError) if PY >= (3, 13) else OK
    assert compare(on(main)) == [OK, OK, OK, wrong, OK, got, got, got]
