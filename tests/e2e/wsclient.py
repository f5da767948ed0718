"""A small WebSocket test client over `websockets` for the e2e and fault tests.

Every frame a socket receives is recorded by a background reader, so that a test can
wait for a condition (an ack, a seq) without losing the frames that came before it.
Every wait is bounded.
"""

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from tests.servers import test_database_url

DEFAULT_TIMEOUT = 10.0


def ws_url(server: Any, session_id: str, **query: Any) -> str:
    """The socket URL of a Daphne process, with the query parameters given."""
    params = {k: v for k, v in query.items() if v is not None}
    suffix = f"?{urlencode(params)}" if params else ""
    return f"{server.ws}/ws/{session_id}/{suffix}"


async def open_ws(url: str, token: str | None = None, **kwargs: Any) -> Any:
    """websockets.connect on loopback only (never through a configured proxy)."""
    kwargs.setdefault("open_timeout", DEFAULT_TIMEOUT)
    kwargs.setdefault("close_timeout", 5)
    kwargs.setdefault("ping_interval", None)
    if token is not None:
        kwargs["subprotocols"] = ["jwt", token]
    return await websockets.connect(url, proxy=None, **kwargs)


class WsClient:
    """One open socket and every frame it has received so far."""

    def __init__(self, ws: Any, name: str = "") -> None:
        self.ws = ws
        self.name = name
        self.frames: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    # --- reading --------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def seqs(self) -> list[int]:
        """The seqs of every chat.message received, in arrival order."""
        return [f["seq"] for f in self.of_type("chat.message")]

    def acks(self) -> dict[str, dict[str, Any]]:
        """The last ack per client message id."""
        return {f["id"]: f for f in self.of_type("ack")}

    async def wait(
        self,
        predicate: Callable[[], Any],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "",
    ) -> Any:
        """Wait until predicate() is truthy (checked on every frame); return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                value = predicate()
                if value:
                    return value
                state = f"closed code={self.close_code}" if self.closed else "open"
                raise AssertionError(
                    f"{self.name}: timed out waiting for {what or predicate} "
                    f"({state}); last frames: {self.frames[-5:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def wait_frame(
        self, kind: str, timeout: float = DEFAULT_TIMEOUT, start: int = 0
    ) -> dict[str, Any]:
        """The first frame of a type at index >= start."""

        def found() -> dict[str, Any] | None:
            for frame in self.frames[start:]:
                if frame.get("type") == kind:
                    return frame
            return None

        return await self.wait(found, timeout, what=f"a {kind!r} frame")

    async def wait_seq(self, seq: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a chat.message with this seq (or a later one) arrived."""
        await self.wait(
            lambda: any(s >= seq for s in self.seqs()), timeout, what=f"seq {seq}"
        )

    async def wait_ack(self, client_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        return await self.wait(
            lambda: self.acks().get(client_id), timeout, what=f"ack of {client_id!r}"
        )

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        await self.wait(lambda: self.closed, timeout, what="the close")
        return self.close_code

    # --- writing --------------------------------------------------------------------

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def say(self, client_id: str, text: str | None = None) -> None:
        await self.send(type="chat.message", id=client_id, text=text or client_id)

    async def chat(self, client_id: str, text: str | None = None) -> dict[str, Any]:
        """Send a chat.message and return its ack."""
        await self.say(client_id, text)
        return await self.wait_ack(client_id)

    async def close(self, code: int = 1000) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await self.ws.close(code=code)
        await self.stop_reader()

    def abort(self) -> None:
        """Drop the TCP connection with no closing handshake (the server sees 1006)."""
        self.ws.transport.abort()

    async def stop_reader(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 5)
        if not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class Clients:
    """Opens sockets for a test and closes every one of them at teardown."""

    def __init__(self) -> None:
        self.opened: list[WsClient] = []

    async def open(
        self,
        server: Any,
        session_id: str,
        token: str | None,
        *,
        thread_id: str | None = "main",
        last_seq: int | None = None,
        established: bool = True,
        name: str = "",
        **kwargs: Any,
    ) -> WsClient:
        """Connect; by default wait for ws:session_established and check it."""
        url = ws_url(server, session_id, thread_id=thread_id, last_seq=last_seq)
        ws = await open_ws(url, token, **kwargs)
        client = WsClient(ws, name or session_id)
        self.opened.append(client)
        if established:
            hello = await client.wait_frame("ws:session_established")
            assert client.frames[0] is hello, client.frames
            assert hello["session_id"] == session_id
            assert ws.subprotocol == ("jwt" if token is not None else None)
        return client

    async def close_all(self) -> None:
        for client in self.opened:
            if not client.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 6)
            await client.stop_reader()


