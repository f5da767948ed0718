"""Redis (channel layer and shared state) restarted for real while sockets chat."""

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

from bench.infra import PrivateRedis
from tests.e2e.wsclient import append_figure, assert_in_order_once, ws_url

pytestmark = pytest.mark.faults


@pytest.fixture
def private_redis():
    """A redis-server of this test's own (bench/infra.py): stop and start it."""
    with PrivateRedis() as server:
        yield server


class Resuming:
    """A client that reconnects after any close and resumes from the last seq seen."""

    def __init__(self, server, session_id: str, token: str) -> None:
        self.server, self.session_id, self.token = server, session_id, token
        self.seqs: list[int] = []
        self.closes: list[int] = []
        self.stopped = False
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        import websockets

        while not self.stopped:
            last = self.seqs[-1] if self.seqs else None
            url = ws_url(self.server, self.session_id, thread_id="main", last_seq=last)
            try:
                async with websockets.connect(
                    url,
                    subprotocols=["jwt", self.token],
                    proxy=None,
                    open_timeout=5,
                    ping_interval=None,
                ) as ws:
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame["type"] == "chat.message":
                            self.seqs.append(frame["seq"])
                    self.closes.append(ws.close_code)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                self.closes.append(getattr(getattr(exc, "rcvd", None), "code", -1))
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.stopped = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


def readiness(server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{server.http}/health/readiness", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_redis_restart_loses_no_message(
    daphne, private_redis, alice, bob, token_for
):
    env = {
        "REDIS_URL": private_redis.url(),
        "WS_RATE_LIMIT": "1000",
        "WS_USER_RATE_LIMIT": "1000",
    }
    a = daphne("a", **env)
    b = daphne("b", **env)
    readers = [
        Resuming(a, "r-a", token_for(alice)),
        Resuming(b, "r-b", token_for(bob)),
    ]
    sender = Resuming(b, "sender", token_for(bob))
    await asyncio.sleep(1.0)
    total, acked = 60, set()

    sending = asyncio.create_task(
        send_until_acked(b, token_for(bob), range(total), acked)
    )
    await asyncio.sleep(1.0)
    private_redis.kill()
    down_at = time.monotonic()
    await asyncio.sleep(0.5)
    status, report = await asyncio.to_thread(readiness, a)
    assert status == 503
    assert report["components"]["channel_layer"]["status"] == "down"
    assert report["components"]["database"]["status"] == "up"
    await asyncio.sleep(1.5)
    private_redis.start()
    up_at = time.monotonic()
    await asyncio.wait_for(sending, 60)
    sent_all_at = time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
        r.seqs and r.seqs[-1] >= total for r in readers
    ):
        await asyncio.sleep(0.1)
    for reader in [*readers, sender]:
        await reader.stop()
    for reader in readers:
        assert_in_order_once(reader.seqs, 1, total)
        # core layer: sockets closed 1013 and resumed; pubsub: sockets stayed open
        assert set(reader.closes) <= {1013}, reader.closes
    status, _ = await asyncio.to_thread(readiness, a)
    assert status == 200
    append_figure(
        f"redis restart: down {up_at - down_at:.1f}s, all {total} messages acked "
        f"{sent_all_at - up_at:.1f}s after Redis was back, no loss, no duplicate"
    )
    for server in (a, b):
        warnings = server.events("channel_layer_unavailable")
        assert all(r["level"] == "WARNING" for r in warnings)
        assert_no_errors_but_readiness(server)


def assert_no_errors_but_readiness(server) -> None:
    """No ERROR but Django's own record of the 503 readiness answers we asked for."""
    errors = [
        r
        for r in server.records()
        if r.get("level") in ("ERROR", "CRITICAL")
        and not (r.get("logger") == "django.request" and "readiness" in r["message"])
    ]
    assert not errors, [r.get("exc_info", r["message"])[-1500:] for r in errors]
    assert "Traceback" not in server.log_text()


async def send_until_acked(server, token: str, ids: range, acked: set) -> None:
    """Send w<i> for each id, each until acked, over reconnects (ids make it safe)."""
    import websockets

    pending = list(ids)
    while pending:
        try:
            async with websockets.connect(
                ws_url(server, "writer", thread_id="main"),
                subprotocols=["jwt", token],
                proxy=None,
                open_timeout=5,
                ping_interval=None,
            ) as ws:
                while pending:
                    i = pending[0]
                    await ws.send(
                        json.dumps(
                            {"type": "chat.message", "id": f"w{i}", "text": str(i)}
                        )
                    )
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if frame["type"] == "ack" and frame["id"] == f"w{i}":
                            acked.add(pending.pop(0))
                            break
                    await asyncio.sleep(0.05)
        except (ConnectionClosed, OSError, TimeoutError):
            await asyncio.sleep(0.3)


