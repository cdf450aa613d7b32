"""Servers for the library tests of ``test_libs_http.py``: an aiohttp app, a FastAPI app, a
Starlette app, uvicorn run on the running loop, and a ``websockets`` echo server.

Imported by ``test_libs_http.py`` only after its ``pytest.importorskip`` calls, so that a
missing library skips that module instead of breaking collection.

Deliberately unusual module name (see ``looptest_support``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

import aiohttp
import fastapi
import uvicorn
from aiohttp import web
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from looptest_net import MB, until

BIG = 8 * MB


def blob(n):
    """``n`` deterministic, incompressible-looking bytes."""
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2048))
    return (block * (n // len(block) + 1))[:n]


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------- aiohttp


WEBSOCKETS = web.AppKey("websockets", set)
DISCONNECTS = web.AppKey("disconnects", list)
HANGING = web.AppKey("hanging", list)


def aiohttp_app(static_dir=None):
    app = web.Application(client_max_size=4 * BIG)
    app[WEBSOCKETS] = set()
    app[DISCONNECTS] = []
    app[HANGING] = []
    routes = web.RouteTableDef()

    @routes.get("/hello")
    async def hello(request):
        return web.Response(text=f"hello {request.query.get('name', '?')}")

    @routes.post("/json")
    async def echo_json(request):
        body = await request.json()
        return web.json_response({"got": body, "method": request.method})

    @routes.post("/sha256")
    async def hash_body(request):
        data = await request.read()
        return web.json_response({"len": len(data), "sha256": sha(data)})

    @routes.get("/blob/{n}")
    async def get_blob(request):
        return web.Response(body=blob(int(request.match_info["n"])))

    @routes.get("/chunked")
    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(100):
            await resp.write(f"chunk {i:03d}\n".encode())
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    @routes.get("/tls")
    async def tls(request):
        ssl_object = request.transport.get_extra_info("ssl_object")
        return web.json_response({
            "secure": request.secure, "scheme": request.scheme,
            "version": ssl_object.version() if ssl_object is not None else None,
        })

    @routes.get("/peer")
    async def peer(request):
        await asyncio.sleep(0.002)
        return web.json_response({"port": request.transport.get_extra_info("peername")[1]})

    @routes.get("/endless")
    async def endless(request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await resp.write(b"x" * 16384)
                await asyncio.sleep(0.005)
            app[DISCONNECTS].append("never noticed")
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            app[DISCONNECTS].append(exc)
            raise
        return resp

    @routes.post("/hang")  # POST: aiohttp's client does not retry it on a new connection
    async def hang(request):
        app[HANGING].append(request.path)
        await asyncio.sleep(30)
        return web.Response(text="too late")

    @routes.get("/ws")
    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        app[WEBSOCKETS].add(ws)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "close-me":
                    await ws.close(code=4001, message=b"as asked")
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(msg.data.upper())
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data[::-1])
        finally:
            app[WEBSOCKETS].discard(ws)
        return ws

    async def close_websockets(app):
        for ws in list(app[WEBSOCKETS]):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")

    app.on_shutdown.append(close_websockets)
    app.add_routes(routes)
    if static_dir is not None:
        app.router.add_static("/static", static_dir)  # web.FileResponse: loop.sendfile()
    return app


@contextlib.asynccontextmanager
async def aiohttp_server(app, path=None, shutdown_timeout=5.0, ssl_context=None):
    """``app`` served on 127.0.0.1 (or the Unix socket ``path``): ``(url, runner)``; over
    HTTPS with ``ssl_context`` (a server ``SSLContext``)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    if path is None:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    else:
        site = web.UnixSite(runner, path, ssl_context=ssl_context)
    await site.start()
    scheme = "http" if ssl_context is None else "https"
    if path is None:
        url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    else:
        url = f"{scheme}://localhost"
    try:
        yield url, runner
    finally:
        await runner.cleanup()


# ------------------------------------------------- uvicorn: FastAPI, Starlette


class Item(BaseModel):
    name: str
    price: float
    tags: list = []


def fastapi_app(events):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = fastapi.FastAPI(lifespan=lifespan)
    app.state.in_flight = 0

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str = "", limit: int = 10):
        return {"item_id": item_id, "q": q, "limit": limit}

    @app.post("/items")
    async def create_item(item: Item):
        return {"name": item.name, "total": item.price * 2, "tags": item.tags}

    @app.post("/upload")
    async def upload(request: fastapi.Request):
        body = await request.body()
        return {"len": len(body), "sha256": sha(body)}

    @app.get("/stream")
    async def stream():
        async def lines():
            for i in range(200):
                yield f"line {i}\n"
                if i % 20 == 0:
                    await asyncio.sleep(0.001)

        return StreamingResponse(lines(), media_type="text/plain")

    @app.get("/download/{n}")
    async def download(n: int):
        data = blob(n)

        async def chunks():
            for i in range(0, n, 256 * 1024):
                yield data[i:i + 256 * 1024]

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/slow")
    async def slow():
        app.state.in_flight += 1
        await asyncio.sleep(0.5)
        return {"slow": "done"}

    @app.websocket("/ws")
    async def ws_echo(websocket: fastapi.WebSocket):
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4000, reason="bye bye")
                return
            await websocket.send_text(f"echo: {text}")

    return app


@contextlib.asynccontextmanager
async def uvicorn_server(app, http="h11", uds=None):
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, uds=uds, loop="none", http=http, ws="websockets-sansio",
        lifespan="on", log_level="warning", log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    await until(lambda: server.started or task.done(), timeout=10)
    if task.done():
        task.result()  # startup failed: raise it here
    port = server.servers[0].sockets[0].getsockname()[1] if uds is None else None
    server.serve_task = task  # for tests that wait for the server to exit by itself
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def starlette_app(events):
    async def homepage(request):
        return JSONResponse({"hello": request.query_params.get("who", "world")})

    async def echo_body(request):
        body = await request.body()
        return PlainTextResponse(f"{len(body)} {sha(body)}")

    async def ws_endpoint(websocket):
        await websocket.accept()
        data = await websocket.receive_bytes()
        await websocket.send_bytes(data * 2)
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("up")
        yield
        events.append("down")

    return Starlette(routes=[Route("/", homepage), Route("/body", echo_body, methods=["POST"]),
                             WebSocketRoute("/ws", ws_endpoint)], lifespan=lifespan)


# ---------------------------------------------------------------- websockets


async def ws_echo_handler(ws):
    try:
        async for msg in ws:
            if msg == "close please":
                await ws.close(4001, "server says bye")
                return
            await ws.send(msg)
    except ConnectionClosed:
        pass
    ws_echo_handler.closes.append((ws.close_code, ws.close_reason))


ws_echo_handler.closes = []


@contextlib.asynccontextmanager
async def ws_server():
    ws_echo_handler.closes = []
    async with ws_serve(ws_echo_handler, "127.0.0.1", 0, max_size=16 * MB) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"
