"""Database clients over real sockets: asyncpg against PostgreSQL, redis.asyncio against Redis.

Each test runs on stock asyncio and on ferroloop (the ``loop`` fixture of ``conftest.py``)
against real servers started once per session by ``looptest_services`` (a throw-away
PostgreSQL cluster and a redis-server on free loopback ports, each also on a Unix
socket in a temporary directory).

Covered, asyncpg: connecting over TCP (the default ``ssl="prefer"`` negotiation, which the
server declines) and over the Unix socket; a pool of 10 connections under 200 concurrent
queries; prepared statements and ``executemany``; transaction rollback and savepoints;
``COPY`` in and out of 10,000 rows (records and CSV); ``LISTEN``/``NOTIFY``; cancelling a
running ``pg_sleep(10)`` with ``asyncio.wait_for``, a task cancel and ``asyncio.timeout``
(asyncpg sends a cancel request on a second connection, the first stays usable);
server-side errors raised as asyncpg's exception classes.

Covered, asyncpg over TLS, against a second PostgreSQL cluster with ``ssl=on`` whose
certificate is signed by a test CA (``postgres_tls_server`` and ``tls_certs`` of
``looptest_services``; the certificates and contexts come from ``looptest_tls``). asyncpg
asks for TLS with an SSLRequest, then upgrades the connection with ``loop.start_tls``:
``ssl=<SSLContext trusting the test CA>`` (the server's ``pg_stat_ssl`` says the session
is encrypted), a 4 MB ``bytea`` up and a 3 MB result down checked by hash, the default
``ssl="prefer"``, ``ssl="require"``, a DSN with ``sslmode=verify-full&sslrootcert=``,
``ssl=False`` and the Unix socket (in the clear), a context that trusts another CA only
(a certificate verification error), a pool of 5 TLS connections under 100 concurrent
queries, and cancelling a running query over TLS (the cancel request also goes over TLS).

Covered, redis.asyncio: SET/GET (1 MB values included) over TCP and the Unix socket,
transactional and plain pipelines, pub/sub with channel and pattern subscriptions,
``BLPOP`` woken by another client and ``BLPOP`` cancelled by ``asyncio.timeout`` (the
client stays usable), a blocking connection pool of 10 under 100 concurrent commands.

Skipped (with the reason) when asyncpg or redis is not installed (the other Python
versions' venvs); the servers' binaries: see ``looptest_services``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ssl
import time

import pytest

from looptest_net import run
from looptest_services import (  # noqa: F401 (fixtures)
    postgres_server,
    postgres_tls_server,
    redis_server,
    tls_certs,
)
from looptest_tls import client_context

asyncpg = pytest.importorskip(
    "asyncpg", reason="asyncpg is not installed (requirements-libs.txt lists it)"
)
aioredis = pytest.importorskip(
    "redis.asyncio", reason="redis (redis-py) is not installed (requirements-libs.txt lists it)"
)
import redis.exceptions  # noqa: E402  (after the importorskip above)

TIMEOUT = 30.0


async def cancel_after(seconds, coro):
    """``await coro``, cancelled after ``seconds`` by ``asyncio.timeout`` (3.11+;
    ``asyncio.wait_for`` before)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


@pytest.fixture
def pg(postgres_server):  # noqa: F811
    """Connection keyword arguments for the session's PostgreSQL over TCP."""
    return dict(host=postgres_server.host, port=postgres_server.port,
                user=postgres_server.user, database=postgres_server.database)


# ------------------------------------------------------------------- asyncpg


def test_asyncpg_connect_tcp_and_unix(loop, postgres_server, pg):  # noqa: F811
    async def query(conn):
        try:
            return (
                await conn.fetchval("SELECT 6 * 7"),
                await conn.fetchval("SELECT inet_server_port()"),
                await conn.fetchval("SELECT current_user"),
                (await conn.fetchrow("SELECT $1::text AS t, $2::int[] AS a", "é€", [1, 2]))["a"],
            )
        finally:
            await conn.close()

    async def main():
        tcp = await asyncpg.connect(**pg)  # ssl="prefer": the server answers "no TLS"
        assert not tcp.is_closed()
        via_tcp = await query(tcp)
        assert tcp.is_closed()
        unix = await asyncpg.connect(host=postgres_server.socket_dir, port=postgres_server.port,
                                     user=pg["user"], database=pg["database"])
        via_unix = await query(unix)
        plain = await asyncpg.connect(**pg, ssl=False)
        via_plain = await query(plain)
        return via_tcp, via_unix, via_plain

    via_tcp, via_unix, via_plain = run(loop, main(), TIMEOUT)
    assert via_tcp == (42, postgres_server.port, "postgres", [1, 2])
    assert via_plain == via_tcp
    assert via_unix == (42, None, "postgres", [1, 2])  # no server port over a Unix socket


