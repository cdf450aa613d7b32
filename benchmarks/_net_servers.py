#!/usr/bin/env python3
"""The servers that ``net.py`` benchmarks; each runs alone in a worker process.

    python _net_servers.py --probe LOOP
    python _net_servers.py LOOP KIND tcp|unix [UNIX_PATH]

KIND is one of ``SERVER_KINDS``; ``https`` is the ``http`` server over TLS (``ssl=`` on
``create_server``, a self-signed EC certificate the worker makes with the ``openssl``
command at start-up).  The worker builds a loop of kind LOOP, starts the server
and prints ``@@READY@@{"address": ...}`` once it accepts connections.  It serves until its
stdin reaches EOF (the parent closes the pipe), then prints one result line (see
``_loops.result_line``) with what it counted: bytes echoed, HTTP requests answered,
connections, errors the loop reported, and whether the loop broke a protocol contract.

A loop that lacks an API a server needs (``NotImplementedError``, or a loop method that
does not exist) reports ``{"ok": false, "na": "<reason>"}``: the harness prints "n/a"
for that cell instead of failing the run.  Everything else that goes wrong is an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import traceback

from _loops import loop_version, make_loop, result_line

SERVER_KINDS = ("proto", "buffered", "streams", "sock", "http", "https", "aiohttp")
# Deliberately wrong servers, for ``net.py --self-check`` (the checks must catch each).
FAULTY_KINDS = ("bad-corrupt", "bad-drop", "bad-reorder", "bad-extra", "bad-noclose",
                "bad-http")
READY_MARK = "@@READY@@"

# What the HTTP server answers to every request (wrk_check.lua checks the body).
HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
HTTP_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

# Size of the BufferedProtocol's receive buffer and of the streams server's read().
BUF_SIZE = 256 * 1024
STREAM_READ = 64 * 1024


class Stats:
    """Counters shared by every connection of the server (plain attributes: cheap)."""

    def __init__(self):
        self.bytes = 0          # bytes received (and echoed) by the echo servers
        self.requests = 0       # HTTP requests answered
        self.conns = 0          # connections accepted
        self.lost_with_error = []   # connection_lost(exc) with exc set (first few)
        self.contract = []      # protocol contract broken by the loop (-> n/a or error)
        self.bad_requests = 0


ST = Stats()


def _note_lost(exc):
    if exc is not None and len(ST.lost_with_error) < 5:
        ST.lost_with_error.append(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------
# Echo servers
# --------------------------------------------------------------------------

class EchoProtocol(asyncio.Protocol):
    """asyncio.Protocol echo: write back whatever data_received() got."""

    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport
        ST.conns += 1

    def data_received(self, data):
        ST.bytes += len(data)
        self.transport.write(data)

    def connection_lost(self, exc):
        _note_lost(exc)


class BufferedEcho(asyncio.BufferedProtocol):
    """asyncio.BufferedProtocol echo: the loop reads into our buffer; we write a copy
    of what arrived (the buffer is reused by the next read)."""

    __slots__ = ("transport", "buf")

    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray(BUF_SIZE)
        ST.conns += 1

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        ST.bytes += nbytes
        self.transport.write(self.buf[:nbytes])

    def data_received(self, data):
        # A loop that supports BufferedProtocol never calls this.  Keep echoing (so the
        # client does not fail), but report the cell as n/a: it did not measure buffers.
        if not ST.contract:
            ST.contract.append("the loop called data_received() on a BufferedProtocol "
                               "(no BufferedProtocol support)")
        ST.bytes += len(data)
        self.transport.write(data)

    def connection_lost(self, exc):
        _note_lost(exc)


async def stream_echo(reader, writer):
    """asyncio streams echo: read(), write(), drain() until EOF, then close."""
    ST.conns += 1
    try:
        while True:
            data = await reader.read(STREAM_READ)
            if not data:
                break
            ST.bytes += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError) as e:
        _note_lost(e)
    finally:
        writer.close()


class SockEchoServer:
    """The ``sock_*`` echo style: a task running ``sock_accept`` on a listening socket
    and one task per connection running ``sock_recv``/``sock_sendall``; with the
    ``close()``/``wait_closed()`` that ``serve()`` expects of a server."""

    def __init__(self, loop, listening):
        self.loop = loop
        self.listening = listening
        self.handlers = set()
        self.acceptor = loop.create_task(self._accept())

    async def _accept(self):
        while True:
            conn, _ = await self.loop.sock_accept(self.listening)
            conn.setblocking(False)
            task = self.loop.create_task(self._echo(conn))
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)

    async def _echo(self, conn):
        ST.conns += 1
        with conn:
            try:
                while True:
                    data = await self.loop.sock_recv(conn, BUF_SIZE)
                    if not data:
                        break
                    ST.bytes += len(data)
                    await self.loop.sock_sendall(conn, data)
            except (ConnectionError, OSError) as e:
                _note_lost(e)

    def close(self):
        self.acceptor.cancel()
        for task in self.handlers:
            task.cancel()

    async def wait_closed(self):
        await asyncio.gather(self.acceptor, *self.handlers, return_exceptions=True)
        self.listening.close()


def _listening_unix_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1024)
    s.setblocking(False)
    return s


# --------------------------------------------------------------------------
# Minimal HTTP/1.1 keep-alive server
# --------------------------------------------------------------------------

try:
    import httptools  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the venv
    httptools = None

HTTP_PARSER = "httptools" if httptools is not None else "builtin"


class HttpProtocol(asyncio.Protocol):
    """Answers every request with HTTP_RESPONSE, keeping the connection open."""

    __slots__ = ("transport", "parser", "pending")

    def connection_made(self, transport):
        self.transport = transport
        ST.conns += 1
        if httptools is not None:
            self.parser = httptools.HttpRequestParser(self)
        else:
            self.pending = b""

    def data_received(self, data):
        if httptools is not None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self._bad()
            return
        # Builtin parser: requests without a body (GET/HEAD), possibly pipelined.
        buf = self.pending + data if self.pending else data
        start = n = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if not (buf.startswith(b"GET ", start) or buf.startswith(b"HEAD ", start)):
                self._bad()
                return
            n += 1
            start = end + 4
        self.pending = buf[start:]
        if n:
            ST.requests += n
            self.transport.write(HTTP_RESPONSE * n if n > 1 else HTTP_RESPONSE)
        elif len(self.pending) > 65536:
            self._bad()

    # httptools callback
    def on_message_complete(self):
        ST.requests += 1
        self.transport.write(HTTP_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _bad(self):
        ST.bad_requests += 1
        self.transport.write(HTTP_BAD)
        self.transport.close()

    def connection_lost(self, exc):
        pass  # wrk ends its run by closing (or resetting) its connections


# --------------------------------------------------------------------------
# Faulty servers (self-check of the load generators)
# --------------------------------------------------------------------------

class FaultyEcho(EchoProtocol):
    """Echoes correctly, except that the 50th chunk is damaged the way ``mode`` says."""

    __slots__ = ("mode", "chunks")

    def __init__(self, mode):
        self.mode = mode
        self.chunks = 0

    def data_received(self, data):
        self.chunks += 1
        if self.chunks == 50 and len(data) >= 2:
            if self.mode == "bad-corrupt":
                i = min(7, len(data) - 1)
                data = data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:]
            elif self.mode == "bad-drop":
                data = data[:-1]
            elif self.mode == "bad-reorder":
                half = len(data) // 2
                data = data[half:] + data[:half]
            elif self.mode == "bad-extra":
                data = data + b"!"
        super().data_received(data)

    def eof_received(self):
        if self.mode == "bad-noclose":
            return True  # keep the connection half-open and never close it
        return None


class FaultyHttp(HttpProtocol):
    """Every 100th response has a wrong body (same length)."""

    __slots__ = ()

    def on_message_complete(self):
        if (ST.requests + 1) % 100 == 0:
            ST.requests += 1
            self.transport.write(HTTP_RESPONSE[:-len(HTTP_BODY)] + HTTP_BODY.swapcase())
        else:
            super().on_message_complete()

    def data_received(self, data):
        if httptools is None:
            raise RuntimeError("the faulty HTTP server needs httptools")
        super().data_received(data)


# --------------------------------------------------------------------------
# aiohttp.web hello world
# --------------------------------------------------------------------------

class AiohttpServer:
    """``aiohttp.web`` answering ``GET /`` with HTTP_BODY, served on a given socket."""

    def __init__(self, runner):
        self.runner = runner

    @classmethod
    async def start(cls, sock):
        from aiohttp import web

        async def hello(request):
            ST.requests += 1
            return web.Response(body=HTTP_BODY, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return cls(runner)

    def close(self):
        pass  # wait_closed() does the work: aiohttp's cleanup is a coroutine

    async def wait_closed(self):
        await self.runner.cleanup()


# --------------------------------------------------------------------------
# Worker main
# --------------------------------------------------------------------------

class NotAvailable(Exception):
    """The loop lacks something this server needs (reported as n/a)."""


def _server_tls_context():
    """A server context with a fresh self-signed certificate (wrk does not verify it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise NotAvailable("the https server needs the openssl command")
    with tempfile.TemporaryDirectory(prefix="ferroloop-bench-tls-") as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    return ctx


def _listening_tcp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    s.setblocking(False)
    return s


async def start_server(loop, kind, family, path):
    """Start the server; return (server, address reported to the parent)."""
    if family == "tcp":
        sock = _listening_tcp_socket()
        address = "%s:%d" % sock.getsockname()[:2]
        where = {"sock": sock}
    else:
        if os.path.exists(path):
            os.unlink(path)
        address = path
        where = {"path": path}
    try:
        if kind == "streams":
            opener = asyncio.start_server if family == "tcp" else asyncio.start_unix_server
            server = await opener(stream_echo, **where, limit=STREAM_READ, backlog=1024)
        elif kind in ("sock", "aiohttp"):
            sock = where.get("sock") or _listening_unix_socket(path)
            server = (SockEchoServer(loop, sock) if kind == "sock"
                      else await AiohttpServer.start(sock))
        else:
            factory = {"proto": EchoProtocol, "buffered": BufferedEcho, "http": HttpProtocol,
                       "https": HttpProtocol,
                       "bad-http": FaultyHttp}.get(kind) or (lambda: FaultyEcho(kind))
            create = loop.create_server if family == "tcp" else loop.create_unix_server
            tls = {"ssl": _server_tls_context()} if kind == "https" else {}
            server = await create(factory, **where, backlog=1024, **tls)
    except NotImplementedError as e:
        api = "create_server" if family == "tcp" else "create_unix_server"
        detail = f": {e}" if str(e) else ""
        raise NotAvailable(f"{api} raises NotImplementedError{detail}") from e
    except AttributeError as e:
        if "create_" in str(e):
            raise NotAvailable(f"the loop has no {e}") from e
        raise
    return server, address


def _stdin_watcher(loop, stopped):
    """Block in a thread until the parent closes our stdin, then stop the server."""
    try:
        sys.stdin.buffer.read()
    finally:
        try:
            loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))
        except RuntimeError:
            pass  # loop already closed


