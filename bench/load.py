"""The load generator's sockets: one client API over Emergence and the echo baselines.

Clients stay cheap so that the server, not the load generator, is what is measured:
frames are matched by looking for a message id in the raw text (no JSON decoding of
every broadcast), and every socket's frames are drained by one reader task so that
no server ever stalls on a full client buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.harness import Cluster
from bench.servers import Server

OPEN_TIMEOUT = 30.0
# How long connect_many keeps trying a socket the server refused as `overloaded`.
OVERLOADED_PATIENCE = 60.0


class Sock:
    """One open client socket; `on_frame(raw, now)` sees every text frame."""

    def __init__(self, ws: Any, on_frame: Callable[[str, float], None] | None) -> None:
        self.ws = ws
        self.on_frame = on_frame
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError, asyncio.CancelledError):
            async for raw in self.ws:
                if self.on_frame is not None:
                    self.on_frame(raw, time.perf_counter())

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    def abort(self) -> None:
        """Drop the TCP connection with no close frame (a dead tab, a lost network)."""
        self.ws.transport.abort()

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


def url(cluster: Cluster, server: Server, session_id: str, thread: str) -> str:
    """The socket URL on one server of a cluster.

    Threads and sessions are named per cluster: the bench database outlives a run,
    and a message id reused in an old thread would be acked as a duplicate.
    """
    session_id, thread = f"{cluster.nonce}{session_id}", f"{cluster.nonce}{thread}"
    if cluster.emergence:
        return f"{server.ws}/ws/{session_id}/?thread_id={thread}"
    return f"{server.ws}/ws/echo/{thread}/"


def chat_frame(message_id: str, text: str = "x") -> str:
    """A chat message; the echo baselines relay the same text unparsed."""
    return json.dumps({"type": "chat.message", "id": message_id, "text": text})


async def connect(
    cluster: Cluster,
    server: Server,
    session_id: str,
    thread: str,
    on_frame: Callable[[str, float], None] | None = None,
    *,
    marks: dict[str, float] | None = None,
    timeout: float | None = None,
) -> Sock:
    """Open a socket and wait until it is usable.

    For Emergence that is the `presence` frame: the session is loaded, the replay (if
    any) sent and the presence snapshot taken. For an echo server, the handshake.
    `timeout` (if given) bounds the whole attempt; otherwise the handshake and then
    the wait for presence get OPEN_TIMEOUT each. `marks` (if given) gets the
    perf_counter of the "handshake" and, for Emergence, of the "first_frame".
    """
    deadline = time.perf_counter() + (timeout or OPEN_TIMEOUT)
    kwargs: dict[str, Any] = {
        "proxy": None,
        "open_timeout": timeout or OPEN_TIMEOUT,
        "ping_interval": None,
        "close_timeout": 5,
        "max_queue": None,
    }
    if cluster.emergence:
        kwargs["subprotocols"] = ["jwt", cluster.token]
    ws = await websockets.connect(url(cluster, server, session_id, thread), **kwargs)
    if marks is not None:
        marks["handshake"] = time.perf_counter()
    if timeout is None:
        deadline = time.perf_counter() + OPEN_TIMEOUT
    if cluster.emergence:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                while True:
                    # Only the first few frames are decoded; broadcasts never are.
                    frame = json.loads(await ws.recv())
                    if marks is not None:
                        marks.setdefault("first_frame", time.perf_counter())
                    kind = frame.get("type")
                    if kind == "presence":
                        break
                    if kind == "error":
                        raise ConnectError.from_frame(frame)
        except BaseException:
            ws.transport.abort()
            raise
    return Sock(ws, on_frame)


class ConnectError(Exception):
    """The server refused or closed a socket while it was being established."""

    def __init__(
        self, message: str, code: str = "", retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> ConnectError:
        """An `error` frame before presence (e.g. `overloaded` with retry_after_ms)."""
        code = str(frame.get("code") or "")
        wait = frame.get("retry_after_ms")
        number = isinstance(wait, int | float) and not isinstance(wait, bool)
        valid = number and math.isfinite(wait) and wait >= 0
        retry_after_ms = int(wait) if valid else None
        return cls(f"error frame before presence: {code}", code, retry_after_ms)


def overloaded_wait(exc: BaseException) -> float | None:
    """Seconds an `overloaded` refusal says to wait (0.5 if unsaid); None otherwise."""
    if not (isinstance(exc, ConnectError) and exc.code == "overloaded"):
        return None
    return (exc.retry_after_ms or 500) / 1000


CONNECT_ERRORS = (
    ConnectError,
    ConnectionClosed,
    InvalidStatus,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    websockets.exceptions.InvalidHandshake,
)


async def connect_many(
    cluster: Cluster,
    count: int,
    *,
    threads: int,
    server_index: Callable[[int], int] = lambda i: 0,
    concurrency: int = 100,
    tag: str = "s",
    on_frame: Callable[[int], Callable[[str, float], None] | None] = lambda i: None,
    setup: bool = False,
) -> tuple[list[Sock], int]:
    """Open `count` sockets spread over `threads` threads; return them and failures.

    With `setup` (the sockets a scenario needs before what it measures) a connect
    that failed is tried again too, within the same bound.

    A connect refused as `overloaded` (admission control) is tried again after the
    server's retry_after_ms, for a bounded time: setting a scenario up is not what
    it measures.
    """
    gate = asyncio.Semaphore(concurrency)
    socks: list[Sock | None] = [None] * count
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        server = cluster.servers[server_index(i) % len(cluster.servers)]
        async with gate:
            # From its first attempt: time queued at the gate is not patience spent
            # (10,000 sockets through 100 at a time take longer than the patience).
            deadline = time.perf_counter() + OVERLOADED_PATIENCE
            while True:
                try:
                    socks[i] = await connect(
                        cluster,
                        server,
                        f"{tag}-{i}",
                        f"{tag}-t{i % threads}",
                        on_frame(i),
                    )
                    return
                except ConnectError as exc:
                    wait = overloaded_wait(exc)
                    if wait is None or time.perf_counter() > deadline:
                        failures += 1
                        return
                    await asyncio.sleep(wait)
                except CONNECT_ERRORS:
                    if not setup or time.perf_counter() > deadline:
                        failures += 1
                        return
                    await asyncio.sleep(0.5)  # a busy box timed it out: try again

    await asyncio.gather(*(one(i) for i in range(count)))
    return [s for s in socks if s is not None], failures


def abort_all(socks: list[Sock]) -> None:
    """Abort every socket in one go (same loop turn)."""
    for sock in socks:
        with contextlib.suppress(Exception):
            sock.abort()
        sock.reader.cancel()


async def close_all(socks: list[Sock]) -> None:
    """Close every socket normally (1000), a bounded number at a time."""
    for start in range(0, len(socks), 200):
        await asyncio.gather(*(s.close() for s in socks[start : start + 200]))
