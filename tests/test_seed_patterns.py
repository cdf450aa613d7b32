"""The main job's patterns (``benchmarks/_seed_core.py`` and ``_seed_io.py``, run by
``scripts/demo.sh``) as tests: each runs on stock asyncio and on the loop under test, and
the two results must be equal. The core patterns are gather, timeouts, Semaphore,
TaskGroup, cancellation and executors; the I/O patterns drive real libraries over
loopback: aiohttp (a JSON API fetched with ``gather``, a crawler over 3,000 generated
pages), ``websockets`` (a chat room, 40,000 deliveries), redis-py and asyncpg pools
against the session's real servers.

The results themselves are checked too, so that "equal" cannot mean "equally broken":
every page crawled, every chat message heard by every member in order, every row written.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from looptest_services import postgres_server, redis_server  # noqa: F401 (fixtures)

pytest.importorskip("aiohttp", reason="aiohttp is not installed (requirements-libs.txt)")
pytest.importorskip("websockets", reason="websockets is not installed (requirements-libs.txt)")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
import _seed_core  # noqa: E402  (the demo's modules, from benchmarks/)
import _seed_io  # noqa: E402


def _run_pattern(pattern):
    def scenario(loop):
        # JSON round trip: the demo compares results the same way across processes.
        return json.loads(json.dumps(loop.run_until_complete(pattern())))
    return scenario


@pytest.mark.parametrize("name", [name for name, _ in _seed_core.CORE_PATTERNS])
def test_core_pattern(compare, name):
    result = compare(_run_pattern(dict(_seed_core.CORE_PATTERNS)[name]))
    if name == "taskgroup" and not _seed_core.HAS_TASKGROUP:
        assert result.startswith("skipped")  # no TaskGroup before Python 3.11
    else:
        assert isinstance(result, dict) and result  # the pattern's data, equal on both


def test_http_gather(compare):
    result = compare(_run_pattern(_seed_io.http_gather))
    assert result["items"] == 2000 and result["in_order"]
    assert result["sum_of_squares"] == sum(i * i for i in range(2000))


def test_crawler_reaches_every_page_once(compare):
    result = compare(_run_pattern(_seed_io.crawler))
    assert result["pages"] == _seed_io.SITE_PAGES
    assert result["peak_in_flight_within_limit"]


def test_ws_chat_delivers_every_message_in_order(compare):
    result = compare(_run_pattern(_seed_io.ws_chat))
    assert result == {"members": _seed_io.CHAT_CLIENTS,
                      "deliveries": _seed_io.CHAT_CLIENTS ** 2 * _seed_io.CHAT_MESSAGES,
                      "every_sender_heard_by_all": True, "per_sender_order_kept": True}


def test_redis_pool(compare, redis_server, monkeypatch):  # noqa: F811 (fixture)
    monkeypatch.setenv(_seed_io.SERVICE_ENV["redis"], f"{redis_server.host}:{redis_server.port}")
    result = compare(_run_pattern(_seed_io.redis_pool))
    assert result["counter"] == 400 and result["keys"] == 402  # 400 items, counter, hash
    assert sum(result["buckets"].values()) == sum(range(400))


def test_pg_pool(compare, postgres_server, monkeypatch):  # noqa: F811 (fixture)
    monkeypatch.setenv(_seed_io.SERVICE_ENV["postgres"],
                       f"{postgres_server.host}:{postgres_server.port}")
    result = compare(_run_pattern(_seed_io.pg_pool))
    assert result["rows"] == 200 * 5
    assert result["total_qty"] == sum((c * i) % 7 + 1 for c in range(200) for i in range(5))