def test_asyncpg_pool_200_concurrent_queries(loop, pg):
    async def main():
        async with asyncpg.create_pool(**pg, min_size=10, max_size=10) as pool:
            async def one(i):
                async with pool.acquire() as conn:
                    return await conn.fetchrow(
                        "SELECT $1::int * 2 AS v, pg_backend_pid() AS pid, pg_sleep(0.005)", i)

            rows = await asyncio.gather(*(one(i) for i in range(200)))
            return [r["v"] for r in rows], {r["pid"] for r in rows}, pool.get_size()

    values, pids, size = run(loop, main(), TIMEOUT)
    assert values == [2 * i for i in range(200)]
    assert size == 10
    assert 2 <= len(pids) <= 10  # the queries really were spread over the pool


def test_asyncpg_prepared_statements(loop, pg):
    async def main():
        conn = await asyncpg.connect(**pg)
        try:
            await conn.execute("CREATE TEMP TABLE kv (k int PRIMARY KEY, v text)")
            await conn.executemany("INSERT INTO kv VALUES ($1, $2)",
                                   [(i, f"value-{i}") for i in range(500)])
            stmt = await conn.prepare("SELECT v FROM kv WHERE k = $1")
            params = [t.name for t in stmt.get_parameters()]
            got = [await stmt.fetchval(i) for i in (0, 7, 499, 500)]
            add = await conn.prepare("SELECT $1::bigint + $2::bigint")
            sums = [await add.fetchval(i, i * 10) for i in range(100)]
            cursor_rows = []
            async with conn.transaction():
                async for rec in conn.cursor("SELECT k FROM kv WHERE k % 100 = 0 ORDER BY k",
                                             prefetch=2):
                    cursor_rows.append(rec["k"])
            return params, got, sums, cursor_rows
        finally:
            await conn.close()

    params, got, sums, cursor_rows = run(loop, main(), TIMEOUT)
    assert params == ["int4"]
    assert got == ["value-0", "value-7", "value-499", None]
    assert sums == [11 * i for i in range(100)]
    assert cursor_rows == [0, 100, 200, 300, 400]


def test_asyncpg_transaction_rollback(loop, pg):
    class Boom(Exception):
        pass

    async def main():
        conn = await asyncpg.connect(**pg)
        try:
            await conn.execute("CREATE TEMP TABLE t (x int)")
            with pytest.raises(Boom):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t SELECT generate_series(1, 100)")
                    assert await conn.fetchval("SELECT count(*) FROM t") == 100
                    raise Boom
            after_rollback = await conn.fetchval("SELECT count(*) FROM t")
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
                with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                    async with conn.transaction():  # a savepoint
                        await conn.execute("INSERT INTO t VALUES (2)")
                        await conn.execute("SELECT 1 / 0")
                await conn.execute("INSERT INTO t VALUES (3)")
            kept = [r["x"] for r in await conn.fetch("SELECT x FROM t ORDER BY x")]
            return after_rollback, kept, conn.is_in_transaction()
        finally:
            await conn.close()

    assert run(loop, main(), TIMEOUT) == (0, [1, 3], False)


