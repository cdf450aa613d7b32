"""Networking on ferroloop: the Python side of the Rust transports.

What is where:

* The hot path is Rust: ``StreamTransport`` (``crates/ferroloop-py/src/transports``) reads
  into ``data_received``/``BufferedProtocol`` and writes through a Rust write buffer, with
  the loop's driver calling it on readiness. No Python of ours runs per read or write.
* This module is API shape, run once per connection or per call: building a transport
  for a connected socket (``_make_socket_transport``), the accept loop of servers
  (``_start_serving``/``_stop_serving``), and the ``sock_*`` coroutines.
* Address resolution, happy eyeballs, ``create_connection``/``create_server``/
  ``connect_accepted_socket``, ``asyncio.Server`` and the sendfile fallbacks are the
  running Python's own asyncio code (``NETWORK_FROM_ASYNCIO``), which calls the methods
  here, so their checks, errors and messages are asyncio's on every version.

Invariants: ``loop._transports`` maps an fd to the live transport that owns it, and
``add_reader``/``add_writer``/``remove_*`` refuse such an fd, as asyncio does; a
``sock_*`` wait removes its fd callback when it ends (done, failed or cancelled) only if
the callback is still its own, so a cancelled wait can never take away a newer owner's
registration after the fd number was reused.
"""

from __future__ import annotations

import errno
import inspect
import os
import selectors
import socket
import sys
from asyncio import (
    base_events,
    constants,
    futures,
    selector_events,
    trsock,
    unix_events,
)

from ._ferroloop import DatagramTransport, StreamTransport
from ._transports import wrap_datagram, wrap_stream

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

# asyncio.BaseEventLoop (and the Unix loop's) networking methods reused unchanged.
NETWORK_FROM_ASYNCIO = (
    "_check_sendfile_params",
    "_connect_sock",
    "_create_connection_transport",
    "_create_server_getaddrinfo",
    "_ensure_resolved",
    "_sendfile_fallback",
    "_sock_sendfile_fallback",
    "connect_accepted_socket",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "sendfile",
    "sock_sendfile",
)
UNIX_FROM_ASYNCIO = (
    "_sock_add_cancellation_callback",
    "_sock_sendfile_native",  # os.sendfile, with add_writer while the socket is full
    "_sock_sendfile_native_impl",
    "_sock_sendfile_update_filepos",
    "create_unix_connection",
    "create_unix_server",
)
# Pauses reading, waits for the transport's buffer to flush, then sock_sendfile.
SELECTOR_FROM_ASYNCIO = ("_sendfile_native",)

# Python 3.13's datagram transports send empty datagrams and count 8 header bytes per
# queued datagram in get_write_buffer_size(); earlier ones drop empty datagrams.
_DATAGRAMS_3_13 = sys.version_info >= (3, 13)

# Python 3.13's Server._attach/_detach take the transport.
_SERVER_WANTS_TRANSPORT = (
    len(inspect.signature(base_events.Server._attach).parameters) > 1
)

# asyncio's default TLS shutdown timeout (the constant is new in 3.11; 3.9's SSLProtocol
# has no shutdown timeout, and the value is then unused).
_SSL_SHUTDOWN_TIMEOUT = getattr(constants, "SSL_SHUTDOWN_TIMEOUT", 30.0)

# accept() errors that mean "out of resources": back off instead of spinning.
_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPT_BACKOFF = 1.0


def _check_ssl_socket(sock):
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _transport_info(sock, extra):
    """A transport's extra info: ``socket``, ``sockname``, ``peername``, then ``extra``."""
    info = {"socket": trsock.TransportSocket(sock)}
    try:
        info["sockname"] = sock.getsockname()
    except OSError:
        info["sockname"] = None
    if not extra or "peername" not in extra:
        try:
            info["peername"] = sock.getpeername()
        except OSError:
            info["peername"] = None
    if extra:
        info.update(extra)
    return info


