"""HTTP and WebSocket libraries over real loopback sockets: aiohttp, uvicorn (FastAPI and
plain Starlette apps) queried by httpx, and websockets.

Each test runs on stock asyncio and on ferroloop (the ``loop`` fixture of ``conftest.py``);
server and client run on the same loop, over 127.0.0.1 (port 0) or a Unix socket.

Covered, aiohttp (``web.AppRunner`` + ``TCPSite``/``UnixSite``, ``ClientSession``): GET
with a query string and POST of JSON, an 8 MB request body and an 8 MB response body
checked by SHA-256 (the response also read slowly, so that the client pauses reading), a
chunked streaming response, 50 concurrent requests, keep-alive reuse of one connection, a
WebSocket echo with text, binary and a server-chosen close code, a client that disconnects
mid-response (the handler sees the reset, the server keeps serving), shutdown with open
connections (a WebSocket closed with 1001 by ``on_shutdown``, an idle keep-alive
connection and an in-flight request), static files (``add_static``: ``web.FileResponse``,
which uses ``loop.sendfile``; a full 8 MB file, a Range request, a 304), and the same app
on a UnixSite.

Covered, aiohttp over TLS (``TCPSite(ssl_context=...)`` and a ``ClientSession`` whose
connector trusts the test CA: ``tls_certs`` of ``looptest_services``; the certificates and
contexts come from ``looptest_tls``): the handler sees an encrypted request, the client
sees the server's certificate, 40 concurrent requests, a 4 MB request body and a 4 MB
response body checked by SHA-256 (the response also read slowly), a WebSocket over
``wss://``, and a client that trusts another CA only (``ClientConnectorCertificateError``;
the server keeps serving).

Covered, uvicorn (``uvicorn.Server(...).serve()`` as a task on the loop under test: with
``loop="none"`` uvicorn installs no loop of its own and uses the running one), for both the
h11 and the httptools HTTP protocol, queried by ``httpx.AsyncClient``: FastAPI JSON
endpoints with path and query parameters, a pydantic request body and its 422 validation
error, an 8 MB raw request body, a streaming response and an 8 MB streamed download read
slowly (the server waits for the client), 30 concurrent requests, a WebSocket
endpoint driven by the ``websockets`` client, lifespan startup/shutdown, and graceful
shutdown with ``server.should_exit = True`` while a request is in flight; a plain Starlette
app over a Unix socket (``uds=``).

Covered, websockets (``websockets.asyncio`` server and client): echo of 1000 text and
binary messages in order, 4 MB frames, close codes and reasons in both directions,
20 concurrent clients, and ``unix_serve``/``unix_connect``.

Skipped (with the reason) when one of the libraries is not installed (the other Python
versions' venvs).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time

import pytest

from looptest_net import MB, run, unix_path, until
from looptest_services import tls_certs  # noqa: F401 (fixture)
from looptest_tls import client_context, server_context


def _need(name):
    return pytest.importorskip(name, reason=f"{name} is not installed "
                                            "(requirements-libs.txt lists it)")


aiohttp = _need("aiohttp")
fastapi = _need("fastapi")
httpx = _need("httpx")
_need("starlette")
_need("uvicorn")
_need("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402  (after importorskip)
from websockets.asyncio.client import unix_connect as ws_unix_connect  # noqa: E402
from websockets.asyncio.server import unix_serve as ws_unix_serve  # noqa: E402
from websockets.exceptions import ConnectionClosedError  # noqa: E402

from looptest_webapps import (  # noqa: E402
    BIG,
    DISCONNECTS,
    HANGING,
    aiohttp_app,
    aiohttp_server,
    blob,
    fastapi_app,
    sha,
    starlette_app,
    uvicorn_server,
    ws_echo_handler,
    ws_server,
)

TIMEOUT = 30.0


# ------------------------------------------------------------------- aiohttp


def test_aiohttp_get_post(loop):
    async def main():
        async with aiohttp_server(aiohttp_app()) as (url, _), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/hello", params={"name": "ferro loop"}) as resp:
                got = [resp.status, await resp.text(), resp.headers["Content-Type"]]
            async with session.post(f"{url}/json", json={"a": [1, 2, {"b": None}]}) as resp:
                got += [resp.status, await resp.json()]
            async with session.get(f"{url}/nowhere") as resp:
                got.append(resp.status)
            return got

    assert run(loop, main(), TIMEOUT) == [
        200, "hello ferro loop", "text/plain; charset=utf-8",
        200, {"got": {"a": [1, 2, {"b": None}]}, "method": "POST"},
        404,
    ]


async def read_slowly(session, url):
    """The sha256 of ``url``'s body, read in small chunks with pauses (so the client's
    transport pauses reading and resumes)."""
    digest = hashlib.sha256()
    async with session.get(url) as resp:
        n = 0
        async for chunk in resp.content.iter_chunked(32 * 1024):
            digest.update(chunk)
            n += 1
            if n % 16 == 0:
                await asyncio.sleep(0.001)
    return digest.hexdigest()


def test_aiohttp_large_bodies(loop):
    payload = blob(BIG)[::-1]

    async def main():
        async with aiohttp_server(aiohttp_app()) as (url, _), aiohttp.ClientSession() as session:
            async with session.post(f"{url}/sha256", data=io.BytesIO(payload)) as resp:
                uploaded = await resp.json()
            async with session.get(f"{url}/blob/{BIG}") as resp:
                downloaded = await resp.read()
                length = int(resp.headers["Content-Length"])
            slow_digest = await read_slowly(session, f"{url}/blob/{BIG}")  # the same
            return uploaded, length, sha(downloaded), slow_digest

    uploaded, length, digest, slow_digest = run(loop, main(), TIMEOUT)
    assert uploaded == {"len": BIG, "sha256": sha(payload)}
    assert (length, digest, slow_digest) == (BIG, sha(blob(BIG)), sha(blob(BIG)))


def test_aiohttp_chunked_streaming_response(loop):
    async def main():
        async with aiohttp_server(aiohttp_app()) as (url, _), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/chunked") as resp:
                encoding = resp.headers.get("Transfer-Encoding")
                lines = [line async for line in resp.content]
            return encoding, lines

    encoding, lines = run(loop, main(), TIMEOUT)
    assert encoding == "chunked"
    assert lines == [f"chunk {i:03d}\n".encode() for i in range(100)]


def test_aiohttp_50_concurrent_requests_and_keep_alive(loop):
    async def main():
        async with aiohttp_server(aiohttp_app()) as (url, _):
            async with aiohttp.ClientSession() as session:
                async def one(i):
                    async with session.get(f"{url}/hello", params={"name": str(i)}) as resp:
                        return await resp.text()

                texts = await asyncio.gather(*(one(i) for i in range(50)))
            # one connection, reused for every request: the server sees one client port
            conn = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=conn) as session:
                ports = []
                for _ in range(10):
                    async with session.get(f"{url}/peer") as resp:
                        ports.append((await resp.json())["port"])
            return texts, ports

    texts, ports = run(loop, main(), TIMEOUT)
    assert texts == [f"hello {i}" for i in range(50)]
    assert len(ports) == 10 and len(set(ports)) == 1


def test_aiohttp_websocket_echo(loop):
    async def main():
        async with aiohttp_server(aiohttp_app()) as (url, _), aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url}/ws") as ws:
                got = []
                for i in range(100):
                    await ws.send_str(f"msg {i}")
                    got.append(await ws.receive_str())
                await ws.send_bytes(b"\x00\x01" * 100_000)
                reversed_bytes = await ws.receive_bytes()
                await ws.send_str("close-me")
                closing = await ws.receive()
                return got, reversed_bytes, closing.type, ws.close_code

    got, reversed_bytes, closing_type, code = run(loop, main(), TIMEOUT)
    assert got == [f"MSG {i}" for i in range(100)]
    assert reversed_bytes == (b"\x00\x01" * 100_000)[::-1]
    assert closing_type == aiohttp.WSMsgType.CLOSE
    assert code == 4001


def test_aiohttp_client_disconnects_mid_response(loop):
    async def main():
        app = aiohttp_app()
        async with aiohttp_server(app) as (url, _), aiohttp.ClientSession() as session:
            resp = await session.get(f"{url}/endless")
            first = await resp.content.readexactly(100_000)
            resp.close()  # drops the connection in the middle of the body
            await until(lambda: app[DISCONNECTS], timeout=10)
            async with session.get(f"{url}/hello", params={"name": "after"}) as resp2:
                after = await resp2.text()
            return len(first), app[DISCONNECTS], after

    n, disconnects, after = run(loop, main(), TIMEOUT)
    assert n == 100_000
    assert len(disconnects) == 1
    assert isinstance(disconnects[0], (ConnectionResetError, asyncio.CancelledError)), disconnects
    assert after == "hello after"


def test_aiohttp_shutdown_with_open_connections(loop):
    async def main():
        app = aiohttp_app()
        srv = aiohttp_server(app, shutdown_timeout=0.5)
        url, runner = await srv.__aenter__()
        session = aiohttp.ClientSession()
        idle_session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(f"{url}/ws")
            async with idle_session.get(f"{url}/hello") as resp:  # stays open, idle
                idle = await resp.text()
            in_flight = asyncio.ensure_future(session.post(f"{url}/hang"))
            await until(lambda: app[HANGING])
            assert len(runner.server.connections) == 3
            t0 = time.monotonic()
            await srv.__aexit__(None, None, None)
            took = time.monotonic() - t0
            closing = await ws.receive()
            try:
                await in_flight
                hang = "answered"
            except aiohttp.ClientError as exc:
                hang = type(exc)
            try:
                await idle_session.get(f"{url}/hello")
                refused = False
            except aiohttp.ClientConnectorError:
                refused = True
            return idle, took, closing.type, closing.data, hang, refused
        finally:
            await session.close()
            await idle_session.close()

    idle, took, closing_type, code, hang, refused = run(loop, main(), TIMEOUT)
    assert idle == "hello ?"
    assert took < 5
    assert (closing_type, code) == (aiohttp.WSMsgType.CLOSE, 1001)  # from on_shutdown
    assert isinstance(hang, type) and issubclass(hang, aiohttp.ServerDisconnectedError), hang
    assert refused  # the idle connection was closed too: a new one is refused


def test_aiohttp_static_files(loop, tmp_path):
    data = blob(BIG)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small.txt").write_text("small file\n")

    async def main():
        app = aiohttp_app(static_dir=tmp_path)
        async with aiohttp_server(app) as (url, _), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/static/big.bin") as resp:
                full = (resp.status, int(resp.headers["Content-Length"]), sha(await resp.read()))
                etag = resp.headers["ETag"]
            headers = {"Range": "bytes=1000000-1999999"}
            async with session.get(f"{url}/static/big.bin", headers=headers) as resp:
                part = (resp.status, resp.headers["Content-Range"], await resp.read())
            async with session.get(f"{url}/static/big.bin",
                                   headers={"If-None-Match": etag}) as resp:
                cached = (resp.status, await resp.read())
            async with session.get(f"{url}/static/small.txt") as resp:
                small = (resp.status, await resp.text())
            return full, part, cached, small

    full, part, cached, small = run(loop, main(), TIMEOUT)
    assert full == (200, BIG, sha(data))
    assert part == (206, f"bytes 1000000-1999999/{BIG}", data[1000000:2000000])
    assert cached == (304, b"")
    assert small == (200, "small file\n")


def test_aiohttp_unix_site(loop, tmp_path):
    path = unix_path(tmp_path, "aio.sock")
    payload = blob(MB)

    async def main():
        async with aiohttp_server(aiohttp_app(), path=path) as (url, _):
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
                async with s.get(f"{url}/hello", params={"name": "unix"}) as resp:
                    text = await resp.text()
                async with s.post(f"{url}/sha256", data=io.BytesIO(payload)) as resp:
                    digest = await resp.json()
                async with s.ws_connect(f"{url}/ws") as ws:
                    await ws.send_str("over unix")
                    echoed = await ws.receive_str()
            return text, digest, echoed

    assert run(loop, main(), TIMEOUT) == (
        "hello unix", {"len": MB, "sha256": sha(payload)}, "OVER UNIX")


# ------------------------------------------------------------ aiohttp over TLS


def test_aiohttp_https(loop, tls_certs):  # noqa: F811
    size = 4 * MB
    payload = blob(size)[::-1]

    async def main():
        server_ctx = server_context(tls_certs)
        client_ctx = client_context(tls_certs)
        async with aiohttp_server(aiohttp_app(), ssl_context=server_ctx) as (url, _), \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session:
            async with session.get(f"{url}/tls") as resp:
                seen_by_server = await resp.json()

            async def one(i):
                async with session.get(f"{url}/hello", params={"name": str(i)}) as resp:
                    return await resp.text()

            texts = await asyncio.gather(*(one(i) for i in range(40)))
            async with session.post(f"{url}/sha256", data=io.BytesIO(payload)) as resp:
                uploaded = await resp.json()
            async with session.get(f"{url}/blob/{size}") as resp:
                # the body is not read yet: the response still holds its connection
                ssl_object = resp.connection.transport.get_extra_info("ssl_object")
                peer_names = ssl_object.getpeercert()["subjectAltName"]
                downloaded = sha(await resp.read())
            slow_digest = await read_slowly(session, f"{url}/blob/{size}")
            async with session.ws_connect(url.replace("https://", "wss://") + "/ws") as ws:
                await ws.send_str("over tls")
                ws_text = await ws.receive_str()
                await ws.send_bytes(b"\x01\x02" * 50_000)
                ws_bytes = await ws.receive_bytes()
        return (seen_by_server, peer_names, texts, uploaded, downloaded, slow_digest,
                ws_text, ws_bytes)

    seen, peer_names, texts, uploaded, downloaded, slow_digest, ws_text, ws_bytes = run(
        loop, main(), TIMEOUT)
    assert seen["secure"] is True and seen["scheme"] == "https"
    assert seen["version"].startswith("TLSv1."), seen
    assert ("DNS", "localhost") in peer_names and ("IP Address", "127.0.0.1") in peer_names
    assert texts == [f"hello {i}" for i in range(40)]
    assert uploaded == {"len": size, "sha256": sha(payload)}
    assert downloaded == slow_digest == sha(blob(size))
    assert (ws_text, ws_bytes) == ("OVER TLS", (b"\x01\x02" * 50_000)[::-1])


def test_aiohttp_https_untrusted_certificate(loop, tls_certs):  # noqa: F811
    async def main():
        async with aiohttp_server(aiohttp_app(),
                                  ssl_context=server_context(tls_certs)) as (url, _):
            # trusts another CA only: the server's certificate does not verify
            untrusted = aiohttp.TCPConnector(ssl=client_context(tls_certs, trust="other_ca"))
            async with aiohttp.ClientSession(connector=untrusted) as session:
                with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
                    await session.get(f"{url}/hello")
            trusted = aiohttp.TCPConnector(ssl=client_context(tls_certs))
            async with aiohttp.ClientSession(connector=trusted) as session, \
                    session.get(f"{url}/hello", params={"name": "after"}) as resp:
                after = await resp.text()
        return info.value.certificate_error.verify_message, after

    verify_message, after = run(loop, main(), TIMEOUT)
    assert "unable to get local issuer certificate" in verify_message, verify_message
    assert after == "hello after"  # the failed handshake did not disturb the server


# ------------------------------------------------- uvicorn: FastAPI, Starlette


HTTP_IMPLS = ["h11", "httptools"]


def _http_impl(name):
    if name == "httptools":
        pytest.importorskip("httptools", reason="httptools is not installed")
    return name


@pytest.mark.parametrize("http", HTTP_IMPLS)
def test_uvicorn_fastapi_json_and_bodies(loop, http):
    _http_impl(http)
    events = []
    payload = blob(BIG)

    async def main():
        async with uvicorn_server(fastapi_app(events), http=http) as (_, url):
            started = list(events)
            async with httpx.AsyncClient(base_url=url, timeout=20, trust_env=False) as client:
                r1 = await client.get("/items/42", params={"q": "a b&c", "limit": 3})
                r2 = await client.post("/items", json={"name": "lamp", "price": 2.5,
                                                       "tags": ["x"]})
                r3 = await client.post("/items", json={"name": "no price"})
                r4 = await client.get("/items/not-a-number")
                r5 = await client.post("/upload", content=payload)
                rs = await asyncio.gather(*(client.get(f"/items/{i}") for i in range(30)))
        return (started, r1.json(), r2.json(), r3.status_code, r4.status_code, r5.json(),
                [r.json()["item_id"] for r in rs], list(events))

    started, j1, j2, s3, s4, j5, ids, final = run(loop, main(), TIMEOUT)
    assert started == ["startup"]
    assert j1 == {"item_id": 42, "q": "a b&c", "limit": 3}
    assert j2 == {"name": "lamp", "total": 5.0, "tags": ["x"]}
    assert (s3, s4) == (422, 422)
    assert j5 == {"len": BIG, "sha256": sha(payload)}
    assert ids == list(range(30))
    assert final == ["startup", "shutdown"]


@pytest.mark.parametrize("http", HTTP_IMPLS)
def test_uvicorn_fastapi_streaming_response(loop, http):
    _http_impl(http)

    async def main():
        async with uvicorn_server(fastapi_app([]), http=http) as (_, url):
            async with httpx.AsyncClient(base_url=url, timeout=20, trust_env=False) as client:
                async with client.stream("GET", "/stream") as resp:
                    encoding = resp.headers.get("transfer-encoding")
                    lines = [line async for line in resp.aiter_lines()]
                # 8 MB read slowly: the server's writes must wait for the client (pauses)
                digest = hashlib.sha256()
                async with client.stream("GET", f"/download/{BIG}") as resp:
                    async for i, chunk in _enumerate(resp.aiter_bytes(64 * 1024)):
                        digest.update(chunk)
                        if i % 8 == 0:
                            await asyncio.sleep(0.001)
        return encoding, lines, digest.hexdigest()

    encoding, lines, digest = run(loop, main(), TIMEOUT)
    assert encoding == "chunked"
    assert lines == [f"line {i}" for i in range(200)]
    assert digest == sha(blob(BIG))


async def _enumerate(aiter):
    i = 0
    async for item in aiter:
        yield i, item
        i += 1


@pytest.mark.parametrize("http", HTTP_IMPLS)
def test_uvicorn_fastapi_websocket(loop, http):
    _http_impl(http)

    async def main():
        async with uvicorn_server(fastapi_app([]), http=http) as (_, url):
            ws_url = url.replace("http://", "ws://") + "/ws"
            async with ws_connect(ws_url, proxy=None) as ws:
                got = []
                for i in range(50):
                    await ws.send(f"m{i}")
                    got.append(await ws.recv())
                await ws.send("bye")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            return got, info.value.rcvd.code, info.value.rcvd.reason

    got, code, reason = run(loop, main(), TIMEOUT)
    assert got == [f"echo: m{i}" for i in range(50)]
    assert (code, reason) == (4000, "bye bye")


@pytest.mark.parametrize("http", HTTP_IMPLS)
def test_uvicorn_graceful_shutdown(loop, http):
    _http_impl(http)
    events = []

    async def main():
        app = fastapi_app(events)
        async with uvicorn_server(app, http=http) as (server, url):
            async with httpx.AsyncClient(base_url=url, timeout=20, trust_env=False) as client:
                slow = asyncio.ensure_future(client.get("/slow"))
                await until(lambda: app.state.in_flight == 1)
                server.should_exit = True
                t0 = time.monotonic()
                resp = await slow  # the in-flight request is answered before the exit
                answered_after = time.monotonic() - t0
                await until(lambda: not server.servers[0].is_serving())
                with pytest.raises(httpx.ConnectError):
                    await client.get("/items/1")
            await asyncio.wait_for(server.serve_task, 10)  # exits by itself, after lifespan
            events_at_exit = list(events)
        return resp.status_code, resp.json(), answered_after, events_at_exit

    status, body, answered_after, events_at_exit = run(loop, main(), TIMEOUT)
    assert (status, body) == (200, {"slow": "done"})
    assert 0.1 < answered_after < 5  # the server waited for the handler's 0.5 s sleep
    assert events_at_exit == ["startup", "shutdown"]


def test_uvicorn_starlette_over_unix_socket(loop, tmp_path):
    path = unix_path(tmp_path, "uv.sock")
    events = []
    payload = blob(2 * MB)

    async def main():
        async with uvicorn_server(starlette_app(events), uds=path):
            transport = httpx.AsyncHTTPTransport(uds=path)
            async with httpx.AsyncClient(transport=transport, base_url="http://uvicorn",
                                         trust_env=False, timeout=20) as client:
                r1 = await client.get("/", params={"who": "unix"})
                r2 = await client.post("/body", content=payload)
            async with ws_unix_connect(path, "ws://uvicorn/ws") as ws:
                await ws.send(b"ab")
                doubled = await ws.recv()
        return r1.json(), r2.text, doubled, events

    j1, text, doubled, final = run(loop, main(), TIMEOUT)
    assert j1 == {"hello": "unix"}
    assert text == f"{2 * MB} {sha(payload)}"
    assert doubled == b"abab"
    assert final == ["up", "down"]


# ---------------------------------------------------------------- websockets


def test_websockets_many_messages_in_order(loop):
    async def main():
        async with ws_server() as url, ws_connect(url, proxy=None) as ws:
            for i in range(500):
                await ws.send(f"text {i}")
                await ws.send(i.to_bytes(4, "big") * 8)
            got = [await ws.recv() for _ in range(1000)]
        return got

    got = run(loop, main(), TIMEOUT)
    expected = []
    for i in range(500):
        expected += [f"text {i}", i.to_bytes(4, "big") * 8]
    assert got == expected


def test_websockets_large_frames(loop):
    data = blob(4 * MB)

    async def main():
        async with ws_server() as url, ws_connect(url, proxy=None, max_size=16 * MB) as ws:
            await ws.send(data)
            echoed = await ws.recv()
            await ws.send(data.hex()[: 3 * MB])
            text = await ws.recv()
        return sha(echoed), len(text), text == data.hex()[: 3 * MB]

    assert run(loop, main(), TIMEOUT) == (sha(data), 3 * MB, True)


def test_websockets_close_codes(loop):
    async def main():
        async with ws_server() as url:
            async with ws_connect(url, proxy=None) as ws:
                await ws.send("close please")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                server_close = (info.value.rcvd.code, info.value.rcvd.reason)
            async with ws_connect(url, proxy=None) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.close(1001, "client going away")
                client_side = (ws.close_code, ws.close_reason)
            await until(lambda: len(ws_echo_handler.closes) == 1)
            return server_close, client_side, list(ws_echo_handler.closes)

    server_close, client_side, seen_by_server = run(loop, main(), TIMEOUT)
    assert server_close == (4001, "server says bye")
    assert client_side == (1001, "client going away")
    assert seen_by_server == [(1001, "client going away")]


def test_websockets_20_concurrent_clients(loop):
    async def client(url, n):
        async with ws_connect(url, proxy=None) as ws:
            out = []
            for i in range(50):
                await ws.send(f"client {n} message {i}")
                out.append(await ws.recv())
            return out

    async def main():
        async with ws_server() as url:
            return await asyncio.gather(*(client(url, n) for n in range(20)))

    results = run(loop, main(), TIMEOUT)
    assert results == [[f"client {n} message {i}" for i in range(50)] for n in range(20)]


def test_websockets_unix_socket(loop, tmp_path):
    path = unix_path(tmp_path, "ws.sock")

    async def main():
        async with ws_unix_serve(ws_echo_handler, path):
            async with ws_unix_connect(path) as ws:
                await ws.send("over unix")
                first = await ws.recv()
                await ws.send(b"\xff" * 100_000)
                second = await ws.recv()
        return first, second

    assert run(loop, main(), TIMEOUT) == ("over unix", b"\xff" * 100_000)
