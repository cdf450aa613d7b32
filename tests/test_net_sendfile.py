"""``loop.sendfile`` on stream transports, and what a transport is (its type, its face).

Every test runs on stock asyncio and on ferroloop (the loop fixtures of ``conftest.py``).
Both loops take the native path (``os.sendfile``) for a plain TCP or Unix transport; the
tests check the bytes that arrive, the file position afterwards, that ``write`` is refused
while a sendfile runs, and that reading and writing go on as before once it is done.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import warnings

import pytest

from looptest_net import MB, Recorder, connected_pair, read_until_eof, run, wrap


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(3 * MB + 123)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


def test_transports_are_asyncio_transports(loop, kind):
    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            facts = (
                isinstance(tr, asyncio.Transport),
                isinstance(tr, asyncio.ReadTransport),
                isinstance(tr, asyncio.WriteTransport),
                pr.transport is tr,
                tr.get_protocol() is pr,
            )
            tr.close()
            await pr.lost
            return facts

    assert run(loop, main()) == (True, True, True, True, True)


def test_server_side_transports_are_asyncio_transports(loop):
    seen = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(isinstance(transport, asyncio.Transport))
            transport.close()

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            return isinstance(writer.transport, asyncio.Transport)

    assert run(loop, main()) is True
    assert seen == [True]


def test_sendfile_whole_file(loop, kind, data_file):
    f, data = data_file

    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            receiving = asyncio.ensure_future(read_until_eof(loop, b))
            tr.write(b"head:")
            sent = await loop.sendfile(tr, f)
            tr.write(b":tail")  # writing works again afterwards
            tr.close()
            received = await receiving
            await pr.lost
            return sent, f.tell(), hashlib.sha256(received).hexdigest()

    expected = hashlib.sha256(b"head:" + data + b":tail").hexdigest()
    assert run(loop, main()) == (len(data), len(data), expected)


def test_sendfile_offset_and_count(loop, kind, data_file):
    f, data = data_file

    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            receiving = asyncio.ensure_future(read_until_eof(loop, b))
            sent = await loop.sendfile(tr, f, offset=1000, count=MB)
            tr.close()
            received = await receiving
            await pr.lost
            return sent, f.tell(), received == data[1000 : 1000 + MB]

    assert run(loop, main()) == (MB, 1000 + MB, True)


def test_write_refused_while_sendfile_runs(loop, kind, data_file):
    f, data = data_file

    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            started = loop.create_future()

            async def send():
                started.set_result(None)
                return await loop.sendfile(tr, f)

            task = asyncio.ensure_future(send())
            await started
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                tr.write(b"x")
            received = await read_until_eof(loop, b, limit=len(data))
            sent = await task
            tr.close()
            await pr.lost
            return sent, received == data

    assert run(loop, main()) == (len(data), True)


def test_sendfile_keeps_reading_state(loop, kind, data_file):
    f, data = data_file

    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            receiving = asyncio.ensure_future(read_until_eof(loop, b, limit=len(data)))
            await loop.sendfile(tr, f)
            await receiving
            reading_after = tr.is_reading()
            await loop.sock_sendall(b, b"still here")
            while pr.data != b"still here":
                await asyncio.sleep(0.002)
            tr.close()
            await pr.lost
            return reading_after

    assert run(loop, main()) is True


def test_sendfile_to_a_peer_that_closes(loop, kind, data_file):
    f, _ = data_file

    async def main():
        a, b = connected_pair(kind, small_buffers=True)
        tr, pr = await wrap(loop, a, lambda: Recorder(loop))
        task = asyncio.ensure_future(loop.sendfile(tr, f))
        await asyncio.sleep(0.01)
        b.close()
        try:
            await task
        except ConnectionError as exc:
            return "ConnectionError", isinstance(exc, OSError)
        finally:
            tr.close()
            await pr.lost
        return "no error", None

    assert run(loop, main()) == ("ConnectionError", True)


def test_unclosed_transport_warns_and_closes_its_socket(loop, kind):
    async def main():
        a, b = connected_pair(kind)
        with b:
            tr, pr = await wrap(loop, a, lambda: Recorder(loop))
            tr.pause_reading()  # nothing registered with the loop any more
            del tr
            pr.transport = pr.made = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gc.collect()
            unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
            return [str(w.message).split(" ")[:2] for w in unclosed], a.fileno()

    assert run(loop, main()) == ([["unclosed", "transport"]], -1)
