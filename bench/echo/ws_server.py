"""Bare `websockets` echo server: the Python ceiling for the echo benchmark.

    python -m bench.echo.ws_server --port 8100 [--host 127.0.0.1]

Same URL shape as the Channels echo app (/ws/echo/<thread>/); one process, the
groups are an in-process dict, so there is no channel layer at all.
"""

import argparse
import asyncio
import signal
from collections import defaultdict
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

PREFIX = "/ws/echo/"
LIVENESS = "/health/liveness"
# Same ceiling as Emergence's WS_MAX_MESSAGE_BYTES default.
MAX_SIZE = 65536

threads: dict[str, set[ServerConnection]] = defaultdict(set)


def thread_of(path: str) -> str | None:
    """The <thread> of /ws/echo/<thread>/, or None for any other path."""
    path = path.split("?", 1)[0]
    if not path.startswith(PREFIX):
        return None
    thread = path[len(PREFIX) :].rstrip("/")
    return thread if thread and "/" not in thread else None


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """Answer the liveness probe and unknown paths before any handshake."""
    if request.path.split("?", 1)[0].rstrip("/") == LIVENESS:
        # Plain HTTP GET: no Upgrade header, so answer before the handshake check.
        return connection.respond(HTTPStatus.OK, '{"status":"alive"}\n')
    if thread_of(request.path) is None:
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def handler(connection: ServerConnection) -> None:
    """Broadcast every text message to every socket of the thread."""
    thread = thread_of(connection.request.path)
    members = threads[thread]
    members.add(connection)
    try:
        async for message in connection:
            if isinstance(message, str):
                broadcast(members, message)
    finally:
        members.discard(connection)
        if not members:
            del threads[thread]


async def main(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then close every socket with 1001."""
    async with serve(
        handler,
        host,
        port,
        process_request=process_request,
        # No keepalive pings: idle sockets stay silent; pings are not what we measure.
        ping_interval=None,
        # Daphne negotiates no permessage-deflate: compare uncompressed frames.
        compression=None,
        max_size=MAX_SIZE,
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        await server.wait_closed()


def cli() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))


if __name__ == "__main__":
    cli()