async def test_messages_sent_around_the_outage_reach_open_sockets(
    daphne, private_redis, alice, bob, token_for
):
    """The last messages fall into the outage and nothing follows them."""
    env = {
        "REDIS_URL": private_redis.url(),
        "WS_RATE_LIMIT": "1000",
        "WS_USER_RATE_LIMIT": "1000",
        "PRESENCE_REFRESH_SECONDS": "1",
    }
    a = daphne("a", **env)
    b = daphne("b", **env)
    readers = [Resuming(a, "t-a", token_for(alice)), Resuming(b, "t-b", token_for(bob))]
    await asyncio.sleep(1.0)
    acked: set = set()
    await send_until_acked(b, token_for(bob), range(5), acked)
    private_redis.kill()
    await asyncio.sleep(0.5)
    sending = asyncio.create_task(
        send_until_acked(b, token_for(bob), range(5, 10), acked)
    )
    await asyncio.sleep(2.0)
    private_redis.start()
    back_at = time.monotonic()
    await asyncio.wait_for(sending, 60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        r.seqs and r.seqs[-1] >= 10 for r in readers
    ):
        await asyncio.sleep(0.1)
    caught_up = time.monotonic() - back_at
    for reader in readers:
        await reader.stop()
    for reader in readers:
        assert_in_order_once(reader.seqs, 1, 10)
    append_figure(
        f"redis outage tail: open sockets had every message {caught_up:.1f}s after "
        f"Redis was back, with no later message to reveal the gap"
    )
    for server in (a, b):
        assert_no_errors_but_readiness(server)


async def open_and_read(server, token: str, session_id: str) -> tuple[list, int]:
    """Open a socket, read every frame until the server closes it: (frames, code)."""
    import websockets

    frames = []
    async with websockets.connect(
        ws_url(server, session_id, thread_id="main"),
        subprotocols=["jwt", token],
        proxy=None,
        open_timeout=10,
        ping_interval=None,
    ) as ws:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frames.append(json.loads(raw))
    return frames, ws.close_code


@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_redis_down_at_connect_is_a_frame_and_1013(
    daphne, private_redis, alice, token_for, layer
):
    """Accepted at once, `layer_unavailable`, then 1013: never a handshake timeout."""
    env = {"REDIS_URL": private_redis.url(), "CHANNEL_LAYER": layer}
    server = daphne("a", **env)
    private_redis.kill()
    started = time.monotonic()
    frames, code = await asyncio.wait_for(
        open_and_read(server, token_for(alice), "down-at-connect"), 30
    )
    assert code == 1013
    assert [f.get("code") for f in frames if f["type"] == "error"] == [
        "layer_unavailable"
    ], frames
    records: list = []
    deadline = time.monotonic() + 10  # the server writes its log from a thread
    while not records and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        records = [
            r
            for r in server.events("ws_disconnect")
            if r.get("session_id") == "down-at-connect"
        ]
    assert [(r["code"], r["level"]) for r in records] == [(1013, "WARNING")], records
    append_figure(
        f"redis down at connect ({layer}): layer_unavailable + 1013 after "
        f"{time.monotonic() - started:.1f}s"
    )
    private_redis.start()
    assert_no_errors_but_readiness(server)


async def test_redis_lost_mid_session_sends_layer_unavailable(
    daphne, private_redis, alice, token_for
):
    """The core layer's receive loop dies with Redis: the frame, then 1013."""
    import websockets

    server = daphne("a", REDIS_URL=private_redis.url(), CHANNEL_LAYER="core")
    async with websockets.connect(
        ws_url(server, "lost-mid-session", thread_id="main"),
        subprotocols=["jwt", token_for(alice)],
        proxy=None,
        open_timeout=10,
        ping_interval=None,
    ) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "ws:session_established"
        private_redis.kill()
        frames = []
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(30):
                async for raw in ws:
                    frames.append(json.loads(raw))
    private_redis.start()
    assert ws.close_code == 1013
    assert frames[-1] == {
        "type": "error",
        "code": "layer_unavailable",
        "detail": "channel layer unavailable",
    }, frames
    assert_no_errors_but_readiness(server)
