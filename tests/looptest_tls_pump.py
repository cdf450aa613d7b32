"""Helpers for the TLS pump tests (``test_tls_pump_writes.py``, ``test_tls_pump_reads.py``):
a recording protocol that also journals callback order, a TLS connection set up on both
ends, a TLS object class that refuses or cuts writes on demand, a listener with small
socket buffers.

Deliberately unusual module name (see ``looptest_support``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys

import pytest

from looptest_net import Recorder, until
from looptest_support import exc_info_tuple
from looptest_tls import client_context, tls_server


#: For the tests that rely on 3.11+'s ``sslproto`` (the one the Rust pump follows; the
#: older one has other flow control, close and error semantics).
needs_311_sslproto = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="asyncio.sslproto before 3.11 is another state machine (and ferroloop has "
    "no Rust TLS pump there)",
)

KB = 1024


class Journal(Recorder):
    """A ``Recorder`` that also keeps the order of its callbacks (a run of
    ``data_received`` calls is one ``"data"`` entry), counts ``data_received`` calls,
    and optionally writes ``greeting`` from ``connection_made`` or echoes."""

    def __init__(self, loop, greeting=b"", echo=False, **kwargs):
        super().__init__(loop, **kwargs)
        self.greeting = greeting
        self.echo = echo
        self.events = []
        self.data_calls = 0
        self.buffered_in_made = None

    def connection_made(self, transport):
        self.events.append("made")
        super().connection_made(transport)
        if self.greeting:
            transport.write(self.greeting)
        self.buffered_in_made = transport.get_write_buffer_size()

    def data_received(self, data):
        super().data_received(data)
        self.data_calls += 1
        if self.events[-1:] != ["data"]:
            self.events.append("data")
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")
        return super().eof_received()

    def connection_lost(self, exc):
        self.events.append(("lost", exc_info_tuple(exc)))
        super().connection_lost(exc)

    def pause_writing(self):
        self.events.append("pause")
        super().pause_writing()

    def resume_writing(self):
        self.events.append("resume")
        super().resume_writing()


@contextlib.asynccontextmanager
async def tls_connection(loop, certs, client=Journal, server=Journal, **connect_kwargs):
    """A TLS server and one client connected to it. ``client``/``server`` are called
    with the loop to make the protocols. Yields ``(transport, client_protocol,
    server_protocol)`` once *both* ends' ``connection_made`` ran, so that what the
    client sends from then on reaches the server in the ``WRAPPED`` state (the pump)."""
    served = []

    def factory():
        served.append(server(loop))
        return served[-1]

    srv, connect = await tls_server(loop, factory, certs)
    async with srv:
        transport, protocol = await connect(lambda: client(loop), **connect_kwargs)
        await until(lambda: served and served[0].transport is not None)
        yield transport, protocol, served[0]


async def close_both(transport, protocol, peer):
    transport.close()
    return await protocol.lost, await peer.lost


class Gate:
    """Switches for ``gated_object_class``: while ``stalled`` the TLS object's ``write``
    raises ``SSLWantReadError``; with ``limit`` it takes at most that many bytes per
    call; ``broken`` is an exception to raise instead. ``calls`` counts the calls."""

    def __init__(self):
        self.stalled = False
        self.limit = None
        self.broken = None
        self.calls = 0


def gated_object_class(gate):
    class GatedSSLObject(ssl.SSLObject):
        def write(self, data):
            gate.calls += 1
            if gate.broken is not None:
                raise gate.broken
            if gate.stalled:
                raise ssl.SSLWantReadError("the TLS object wants to read first")
            if gate.limit is not None:
                data = data[: gate.limit]
            return super().write(data)

    return GatedSSLObject


def gated_client_context(certs, gate):
    ctx = client_context(certs)
    ctx.sslobject_class = gated_object_class(gate)
    return ctx


class BytesSubclass(bytes):
    """A ``write()`` payload that is bytes-like without being exactly ``bytes``."""


def small_buffer_listener():
    """A listening TCP socket whose accepted sockets have a 16 KiB receive buffer."""
    lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KB)  # inherited by accept
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(8)
    lsn.setblocking(False)
    return lsn

