"""Example: an asyncio server that shuts down gracefully on SIGTERM.

    python tests/looptest_shutdown_server.py ferroloop   # or: asyncio

It serves a line-echo protocol on a free port of 127.0.0.1 and prints
``listening PORT``. On SIGTERM (a handler added with ``loop.add_signal_handler``) it
stops accepting, tells each open connection ``server shutting down``, closes it, waits
for the connection handlers to finish, removes its handler and exits with status 0.
``test_signals_shutdown.py`` runs it on both loops. (Deliberately unusual module name,
see ``looptest_support``; it is a script, not a test module.)
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def serve():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    clients = {}  # writer -> handler task

    async def handle(reader, writer):
        clients[writer] = asyncio.current_task()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(b"echo: " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            clients.pop(writer, None)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("listening", server.sockets[0].getsockname()[1], flush=True)

    await stop.wait()
    print(f"SIGTERM: closing {len(clients)} connections", flush=True)
    server.close()  # stop accepting
    handlers = list(clients.values())
    for writer in list(clients):
        writer.write(b"server shutting down\n")
        writer.close()  # flushes, then closes: the handler's readline() sees EOF
    await asyncio.gather(*handlers)
    await server.wait_closed()
    loop.remove_signal_handler(signal.SIGTERM)
    print("clean exit", flush=True)


def main(impl):
    if impl == "ferroloop":
        import ferroloop

        ferroloop.run(serve())
    else:
        asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1])
