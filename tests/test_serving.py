"""Serving on ferroloop from the command line, the ways the README documents.

Each test starts a real server process and queries it over loopback: uvicorn's own CLI
with ``--loop ferroloop:new_event_loop`` (uvicorn imports a loop factory by name),
gunicorn with ferroloop's uvicorn worker class (``-k ferroloop.gunicorn.UvicornWorker``,
two workers), Hypercorn's CLI under ``python -m ferroloop run`` with ``--workers 0``
(Hypercorn serves in its own process then; its worker processes are started with
multiprocessing's spawn method, fresh interpreters that would not have ferroloop
installed), aiohttp's ``web.run_app`` under ``python -m ferroloop run``, and two worker
processes sharing one port with ``reuse_port``. The apps answer with the module of their
running loop's class and their pid, so the test sees which loop, in which process, served
it. (ferroloop only: these are the documented ways to *choose* ferroloop.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from looptest_servers import free_port

pytest.importorskip("uvicorn", reason="uvicorn is not installed (requirements-libs.txt)")
pytest.importorskip("aiohttp", reason="aiohttp is not installed (requirements-libs.txt)")

ASGI_APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = asyncio.get_running_loop()
    body = f"{type(loop).__module__} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""

AIOHTTP_APP = """
import asyncio, os, sys
from aiohttp import web

async def hello(request):
    loop = asyncio.get_running_loop()
    return web.Response(text=f"{type(loop).__module__} {os.getpid()}")

app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True, print=None)
"""


def get(port, deadline=15.0):
    """The body of GET / once the server answers (polls while it starts)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(*argv, env=None):
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=tmp_path,
            env=None if env is None else {**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_uvicorn_cli_with_a_ferroloop_loop_factory(serve, tmp_path):
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    port = free_port()
    serve("-m", "uvicorn", "asgi_app:app", "--loop", "ferroloop:new_event_loop",
          "--port", str(port), "--log-level", "warning")  # fmt: skip
    assert get(port).split()[0] == "ferroloop._loop"


def answering_pids(port, count, deadline=20.0):
    """The pids of the processes that answer GET / until ``count`` have (or the deadline)."""
    seen = set()
    end = time.monotonic() + deadline
    while len(seen) < count and time.monotonic() < end:
        module, pid = get(port).split()
        assert module == "ferroloop._loop"
        seen.add(int(pid))
    return seen


def test_gunicorn_with_ferroloops_uvicorn_worker_class(serve, tmp_path):
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (requirements-libs.txt)")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    port = free_port()
    # XDG_RUNTIME_DIR: where gunicorn 25.1+ puts its control socket (else in ~/.gunicorn).
    master = serve("-m", "gunicorn", "-k", "ferroloop.gunicorn.UvicornWorker", "-w", "2",
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning", "asgi_app:app",
                   env={"XDG_RUNTIME_DIR": str(tmp_path)})  # fmt: skip
    workers = answering_pids(port, 2)
    assert len(workers) == 2 and master.pid not in workers, "both workers answer, on ferroloop"


def test_hypercorn_cli_under_python_m_ferroloop_run(serve, tmp_path):
    pytest.importorskip("hypercorn", reason="hypercorn is not installed (requirements-libs.txt)")
    (tmp_path / "asgi_app.py").write_text(ASGI_APP)
    port = free_port()
    server = serve("-m", "ferroloop", "run", "-m", "hypercorn", "--workers", "0",
                   "--bind", f"127.0.0.1:{port}", "asgi_app:app")  # fmt: skip
    module, pid = get(port).split()
    assert module == "ferroloop._loop"
    assert int(pid) == server.pid, "--workers 0: Hypercorn serves in its own process"


def test_aiohttp_run_app_under_python_m_ferroloop_run(serve, tmp_path):
    (tmp_path / "aio_app.py").write_text(AIOHTTP_APP)
    port = free_port()
    serve("-m", "ferroloop", "run", "aio_app.py", str(port))
    assert get(port).split()[0] == "ferroloop._loop"


def test_two_workers_share_one_port_with_reuse_port(serve, tmp_path):
    (tmp_path / "aio_app.py").write_text(AIOHTTP_APP)
    port = free_port()
    workers = [serve("-m", "ferroloop", "run", "aio_app.py", str(port)) for _ in range(2)]
    seen = answering_pids(port, 2)
    assert seen == {w.pid for w in workers}, "the kernel spread connections over both"
