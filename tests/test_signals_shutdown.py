"""Graceful shutdown on SIGTERM, in child processes, on stock asyncio and on ferroloop.

* The example server of ``looptest_shutdown_server.py`` (``add_signal_handler``): with
  open connections, on SIGTERM it stops accepting, closes its clients and exits 0.
* uvicorn (``python -m ferroloop run -m uvicorn ...`` / ``python -m uvicorn ...``)
  serving a tiny ASGI app: SIGTERM while a slow request is in flight; the request is
  answered, the server shuts down. uvicorn catches SIGTERM with ``signal.signal`` and
  raises it again once it has shut down (uvicorn >= 0.29), so the process ends by
  SIGTERM (-15) after a clean shutdown, on both loops.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent


def start(args, **kwargs):
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, **kwargs,
    )  # fmt: skip


def finish(proc, timeout=30):
    """``(returncode, stdout lines, stderr)``; kills the process group on timeout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"did not exit within {timeout}s\n{out}\n{err}") from None
    return proc.returncode, out.splitlines(), err


def test_server_shuts_down_gracefully_on_sigterm(loop_impl):
    proc = start([sys.executable, str(HERE / "looptest_shutdown_server.py"), loop_impl])
    clients = []
    try:
        first = proc.stdout.readline().split()
        assert first[0] == "listening", first
        port = int(first[1])
        for i in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"hello %d\n" % i)
            assert sock.recv(100) == b"echo: hello %d\n" % i
            clients.append(sock)
        proc.send_signal(signal.SIGTERM)
        goodbyes = []
        for sock in clients:
            data = b""
            while True:
                chunk = sock.recv(100)
                if not chunk:
                    break
                data += chunk
            goodbyes.append(data)
        assert goodbyes == [b"server shutting down\n"] * 3
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        returncode, out, err = finish(proc)
    finally:
        for sock in clients:
            sock.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert (returncode, out, err) == (
        0, ["SIGTERM: closing 3 connections", "clean exit"], ""
    )


# ------------------------------------------------------------------ uvicorn

SLOW_APP = textwrap.dedent(
    """
    import asyncio, os


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    print("lifespan shutdown on", type(asyncio.get_running_loop()).__module__,
                          flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/slow":
            open(os.environ["IN_FLIGHT_FILE"], "w").close()  # the test sends SIGTERM now
            await asyncio.sleep(1.0)
            body = b"slow done"
        else:
            body = b"fast"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    """
)


def http_get(path, uds, box):
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(20)
            sock.connect(uds)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        box["response"] = data
    except Exception as exc:  # noqa: BLE001 - reported by the test
        box["error"] = repr(exc)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_graceful_shutdown_with_a_request_in_flight(loop_impl, tmp_path, http):
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (requirements-libs.txt)")
    pytest.importorskip(http, reason=f"{http} is not installed (requirements-libs.txt)")
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    uds = str(tmp_path / "uv.sock")
    in_flight = tmp_path / "in-flight"
    uvicorn = ["-m", "uvicorn", "slowapp:app", "--uds", uds, "--loop", "none", "--http",
               http, "--lifespan", "on", "--log-level", "warning"]  # fmt: skip
    if loop_impl == "ferroloop":
        args = [sys.executable, "-m", "ferroloop", "run"] + uvicorn
    else:
        args = [sys.executable] + uvicorn
    env = dict(os.environ, IN_FLIGHT_FILE=str(in_flight), PYTHONPATH=str(tmp_path))
    proc = start(args, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(uds):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        box = {}
        fast = {}
        http_get("/fast", uds, fast)
        assert fast.get("response", b"").endswith(b"fast"), fast
        client = threading.Thread(target=http_get, args=("/slow", uds, box))
        client.start()
        while not in_flight.exists():
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        client.join(30)
        assert not client.is_alive()
        returncode, out, err = finish(proc)
        after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert "error" not in box, box
    head, _, body = box["response"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), box["response"]
    assert body == b"slow done"
    assert 0.3 < after < 20  # uvicorn waited for the request before exiting
    loop_module = "ferroloop._loop" if loop_impl == "ferroloop" else "asyncio.unix_events"
    assert out == [f"lifespan shutdown on {loop_module}"], (out, err)
    # Shut down cleanly, then uvicorn re-raises the SIGTERM it caught.
    assert returncode == -signal.SIGTERM, (returncode, err)
    assert "Traceback" not in err, err
