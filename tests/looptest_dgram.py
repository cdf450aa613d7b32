"""Helpers shared by the datagram tests (``test_net_datagram*.py``): a recording
``DatagramProtocol``, endpoint factories and address checks.

Deliberately unusual module name (see ``looptest_support``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from looptest_net import run

LOCAL4 = ("127.0.0.1", 0)
OK = ("ok", None)


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


NO_IPV6 = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback address (::1)"
)
HOSTS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6", marks=NO_IPV6)]


class Dgram(asyncio.DatagramProtocol):
    """Records every callback; with ``echo`` sends each datagram back to its sender."""

    def __init__(self, loop, echo=False):
        self.loop, self.echo, self.transport, self._want = loop, echo, None, None
        self.got, self.types, self.errors, self.lost_calls = [], set(), [], []
        self.pauses, self.resumes, self.events = [], [], []  # pauses/resumes: buffer sizes
        self.made, self.lost = loop.create_future(), loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        self.types.add(type(data))
        self.got.append((data, addr))
        if self.echo and addr:
            self.transport.sendto(data, addr)
        if self._want and len(self.got) >= self._want[0] and not self._want[1].done():
            self._want[1].set_result(None)

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.pauses.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.resumes.append(self.transport.get_write_buffer_size())

    async def wait_for(self, count, timeout=5.0):
        """The data of the datagrams received, once there are ``count`` of them."""
        if len(self.got) < count:
            self._want = (count, self.loop.create_future())
            await asyncio.wait_for(self._want[1], timeout)
        return [data for data, _ in self.got]


def on(main, timeout=10.0):
    """A ``compare`` scenario: runs ``main(loop)``."""
    return lambda loop: run(loop, main(loop), timeout)


async def endpoint(loop, echo=False, cls=Dgram, **kwargs):
    tr, pr = await loop.create_datagram_endpoint(lambda: cls(loop, echo=echo), **kwargs)
    assert pr.transport is tr and pr.events == ["made"]
    return tr, pr


async def close_all(*pairs):
    for tr, _ in pairs:
        tr.close()
    for _, pr in pairs:
        await pr.lost


@contextlib.asynccontextmanager
async def udp_pair(loop, host="127.0.0.1"):
    """An echoing server endpoint and a client endpoint connected to it; closed on exit."""
    srv = await endpoint(loop, echo=True, local_addr=(host, 0))
    cli = await endpoint(loop, remote_addr=srv[0].get_extra_info("sockname")[:2])
    try:
        yield srv, cli
    finally:
        await close_all(srv, cli)


def sockopt(tr, option):
    return tr.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, option)


def addr_form(addr, expected):
    """What is comparable about an address across runs (ports differ)."""
    return (type(addr).__name__, len(addr), addr[0], addr == expected, addr[2:])