def hello_of(client: WsClient) -> dict[str, Any]:
    """The ws:session_established frame of a socket."""
    frames = client.of_type("ws:session_established")
    assert len(frames) == 1, client.frames
    return frames[0]


def assert_in_order_once(seqs: list[int], first: int, last: int) -> None:
    """Every seq first..last exactly once, strictly increasing, nothing else."""
    expected = list(range(first, last + 1))
    if seqs != expected:
        dupes = sorted({s for s in seqs if seqs.count(s) > 1})
        missing = sorted(set(expected) - set(seqs))
        disorder = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b <= a]
        raise AssertionError(
            f"expected seqs {first}..{last} once in order; got {len(seqs)} frames, "
            f"duplicates={dupes[:20]} missing={missing[:20]} "
            f"out_of_order={disorder[:10]}"
        )


async def sql(query: str, *params: Any) -> list[tuple]:
    """Run SQL on the test database over a fresh connection of the test's own."""
    url = test_database_url("emergence-test-runner")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(query, params or None)
        if cursor.description is None:
            return []
        return await cursor.fetchall()


async def stored_seqs(thread_id: str) -> list[int]:
    rows = await sql(
        "SELECT seq FROM chat_message WHERE thread_id = %s ORDER BY seq", thread_id
    )
    return [row[0] for row in rows]


def records_after(server: Any, event: str, **fields: Any) -> list[dict[str, Any]]:
    """The log records of an event whose fields equal the ones given."""
    return [
        r for r in server.events(event) if all(r.get(k) == v for k, v in fields.items())
    ]


async def wait_log(
    server: Any, event: str, timeout: float = DEFAULT_TIMEOUT, count: int = 1, **fields
) -> list[dict[str, Any]]:
    """Wait (bounded) until the server logged `count` records of an event."""
    deadline = time.monotonic() + timeout
    while True:
        found = records_after(server, event, **fields)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {count} {event} record(s) with {fields} within {timeout}s: "
                f"{server.events(event)}\n{server.log_text()[-3000:]}"
            )
        await asyncio.sleep(0.05)


def append_figure(line: str) -> None:
    """Print a measured figure and append it to test-artifacts/e2e-figures.txt."""
    from tests.servers import ROOT

    out = ROOT / "test-artifacts" / "e2e-figures.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with out.open("a") as fh:
        fh.write(f"{stamp} {line}\n")
    print(f"\n[E2E FIGURE] {line}")


def isolated_daphne(start: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Wrap the `daphne` fixture: every Daphne of one test shares Redis key prefixes
    (channel layer, shared state, cache) that no other test or test run uses.

    The suite-wide prefix is swept by every test's setup (tests/conftest.py), so a
    second pytest run on the same Redis would otherwise delete this test's channel
    groups mid-test. The processes are stopped, then the keys deleted.
    """
    from django.conf import settings

    prefix = f"emergence-e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    started: list[Any] = []

    def start_isolated(name: str = "a", **env: str) -> Any:
        env = {
            "CHANNEL_LAYER_PREFIX": prefix,
            "SHARED_KEY_PREFIX": prefix,
            "CACHE_KEY_PREFIX": prefix,
            **env,
        }
        proc = start(name, **env)
        started.append(proc)
        return proc

    yield start_isolated
    for proc in started:
        proc.stop()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
