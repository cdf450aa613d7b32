"""The main job's I/O patterns: what asyncio applications do over real sockets.

- ``http_gather``: an aiohttp JSON API and a ``ClientSession`` fetching from it with
  ``gather``;
- ``crawler``: a Semaphore-limited crawler over a generated site of linked pages;
- ``ws_chat``: a WebSocket chat room (the ``websockets`` library), every message
  broadcast to every member;
- ``redis_pool``: redis-py's asyncio client through a pool smaller than the number of
  tasks using it;
- ``pg_pool``: an asyncpg pool running transactions from many tasks.

The servers of the first three run on the loop under test beside their clients, on
loopback ports chosen by the kernel, so both ends exercise that loop. Redis and PostgreSQL
are real servers that ``seed_demo.py`` starts once (``tests/looptest_servers.py``) and
names in ``SERVICE_ENV``; each run starts from an empty database, so every run, on every
loop, returns the same data. Without a server binary the pattern returns a
"skipped: ..." result that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re

# Environment variables through which seed_demo.py passes the servers' "host:port".
SERVICE_ENV = {"redis": "FERROLOOP_DEMO_REDIS", "postgres": "FERROLOOP_DEMO_POSTGRES"}


def _digest(items) -> str:
    return hashlib.sha256("\n".join(map(str, items)).encode()).hexdigest()[:16]


@contextlib.asynccontextmanager
async def _aiohttp_site(app):
    """Serve ``app`` on 127.0.0.1 (a free port) for the block; yields the base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def http_gather():
    """An aiohttp JSON API and an aiohttp ClientSession on the same loop: gather() of
    2,000 GETs over at most 100 keep-alive connections."""
    from aiohttp import ClientSession, TCPConnector, web

    async def item(request):
        i = int(request.match_info["i"])
        return web.json_response({"id": i, "square": i * i, "name": f"item-{i}"})

    app = web.Application()
    app.router.add_get("/items/{i}", item)
    async with _aiohttp_site(app) as base:
        async with ClientSession(connector=TCPConnector(limit=100)) as session:

            async def fetch(i):
                async with session.get(f"{base}/items/{i}") as response:
                    response.raise_for_status()
                    return await response.json()

            items = await asyncio.gather(*(fetch(i) for i in range(2000)))
    return {"items": len(items),
            "in_order": [it["id"] for it in items] == list(range(2000)),
            "sum_of_squares": sum(it["square"] for it in items),
            "digest": _digest(it["name"] for it in items)}


SITE_PAGES = 3000
CRAWL_CONCURRENCY = 25
_LINK = re.compile(r'href="(/page/\d+)"')