def test_asyncpg_copy_in_and_out_10k_rows(loop, pg):
    n = 10_000
    records = [(i, f"row {i} " + "x" * (i % 50), i * 0.5) for i in range(n)]

    async def main():
        conn = await asyncpg.connect(**pg)
        try:
            await conn.execute("CREATE TEMP TABLE c (id int, label text, f float8)")
            status_in = await conn.copy_records_to_table("c", records=records)
            out = io.BytesIO()
            status_out = await conn.copy_from_table("c", output=out, format="csv")
            csv_bytes = out.getvalue()
            await conn.execute("CREATE TEMP TABLE c2 (id int, label text, f float8)")
            status_csv_in = await conn.copy_to_table("c2", source=io.BytesIO(csv_bytes),
                                                     format="csv")
            chunks = []

            async def sink(data):
                chunks.append(bytes(data))

            await conn.copy_from_query("SELECT * FROM c2 ORDER BY id", output=sink, format="csv")
            back = await conn.fetch("SELECT id, label, f FROM c2 ORDER BY id")
            return status_in, status_out, status_csv_in, csv_bytes, b"".join(chunks), back
        finally:
            await conn.close()

    status_in, status_out, status_csv_in, csv_bytes, csv_again, back = run(loop, main(), TIMEOUT)
    assert (status_in, status_out, status_csv_in) == (f"COPY {n}",) * 3
    expected_csv = "".join(f"{i},{label},{f:g}\n" for i, label, f in records).encode()
    assert hashlib.sha256(csv_again).hexdigest() == hashlib.sha256(expected_csv).hexdigest()
    assert sorted(csv_bytes.splitlines()) == sorted(expected_csv.splitlines())
    assert [tuple(r) for r in back] == records


def test_asyncpg_listen_notify(loop, pg):
    async def main():
        listener = await asyncpg.connect(**pg)
        sender = await asyncpg.connect(**pg)
        got = []
        all_in = asyncio.Event()

        def on_notify(conn, pid, channel, payload):
            got.append((channel, payload, pid == sender.get_server_pid()))
            if len(got) == 21:
                all_in.set()

        try:
            await listener.add_listener("ferro_chan", on_notify)
            await listener.add_listener("other chan", on_notify)
            for i in range(20):
                await sender.execute(f"NOTIFY ferro_chan, 'payload {i}'")
            await sender.execute("SELECT pg_notify('other chan', $1)", "x" * 4000)
            await asyncio.wait_for(all_in.wait(), 10)
            await listener.remove_listener("ferro_chan", on_notify)
            await sender.execute("NOTIFY ferro_chan, 'not delivered'")
            await sender.execute("NOTIFY \"other chan\", 'last'")
            await asyncio.wait_for(_until(lambda: len(got) == 22), 10)
            return got
        finally:
            await listener.close()
            await sender.close()

    got = run(loop, main(), TIMEOUT)
    assert got == ([("ferro_chan", f"payload {i}", True) for i in range(20)]
                   + [("other chan", "x" * 4000, True), ("other chan", "last", True)])


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.005)


