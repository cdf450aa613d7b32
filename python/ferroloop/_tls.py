"""TLS on ferroloop: ``ssl=`` everywhere and ``start_tls``, on the Rust transports.

The TLS protocol is asyncio's own ``sslproto.SSLProtocol`` (the running Python's, so
every ``SSLContext`` setting, the handshake and shutdown timeouts, the error types and
messages are asyncio's), layered on a Rust ``StreamTransport``: the transport reads the
TLS records (into ``SSLProtocol``'s buffer on 3.11+, which is a ``BufferedProtocol``) and
writes them; ``SSLProtocol`` drives an ``ssl.MemoryBIO``/``SSLObject`` pair and hands the
application its ``_SSLProtocolTransport``.

On Python 3.11+ the protocol is ``TLS_PROTOCOL`` (``ferroloop._tls.SSLProtocol``), asyncio's ``SSLProtocol`` with its hot
path in Rust (``crates/ferroloop-py/src/transports/tls.rs``): while the connection is
established, the Rust transport hands each read of TLS records to the pump, which
decrypts, calls the application's ``data_received`` and writes what TLS has to send,
and the application's transport (``ferroloop._tls._SSLProtocolTransport``) encrypts and writes in Rust; the
handshake, shutdown, timeouts, flow-control changes and errors run asyncio's methods.
3.9/3.10 have an older ``sslproto`` (another state machine): their ``SSLProtocol`` is
used as it is, and so is their ``start_tls``; on 3.11+ ``start_tls`` is asyncio's steps
with ``TLS_PROTOCOL``.

* ``_make_ssl_transport`` — what ``create_connection(ssl=...)``,
  ``create_unix_connection(ssl=...)`` and ``connect_accepted_socket(ssl=...)`` call
  (asyncio's code, taken by name in ``_net``).
* ``_accept_tls_connection`` — one task per connection accepted by a TLS server, which
  awaits the handshake and reports failures only in debug mode, as asyncio does.
* ``start_tls`` — asyncio's steps (check the transport's ``_start_tls_compatible``,
  pause reading, swap in the TLS protocol, await the handshake): ``BaseEventLoop.start_tls``
  itself before 3.11, the same steps with ``TLS_PROTOCOL`` from 3.11 on.

Invariants: the raw transport's protocol is the ``SSLProtocol``; the application only
ever sees ``SSLProtocol``'s app transport.
"""

from __future__ import annotations

import sys
from asyncio import base_events, constants, sslproto

from . import _ferroloop

if sys.version_info >= (3, 11):

    # Named as asyncio's classes (exception contexts and reprs show the class name);
    # both are subclasses of asyncio's, so isinstance checks hold.

    class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
        """The application's transport, with ``write`` in Rust (same checks, same
        effect as asyncio's)."""

        write = _ferroloop._tls_app_write

    class SSLProtocol(sslproto.SSLProtocol):
        """asyncio's ``SSLProtocol``; the Rust transport gives its records to the Rust
        pump instead of calling ``get_buffer``/``buffer_updated`` (see the module docs)."""

        def _get_app_transport(self):
            created = self._app_transport is None
            transport = super()._get_app_transport()
            if created:
                transport.__class__ = _SSLProtocolTransport
            return transport

    TLS_PROTOCOL = SSLProtocol
else:
    TLS_PROTOCOL = None  # the Rust transports check for it (see the module docs)
_PROTOCOL = TLS_PROTOCOL or sslproto.SSLProtocol

# 3.11+ SSLProtocol takes a shutdown timeout; 3.9/3.10's has none.
_HAS_SHUTDOWN_TIMEOUT = hasattr(constants, "SSL_SHUTDOWN_TIMEOUT")
_SSL_SHUTDOWN_TIMEOUT = getattr(constants, "SSL_SHUTDOWN_TIMEOUT", 30.0)


def _timeouts(handshake, shutdown):
    kwargs = {"ssl_handshake_timeout": handshake}
    if _HAS_SHUTDOWN_TIMEOUT:
        kwargs["ssl_shutdown_timeout"] = shutdown
    return kwargs


class TLSMethods:
    """The TLS parts of ``ferroloop.Loop`` (a mixin; see the module docs)."""

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=_SSL_SHUTDOWN_TIMEOUT,
    ):
        ssl_protocol = _PROTOCOL(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            **_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout),
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def _accept_tls_connection(
        self, protocol_factory, conn, addr, server, sslcontext, handshake, shutdown
    ):
        protocol = transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(
                conn,
                protocol,
                sslcontext,
                waiter=waiter,
                server_side=True,
                extra={"peername": addr},
                server=server,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=shutdown,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                waiter = None  # an exception kept in the future would keep the protocol
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            if self.get_debug():
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                self.call_exception_handler(context)


    if TLS_PROTOCOL is not None:

        async def start_tls(
            self,
            transport,
            protocol,
            sslcontext,
            *,
            server_side=False,
            server_hostname=None,
            ssl_handshake_timeout=None,
            ssl_shutdown_timeout=None,
        ):
            """Upgrade ``transport`` to TLS; return the transport ``protocol`` uses from
            now on. asyncio's steps, checks and messages, with ``TLS_PROTOCOL`` (asyncio's
            own ``start_tls`` builds a plain ``SSLProtocol``)."""
            ssl = sslproto.ssl
            if ssl is None:
                raise RuntimeError("Python ssl module is not available")
            if not isinstance(sslcontext, ssl.SSLContext):
                raise TypeError(
                    "sslcontext is expected to be an instance of ssl.SSLContext, "
                    f"got {sslcontext!r}"
                )
            if not getattr(transport, "_start_tls_compatible", False):
                raise TypeError(f"transport {transport!r} is not supported by start_tls()")
            waiter = self.create_future()
            tls_protocol = TLS_PROTOCOL(
                self,
                protocol,
                sslcontext,
                waiter,
                server_side,
                server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
                call_connection_made=False,
            )
            # Nothing may reach the TLS protocol before its connection_made: reading
            # stays paused until both scheduled steps ran, in this order.
            transport.pause_reading()
            transport.set_protocol(tls_protocol)
            made = self.call_soon(tls_protocol.connection_made, transport)
            resumed = self.call_soon(transport.resume_reading)
            try:
                await waiter
            except BaseException:
                transport.close()
                made.cancel()
                resumed.cancel()
                raise
            return tls_protocol._app_transport

    else:
        start_tls = base_events.BaseEventLoop.start_tls