def _numeric_host(host):
    """Whether ``host`` is an IPv4 or IPv6 address literal (no resolver needed)."""
    if isinstance(host, bytes):
        try:
            host = host.decode("idna")
        except UnicodeError:
            return False
    if not isinstance(host, str):
        return False
    for family, text in ((socket.AF_INET, host), (socket.AF_INET6, host.partition("%")[0])):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def _set_tcp_nodelay(sock):
    if (
        sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
        and sock.proto in (0, socket.IPPROTO_TCP)
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NetworkMethods:
    """The networking methods of ``ferroloop.Loop`` (a mixin; see the module docs)."""

    # -- transports ------------------------------------------------------------------

    def _ensure_fd_no_transport(self, fd):
        transport = self._transports.get(fd)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        info = _transport_info(sock, extra)
        _set_tcp_nodelay(sock)
        core = StreamTransport(
            self,
            sock,
            fd,
            protocol,
            info,
            server,
            _SERVER_WANTS_TRANSPORT,
        )
        transport = wrap_stream(core)
        if server is not None:
            server._attach(transport) if _SERVER_WANTS_TRANSPORT else server._attach()
        self._start_transport(fd, transport, protocol, waiter)
        return transport

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        info = _transport_info(sock, extra)
        core = DatagramTransport(
            self,
            sock,
            fd,
            protocol,
            info,
            address,
            bool(info["peername"]),
            _DATAGRAMS_3_13,
            8 if _DATAGRAMS_3_13 else 0,
        )
        transport = wrap_datagram(core)
        self._start_transport(fd, transport, protocol, waiter)
        return transport

    def _start_transport(self, fd, transport, protocol, waiter):
        """asyncio's order: connection_made, then reading starts, then the waiter."""
        self._transports[fd] = transport
        self.call_soon(protocol.connection_made, transport)
        self.call_soon(transport._start_reading)
        if waiter is not None:
            self.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # -- servers ---------------------------------------------------------------------

    def _start_serving(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=_SSL_SHUTDOWN_TIMEOUT,
    ):
        tls = None
        if sslcontext is not None:
            tls = (sslcontext, ssl_handshake_timeout, ssl_shutdown_timeout)
        self._serving[sock.fileno()] = server
        self._add_fd_callback(
            selectors._fileobj_to_fd(sock),
            False,
            self._accept_ready,
            (protocol_factory, sock, server, backlog, tls),
        )

    def _accept_ready(self, protocol_factory, sock, server, backlog, tls):
        """Accepts up to ``backlog`` connections (the listening socket is readable)."""
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                # Out of fds or memory: stop accepting for a while instead of spinning on
                # a listening socket that stays readable.
                self.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                self._remove_fd_callback(sock.fileno(), False)
                sslcontext, handshake_timeout, shutdown_timeout = tls or (
                    None,
                    constants.SSL_HANDSHAKE_TIMEOUT,
                    _SSL_SHUTDOWN_TIMEOUT,
                )
                self.call_later(
                    _ACCEPT_BACKOFF,
                    self._start_serving,
                    protocol_factory,
                    sock,
                    sslcontext,
                    server,
                    backlog,
                    handshake_timeout,
                    shutdown_timeout,
                )
                return
            if tls is not None:
                # The TLS handshake is awaited: one task per connection, as in asyncio.
                self.create_task(
                    self._accept_tls_connection(protocol_factory, conn, addr, server, *tls)
                )
                continue
            try:
                protocol = protocol_factory()
                self._make_socket_transport(conn, protocol, extra={"peername": addr}, server=server)
            except (SystemExit, KeyboardInterrupt):
                conn.close()
                raise
            except BaseException as exc:
                conn.close()
                # asyncio reports this only in debug mode (the peer just sees EOF).
                if self.get_debug():
                    self.call_exception_handler(
                        {
                            "message": "Error on transport creation for incoming connection",
                            "exception": exc,
                            "socket": trsock.TransportSocket(conn),
                        }
                    )

    def _stop_serving(self, sock):
        self._serving.pop(sock.fileno(), None)
        self._remove_fd_callback(selectors._fileobj_to_fd(sock), False)
        # Python 3.13's create_unix_server(cleanup_socket=True) records the path's inode:
        # remove the file only if it is still the one this server bound.
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        sock.close()
        if path:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass

    # -- name resolution --------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """As asyncio's, but an address literal is resolved at once, without the thread
        pool (``AI_NUMERICHOST``: the resolver is never asked)."""
        if _numeric_host(host):
            return socket.getaddrinfo(
                host, port, family, type, proto, flags | socket.AI_NUMERICHOST
            )
        return await base_events.BaseEventLoop.getaddrinfo(
            self, host, port, family=family, type=type, proto=proto, flags=flags
        )

    # -- low-level sockets -----------------------------------------------------------

    def _check_sock(self, sock):
        _check_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    async def _sock_wait(self, sock, writer, attempt, try_first=True):
        """``attempt()`` now and each time ``sock`` is ready, until it does not raise
        ``BlockingIOError``; its result or error is the result."""
        if try_first:
            try:
                return attempt()
            except (BlockingIOError, InterruptedError):
                pass
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        fut = self.create_future()

        def on_ready():
            if fut.done():
                return
            try:
                result = attempt()
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        handle = self._add_fd_callback(fd, writer, on_ready, ())
        try:
            return await fut
        finally:
            if self._get_fd_callback(fd, writer) is handle:
                self._remove_fd_callback(fd, writer)
            fut = None  # no reference cycle through the traceback

    async def sock_recv(self, sock, n):
        # The recv and the wait are Rust's (crates/ferroloop-py/src/sock.rs): no
        # BlockingIOError, no Python callback per readiness.
        self._check_sock(sock)
        fd = sock.fileno()
        data = self._sock_try_recv(fd, n)
        if data is not None:
            return data
        self._ensure_fd_no_transport(fd)
        return await self._sock_native_wait(fd, False, n, None, 0)

    async def _sock_native_wait(self, fd, writer, n, data, sent):
        """Awaits the Rust wait for ``fd`` (``sock_recv(n)``, or the rest of
        ``sock_sendall(data)`` after ``sent`` bytes); a coroutine that stops waiting
        (cancelled) unregisters it, so no fd stays watched for nobody."""
        fut = self._sock_start_wait(fd, n, data, sent)
        try:
            return await fut
        except BaseException:
            self._sock_stop_waiting(fd, writer, fut)
            raise
        finally:
            fut = None  # no reference cycle through the traceback

    async def sock_recv_into(self, sock, buf):
        self._check_sock(sock)
        return await self._sock_wait(sock, False, lambda: sock.recv_into(buf))

    async def sock_recvfrom(self, sock, bufsize):
        self._check_sock(sock)
        return await self._sock_wait(sock, False, lambda: sock.recvfrom(bufsize))

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        self._check_sock(sock)
        nbytes = nbytes or len(buf)
        return await self._sock_wait(sock, False, lambda: sock.recvfrom_into(buf, nbytes))

    async def sock_sendall(self, sock, data):
        self._check_sock(sock)
        if type(data) is bytes:  # the usual case: sends and waits in Rust (see sock_recv)
            fd = sock.fileno()
            sent = self._sock_try_send_all(fd, data)
            if sent == len(data):
                return
            self._ensure_fd_no_transport(fd)
            await self._sock_native_wait(fd, True, 0, data, sent)
            return
        # Any other buffer is sent through a memoryview, which sees later changes to a
        # mutable buffer as asyncio's does.
        view = memoryview(data).cast("B")
        sent = 0

        def attempt():
            nonlocal sent
            while sent < len(view):
                sent += sock.send(view[sent:])

        try:
            await self._sock_wait(sock, True, attempt)
        finally:
            view.release()

    async def sock_sendto(self, sock, data, address):
        self._check_sock(sock)
        return await self._sock_wait(sock, True, lambda: sock.sendto(data, address))

    async def sock_connect(self, sock, address):
        self._check_sock(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self
            )
            address = resolved[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def connected():
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")

        await self._sock_wait(sock, True, connected, try_first=False)

    async def sock_accept(self, sock):
        self._check_sock(sock)

        def attempt():
            conn, address = sock.accept()
            conn.setblocking(False)
            return conn, address

        return await self._sock_wait(sock, False, attempt)


for _name in NETWORK_FROM_ASYNCIO:
    setattr(NetworkMethods, _name, getattr(base_events.BaseEventLoop, _name))
for _name in UNIX_FROM_ASYNCIO:
    setattr(NetworkMethods, _name, getattr(unix_events._UnixSelectorEventLoop, _name))
for _name in SELECTOR_FROM_ASYNCIO:
    setattr(NetworkMethods, _name, getattr(selector_events.BaseSelectorEventLoop, _name))
del _name