async def time_out_then_cancel(conn):
    """``pg_sleep(10)`` stopped by ``wait_for``'s timeout, then one whose task is
    cancelled (asyncpg sends the server a cancel request each time, on a connection of
    its own); returns how long the timeout took."""
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(10)"), 0.3)
    waited = time.monotonic() - t0
    task = asyncio.ensure_future(conn.execute("SELECT pg_sleep(10)"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return waited


def test_asyncpg_cancel_running_query(loop, pg):
    async def main():
        conn = await asyncpg.connect(**pg)
        try:
            pid = conn.get_server_pid()
            t0 = time.monotonic()
            waited = await time_out_then_cancel(conn)
            after_timeout = await conn.fetchval("SELECT 'still usable'")
            after_cancel = await conn.fetchval("SELECT pg_backend_pid()")
            with pytest.raises(asyncio.TimeoutError):
                await cancel_after(0.2, conn.fetch("SELECT pg_sleep(10)"))
            after_timeout_cm = await conn.fetchval("SELECT pg_backend_pid()")
            total = time.monotonic() - t0
            return waited, after_timeout, after_cancel == after_timeout_cm == pid, total
        finally:
            await conn.close()

    waited, after_timeout, same_backend, total = run(loop, main(), TIMEOUT)
    assert waited < 5  # the timeout fired instead of waiting for pg_sleep(10)
    assert after_timeout == "still usable"
    assert same_backend  # the same server session survived the three cancellations
    assert total < 8


def test_asyncpg_server_errors(loop, pg):
    async def main():
        conn = await asyncpg.connect(**pg)
        seen = []
        try:
            await conn.execute("CREATE TEMP TABLE u (x int UNIQUE)")
            await conn.execute("INSERT INTO u VALUES (1)")
            for sql in ("SELECT 1 / 0", "SELECT * FROM no_such_table", "INSERT INTO u VALUES (1)",
                        "SELEC 1"):
                try:
                    await conn.execute(sql)
                except asyncpg.PostgresError as exc:
                    seen.append((type(exc).__name__, exc.sqlstate))
            with pytest.raises(asyncpg.exceptions.RaiseError, match="custom failure 7"):
                await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 7; END $$")
            return seen, await conn.fetchval("SELECT count(*) FROM u")
        finally:
            await conn.close()

    seen, count = run(loop, main(), TIMEOUT)
    assert seen == [
        ("DivisionByZeroError", "22012"),
        ("UndefinedTableError", "42P01"),
        ("UniqueViolationError", "23505"),
        ("PostgresSyntaxError", "42601"),
    ]
    assert count == 1  # the connection is still usable after every error


# ------------------------------------------------------------ asyncpg over TLS


@pytest.fixture
def pg_tls(postgres_tls_server):  # noqa: F811
    """Connection keyword arguments for the session's TLS PostgreSQL over TCP."""
    server = postgres_tls_server
    return {"host": server.host, "port": server.port, "user": server.user,
            "database": server.database}


SSL_STATUS = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def _ssl_status(conn):
    row = await conn.fetchrow(SSL_STATUS)
    return row["ssl"], row["version"]


def test_asyncpg_tls_verified_context(loop, pg_tls, tls_certs):  # noqa: F811
    up = hashlib.sha256(b"up").digest() * (4 * 1024 * 1024 // 32)  # 4 MB
    expected_down = "".join(hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 100_001))

    async def main():
        conn = await asyncpg.connect(**pg_tls, ssl=client_context(tls_certs))
        try:
            status = await _ssl_status(conn)
            row = await conn.fetchrow(
                "SELECT length($1::bytea) AS n, encode(sha256($1::bytea), 'hex') AS h", up)
            echoed = await conn.fetchval("SELECT $1::bytea", up)
            down = await conn.fetchval(  # 3.2 MB of text made by the server
                "SELECT string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 100000) i")
            return status, (row["n"], row["h"]), hashlib.sha256(echoed).hexdigest(), down
        finally:
            await conn.close()

    (encrypted, version), (n, server_hash), echoed_hash, down = run(loop, main(), TIMEOUT)
    assert encrypted is True
    assert version.startswith("TLSv1."), version
    assert (n, server_hash, echoed_hash) == (len(up), hashlib.sha256(up).hexdigest(),
                                             hashlib.sha256(up).hexdigest())
    assert hashlib.sha256(down.encode()).hexdigest() == \
        hashlib.sha256(expected_down.encode()).hexdigest()


def test_asyncpg_tls_modes(loop, postgres_tls_server, pg_tls, tls_certs):  # noqa: F811
    dsn = (f"postgresql://{pg_tls['user']}@{pg_tls['host']}:{pg_tls['port']}/{pg_tls['database']}"
           f"?sslmode=verify-full&sslrootcert={tls_certs.ca}")

    async def status_of(**kwargs):
        conn = await asyncpg.connect(**kwargs)
        try:
            return (await _ssl_status(conn))[0], await conn.fetchval("SELECT 6 * 7")
        finally:
            await conn.close()

    async def main():
        got = {
            "prefer": await status_of(**pg_tls),  # the default: this server says yes
            "require": await status_of(**pg_tls, ssl="require"),  # encrypted, not verified
            "verify-full dsn": await status_of(dsn=dsn),
            "no tls": await status_of(**pg_tls, ssl=False),
            "unix": await status_of(host=postgres_tls_server.socket_dir,
                                    port=pg_tls["port"], user=pg_tls["user"],
                                    database=pg_tls["database"]),
        }
        untrusted = client_context(tls_certs, trust="other_ca")  # not the server's CA
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await asyncpg.connect(**pg_tls, ssl=untrusted)
        return got, info.value.verify_message

    got, verify_message = run(loop, main(), TIMEOUT)
    assert got == {
        "prefer": (True, 42),
        "require": (True, 42),
        "verify-full dsn": (True, 42),
        "no tls": (False, 42),  # the same server, in the clear when asked
        "unix": (False, 42),
    }
    assert "unable to get local issuer certificate" in verify_message, verify_message


def test_asyncpg_tls_pool_concurrent_queries(loop, pg_tls, tls_certs):  # noqa: F811
    async def main():
        async with asyncpg.create_pool(**pg_tls, ssl=client_context(tls_certs),
                                       min_size=5, max_size=5) as pool:
            async def one(i):
                async with pool.acquire() as conn:
                    return await conn.fetchrow(
                        "SELECT $1::int * 3 AS v, pg_backend_pid() AS pid, s.ssl, pg_sleep(0.005)"
                        " FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()", i)

            rows = await asyncio.gather(*(one(i) for i in range(100)))
            return ([r["v"] for r in rows], {r["pid"] for r in rows}, {r["ssl"] for r in rows},
                    pool.get_size())

    values, pids, ssl_flags, size = run(loop, main(), TIMEOUT)
    assert values == [3 * i for i in range(100)]
    assert ssl_flags == {True}  # every pooled connection is encrypted
    assert size == 5
    assert 2 <= len(pids) <= 5  # the queries really were spread over the pool


def test_asyncpg_tls_cancel_running_query(loop, pg_tls, tls_certs):  # noqa: F811
    async def main():
        conn = await asyncpg.connect(**pg_tls, ssl=client_context(tls_certs))
        try:
            pid = conn.get_server_pid()
            t0 = time.monotonic()
            waited = await time_out_then_cancel(conn)
            after = await conn.fetchrow(
                "SELECT pg_backend_pid() AS pid, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return waited, after["pid"] == pid, after["ssl"], time.monotonic() - t0
        finally:
            await conn.close()

    waited, same_backend, encrypted, total = run(loop, main(), TIMEOUT)
    assert waited < 5  # the cancel request (over TLS) stopped pg_sleep(10)
    assert same_backend and encrypted is True
    assert total < 8


# --------------------------------------------------------------------- redis


@pytest.fixture
def redis_kwargs(redis_server):  # noqa: F811
    return dict(host=redis_server.host, port=redis_server.port)


def test_redis_set_get_tcp_and_unix(loop, redis_server, redis_kwargs):  # noqa: F811
    big = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MB

    async def session(client, prefix):
        try:
            await client.set(f"{prefix}:a", "1")
            await client.set(f"{prefix}:big", big)
            await client.incrby(f"{prefix}:a", 41)
            await client.set(f"{prefix}:gone", "x", px=50)
            got = [await client.get(f"{prefix}:a"),
                   await client.mget(f"{prefix}:a", f"{prefix}:missing"),
                   await client.strlen(f"{prefix}:big")]
            same_big = await client.get(f"{prefix}:big") == big
            await asyncio.sleep(0.15)
            got.append(await client.exists(f"{prefix}:gone"))
            await client.delete(f"{prefix}:a", f"{prefix}:big")
            return got, same_big
        finally:
            await client.aclose()

    async def main():
        tcp = await session(aioredis.Redis(**redis_kwargs), "tcp")
        unix = await session(aioredis.Redis(unix_socket_path=redis_server.unix_path), "unix")
        return tcp, unix

    tcp, unix = run(loop, main(), TIMEOUT)
    assert tcp == unix == ([b"42", [b"42", None], len(big), 0], True)


def test_redis_pipelines(loop, redis_kwargs):
    async def main():
        client = aioredis.Redis(**redis_kwargs, decode_responses=True)
        try:
            async with client.pipeline(transaction=True) as pipe:
                for i in range(1000):
                    pipe.rpush("pipe:list", i)
                pipe.lrange("pipe:list", 0, 2).llen("pipe:list")
                multi = await pipe.execute()
            async with client.pipeline(transaction=False) as pipe:
                for i in range(500):
                    pipe.set(f"pipe:k{i}", i * i)
                for i in range(500):
                    pipe.get(f"pipe:k{i}")
                plain = await pipe.execute()
            with pytest.raises(redis.exceptions.ResponseError):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set("pipe:s", "text").incr("pipe:s")
                    await pipe.execute()
            await client.delete("pipe:list", "pipe:s", *(f"pipe:k{i}" for i in range(500)))
            return multi, plain
        finally:
            await client.aclose()

    multi, plain = run(loop, main(), TIMEOUT)
    assert multi[:1000] == list(range(1, 1001))
    assert multi[1000:] == [["0", "1", "2"], 1000]
    assert plain == [True] * 500 + [str(i * i) for i in range(500)]


def test_redis_pubsub(loop, redis_kwargs):
    async def main():
        sub_client = aioredis.Redis(**redis_kwargs, decode_responses=True)
        pub_client = aioredis.Redis(**redis_kwargs, decode_responses=True)
        pubsub = sub_client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe("news")
            await pubsub.psubscribe("metrics.*")
            receivers = 0
            for i in range(50):
                receivers += await pub_client.publish("news", f"item {i}")
            await pub_client.publish("metrics.cpu", "0.5")
            await pub_client.publish("unrelated", "nobody listens")
            await pub_client.publish("news", "stop")
            got = []
            while not got or got[-1] != ("news", "stop"):
                msg = await pubsub.get_message(timeout=5.0)
                if msg is not None:
                    got.append((msg["channel"], msg["data"]))
            await pubsub.unsubscribe("news")
            await pubsub.punsubscribe()
            return receivers, got
        finally:
            await pubsub.aclose()
            await sub_client.aclose()
            await pub_client.aclose()

    receivers, got = run(loop, main(), TIMEOUT)
    assert receivers == 50
    news = [m for m in got if m[0] == "news"]
    assert news == [("news", f"item {i}") for i in range(50)] + [("news", "stop")]
    assert ("metrics.cpu", "0.5") in got
    assert all(ch != "unrelated" for ch, _ in got)


def test_redis_blpop_woken_and_cancelled(loop, redis_kwargs):
    async def main():
        client = aioredis.Redis(**redis_kwargs)
        other = aioredis.Redis(**redis_kwargs)
        try:
            waiter = asyncio.ensure_future(client.blpop(["q:jobs"], timeout=20))
            await asyncio.sleep(0.1)
            assert not waiter.done()
            await other.rpush("q:jobs", b"job-1")
            woken = await asyncio.wait_for(waiter, 5)
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await cancel_after(0.3, client.blpop(["q:empty"], timeout=30))
            waited = time.monotonic() - t0
            # The client is usable after the cancellation (redis-py drops the busy
            # connection and opens a new one).
            await other.rpush("q:after", b"later")
            again = await client.blpop(["q:after"], timeout=5)
            ping = await client.ping()
            return woken, waited, again, ping
        finally:
            await client.aclose()
            await other.aclose()

    woken, waited, again, ping = run(loop, main(), TIMEOUT)
    assert woken == (b"q:jobs", b"job-1")
    assert waited < 5
    assert again == (b"q:after", b"later")
    assert ping is True


def test_redis_pool_100_concurrent_commands(loop, redis_kwargs):
    async def main():
        pool = aioredis.BlockingConnectionPool(**redis_kwargs, max_connections=10, timeout=20,
                                               client_name="ferroloop-pool")
        client = aioredis.Redis(connection_pool=pool)
        observer = aioredis.Redis(**redis_kwargs)
        try:
            await client.delete("pool:counter")

            async def one(i):
                await client.set(f"pool:k{i}", i)
                await client.incr("pool:counter")
                # a slow command (blocks 10 ms), so that the pool must hand out many connections
                assert await client.blpop([f"pool:empty{i}"], timeout=0.01) is None
                return int(await client.get(f"pool:k{i}"))

            values = await asyncio.gather(*(one(i) for i in range(100)))
            counter = int(await client.get("pool:counter"))
            clients = [c for c in await observer.client_list() if c["name"] == "ferroloop-pool"]
            await client.delete("pool:counter", *(f"pool:k{i}" for i in range(100)))
            return values, counter, len(clients)
        finally:
            await client.aclose()
            await pool.aclose()
            await observer.aclose()

    values, counter, n_connections = run(loop, main(), TIMEOUT)
    assert values == list(range(100))
    assert counter == 100
    assert 2 <= n_connections <= 10