def _page_links(i):
    """Page ``i`` links to its three children in a ternary tree, its parent, and one
    page elsewhere: every page is reachable from page 0, many from several places."""
    links = [c for c in (3 * i + 1, 3 * i + 2, 3 * i + 3) if c < SITE_PAGES]
    links += [max(0, (i - 1) // 3), (i * 37 + 11) % SITE_PAGES]
    return links


async def crawler():
    """A crawler over a generated site of 3,000 linked HTML pages (aiohttp server and
    client): a task per discovered page, at most 25 fetches in flight (a Semaphore),
    every page fetched once."""
    from aiohttp import ClientSession, TCPConnector, web

    async def page(request):
        i = int(request.match_info["i"])
        links = "".join(f'<li><a href="/page/{j}">page {j}</a></li>' for j in _page_links(i))
        filler = "<p>" + "lorem ipsum " * (i % 40) + "</p>"
        return web.Response(text=f"<html><title>Page {i}</title><ul>{links}</ul>{filler}"
                                 "</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/page/{i}", page)
    limit = asyncio.Semaphore(CRAWL_CONCURRENCY)
    seen = {"/page/0"}
    sizes = {}
    in_flight = peak = 0
    tasks = []

    async with _aiohttp_site(app) as base:
        async with ClientSession(connector=TCPConnector(limit=CRAWL_CONCURRENCY)) as session:

            async def visit(path):
                nonlocal in_flight, peak
                async with limit:
                    in_flight += 1
                    peak = max(peak, in_flight)
                    try:
                        async with session.get(base + path) as response:
                            response.raise_for_status()
                            html = await response.text()
                    finally:
                        in_flight -= 1
                sizes[path] = len(html)
                for link in _LINK.findall(html):
                    if link not in seen:
                        seen.add(link)
                        tasks.append(asyncio.ensure_future(visit(link)))

            tasks.append(asyncio.ensure_future(visit("/page/0")))
            done = 0
            while done < len(tasks):  # tasks grows while the crawl discovers pages
                batch, done = tasks[done:], len(tasks)
                await asyncio.gather(*batch)
    return {"pages": len(sizes), "bytes": sum(sizes.values()),
            "peak_in_flight_within_limit": 0 < peak <= CRAWL_CONCURRENCY,
            "digest": _digest(sorted(sizes.items()))}


CHAT_CLIENTS = 40
CHAT_MESSAGES = 25  # per client


async def ws_chat():
    """A WebSocket chat room (websockets' server and client): 40 members each send 25
    messages; the server relays every message to every member (40,000 deliveries), each
    member checks it got all of them, every sender's in the order sent."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    room = set()

    async def member(ws):
        room.add(ws)
        try:
            await ws.send("welcome")
            async for message in ws:
                for peer in list(room):
                    with contextlib.suppress(Exception):  # a member that just left
                        await peer.send(message)
        finally:
            room.discard(ws)

    joined = []
    everyone_joined = asyncio.Event()

    async def client(port, k):
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            assert await ws.recv() == "welcome"  # the server has added us to the room
            joined.append(k)
            if len(joined) == CHAT_CLIENTS:
                everyone_joined.set()
            await everyone_joined.wait()
            for j in range(CHAT_MESSAGES):
                await ws.send(f"{k}:{j}")
            last = {}
            in_order = True
            for _ in range(CHAT_CLIENTS * CHAT_MESSAGES):
                sender, j = map(int, (await ws.recv()).split(":"))
                in_order &= j == last.get(sender, -1) + 1
                last[sender] = j
            return len(last), in_order

    async with serve(member, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        results = await asyncio.gather(*(client(port, k) for k in range(CHAT_CLIENTS)))
    return {"members": len(results),
            "deliveries": sum(senders for senders, _ in results) * CHAT_MESSAGES,
            "every_sender_heard_by_all": all(s == CHAT_CLIENTS for s, _ in results),
            "per_sender_order_kept": all(ok for _, ok in results)}


def _service(name):
    """``(host, port)`` of the demo's ``name`` server, or None when it is not running."""
    address = os.environ.get(SERVICE_ENV[name])
    if not address:
        return None
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def redis_pool():
    """redis-py's asyncio client: 400 tasks through a pool of 16 connections
    (BlockingConnectionPool: tasks wait for a free connection), each doing INCR, HINCRBY
    and a SET/GET pipeline."""
    address = _service("redis")
    if address is None:
        return "skipped: no redis-server (scripts/services.sh installs it)"
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool(host=address[0], port=address[1],
                                           max_connections=16, timeout=30)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.flushdb()

        async def job(i):
            await client.incr("demo:counter")
            await client.hincrby("demo:by-bucket", f"b{i % 10}", i)
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(f"demo:item:{i}", f"value-{i * 7}")
                pipe.get(f"demo:item:{i}")
                _, value = await pipe.execute()
            return value.decode()

        values = await asyncio.gather(*(job(i) for i in range(400)))
        counter = int(await client.get("demo:counter"))
        buckets = {k.decode(): int(v) for k, v in (await client.hgetall("demo:by-bucket")).items()}
        keys = await client.dbsize()
    finally:
        await client.aclose()
        await pool.disconnect()
    return {"counter": counter, "buckets": dict(sorted(buckets.items())), "keys": keys,
            "digest": _digest(values)}


async def pg_pool():
    """asyncpg: 200 tasks through a pool of 10 connections, each running a transaction
    that inserts 5 rows and reads its own rows back; then the totals."""
    address = _service("postgres")
    if address is None:
        return "skipped: no PostgreSQL server (scripts/services.sh installs it)"
    import asyncpg

    pool = await asyncpg.create_pool(host=address[0], port=address[1], user="postgres",
                                     database="postgres", min_size=2, max_size=10)
    try:
        await pool.execute("DROP TABLE IF EXISTS demo_orders")
        await pool.execute("CREATE TABLE demo_orders (customer int, item int, qty int)")

        async def order(customer):
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.executemany(
                        "INSERT INTO demo_orders VALUES ($1, $2, $3)",
                        [(customer, item, (customer * item) % 7 + 1) for item in range(5)])
                    return await conn.fetchval(
                        "SELECT sum(qty) FROM demo_orders WHERE customer = $1", customer)

        per_customer = await asyncio.gather(*(order(c) for c in range(200)))
        rows, total = await pool.fetchrow("SELECT count(*), sum(qty) FROM demo_orders")
        await pool.execute("DROP TABLE demo_orders")
    finally:
        await pool.close()
    return {"rows": rows, "total_qty": total, "digest": _digest(per_customer)}


IO_PATTERNS = [
    ("http_gather", http_gather),
    ("crawler", crawler),
    ("ws_chat", ws_chat),
    ("redis_pool", redis_pool),
    ("pg_pool", pg_pool),
]