def serve(loop_name, kind, family, path):
    import resource

    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    handler_errors = []

    def on_error(lp, context):
        if len(handler_errors) < 5:
            exc = context.get("exception")
            msg = context.get("message", "")
            handler_errors.append(f"{msg}: {type(exc).__name__}: {exc}" if exc else msg)

    loop.set_exception_handler(on_error)

    async def main():
        stopped = loop.create_future()
        server, address = await start_server(loop, kind, family, path)
        threading.Thread(target=_stdin_watcher, args=(loop, stopped), daemon=True,
                         name="stdin-watcher").start()
        sys.stdout.write(READY_MARK + json.dumps({"address": address, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        await stopped
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass  # open connections (3.12+ waits for them); they do not matter here

    try:
        loop.run_until_complete(main())
    except NotAvailable as e:
        return {"ok": False, "na": str(e)}
    finally:
        asyncio.set_event_loop(None)
        try:
            loop.close()
        except Exception:
            pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"ok": True, "bytes": ST.bytes, "requests": ST.requests, "conns": ST.conns,
            "bad_requests": ST.bad_requests, "lost_with_error": ST.lost_with_error,
            "contract": ST.contract, "handler_errors": handler_errors,
            "http_parser": HTTP_PARSER if kind in ("http", "https") else None,
            "version": loop_version(loop_name),
            "rusage": {"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kib": ru.ru_maxrss}}


def probe(loop_name):
    loop = make_loop(loop_name)
    try:
        loop.run_until_complete(asyncio.sleep(0))
        cls = type(loop)
        return {"ok": True, "version": loop_version(loop_name),
                "loop_class": f"{cls.__module__}.{cls.__qualname__}"}
    finally:
        loop.close()


def main(argv):
    import faulthandler  # a crashing loop then prints the Python stack

    faulthandler.enable()
    try:
        if argv[:1] == ["--probe"]:
            res = probe(argv[1])
        else:
            loop_name, kind, family = argv[:3]
            if kind not in SERVER_KINDS + FAULTY_KINDS or family not in ("tcp", "unix"):
                raise SystemExit(f"bad arguments {argv!r}")
            res = serve(loop_name, kind, family, argv[3] if family == "unix" else None)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        tb = "\n".join(traceback.format_exc().rstrip().splitlines()[-12:])
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb}
    sys.stdout.write(result_line(res) + "\n")
    sys.stdout.flush()
    return 0 if res.get("ok") or res.get("na") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
