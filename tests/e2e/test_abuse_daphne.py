"""One client against a real Daphne: replay amplification and frames Daphne refuses.

Each test asserts the close code or frames, that /health/liveness stays fast and a
normal socket keeps working, that the process's memory stays bounded, and that
nothing was logged at ERROR.
"""

import asyncio
import base64
import contextlib
import os
import socket
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import assert_no_errors
from tests.e2e.wsclient import WsClient, open_ws, ws_url

pytestmark = pytest.mark.e2e

MESSAGES = 1000
TEXT = "x" * 4000  # 1,000 messages of about 4 kB: a full replay is about 4.1 MB
RSS_BOUND_KIB = 100 * 1024  # generous: the unbounded case grew by 130 MB


def seed_thread(thread_id: str, user) -> None:
    """A thread holding MESSAGES long messages, written directly."""
    from django.db import connection

    from chat.models import Message, Thread

    try:
        thread = Thread.objects.create(id=thread_id, last_seq=MESSAGES)
        Message.objects.bulk_create(
            Message(thread=thread, seq=n, client_id=f"m{n}", user=user, text=TEXT)
            for n in range(1, MESSAGES + 1)
        )
    finally:
        connection.close()


def liveness_ms(server) -> float:
    """How long /health/liveness took to answer, in milliseconds."""
    started = time.monotonic()
    with urllib.request.urlopen(f"{server.http}/health/liveness", timeout=5) as reply:
        assert reply.status == 200
    return (time.monotonic() - started) * 1000


async def join(server, token: str, name: str, thread_id: str, **query) -> WsClient:
    ws = await open_ws(ws_url(server, name, thread_id=thread_id, **query), token)
    client = WsClient(ws, name)
    await client.wait_frame("presence", timeout=30)
    return client


async def assert_server_fine(server, token: str) -> None:
    """Liveness answers fast and a fresh, normal socket works."""
    assert await asyncio.to_thread(liveness_ms, server) < 2000
    normal = await join(server, token, "normal", "calm")
    try:
        ack = await normal.chat("still-fine")
        assert ack["seq"] >= 1
    finally:
        await normal.close()


async def test_a_burst_of_resumes_replays_at_most_twice(daphne, alice, token_for):
    await asyncio.to_thread(seed_thread, "big", alice)
    server = daphne("a")
    token = token_for(alice)
    before = server.rss_kib()
    attacker = await join(server, token, "attacker", "big", last_seq=MESSAGES)
    try:
        # 40 resumes at once (the whole per-socket burst), each asking for 4.1 MB.
        await asyncio.gather(
            *(attacker.send(type="resume", last_seq=0) for _ in range(40))
        )

        def answered() -> bool:
            kinds = [f["type"] for f in attacker.frames]
            return kinds.count("resumed") + kinds.count("error") >= 40

        await attacker.wait(answered, timeout=60, what="an answer to every resume")
        resumed = attacker.of_type("resumed")
        assert len(resumed) <= 2, len(resumed)
        codes = {f["code"] for f in attacker.of_type("error")}
        assert codes <= {"rate_limited"}, codes
        await attacker.wait(
            lambda: len(attacker.seqs()) >= MESSAGES * len(resumed), timeout=60
        )
        # A client that reads gets every replay at its own pace: no 4408.
        assert not attacker.closed, attacker.close_code
        assert server.rss_kib() - before < RSS_BOUND_KIB
        await assert_server_fine(server, token)
    finally:
        await attacker.close()
    assert_no_errors(server)


async def closed_by_server(ws) -> int | None:
    """The close code the server sent (the client may be cut off mid-send)."""
    try:
        await asyncio.wait_for(ws.wait_closed(), 15)
    except TimeoutError:
        return None
    return ws.close_code


@pytest.mark.parametrize("size", [100 * 1024, 2 * 1024 * 1024])
async def test_an_oversized_frame_closes_1009(daphne, alice, token_for, size):
    server = daphne("a")
    token = token_for(alice)
    ws = await open_ws(ws_url(server, "big-frame", thread_id="main"), token)
    try:
        await ws.recv()  # ws:session_established
        # The server may close while the client is still sending.
        with contextlib.suppress(ConnectionClosed):
            await ws.send('{"type":"ping","ts":1,"pad":"' + "y" * size + '"}')
        assert await closed_by_server(ws) == 1009
    finally:
        await ws.close()
    await assert_server_fine(server, token)
    await wait_disconnect(server, 1009, "message_too_big")
    assert_no_errors(server)


async def test_invalid_utf8_closes_1007(daphne, alice, token_for):
    server = daphne("a")
    token = token_for(alice)
    ws = await open_ws(ws_url(server, "bad-utf8", thread_id="main"), token)
    try:
        await ws.recv()
        await ws.send(b'{"type":"ping","ts":1,"x":"\xff\xfe"}', text=True)
        assert await closed_by_server(ws) == 1007
    finally:
        await ws.close()
    await assert_server_fine(server, token)
    await wait_disconnect(server, 1007, "invalid_payload")
    assert_no_errors(server)


async def wait_disconnect(server, code: int, reason: str) -> None:
    """The ws_disconnect record of the refused socket: its code, reason, WARNING."""
    for _ in range(100):
        records = [
            r for r in server.events("ws_disconnect") if r.get("session_id") != "normal"
        ]
        if records:
            break
        await asyncio.sleep(0.1)
    assert [(r["code"], r["reason"], r["level"]) for r in records] == [
        (code, reason, "WARNING")
    ]


def raw_socket(server, path: str, token: str) -> socket.socket:
    """A WebSocket opened by hand on a socket with a tiny receive buffer."""
    host, port = server.http.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jwt, {token}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        head += sock.recv(1)  # the response head only: frames stay unread
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it (RFC 6455 section 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_a_client_that_does_not_read_is_closed_4408(daphne, alice, token_for):
    await asyncio.to_thread(seed_thread, "flood", alice)
    server = daphne("a", WS_RATE_LIMIT="1000")
    token = token_for(alice)
    before = server.rss_kib()
    sock = await asyncio.to_thread(
        raw_socket, server, "/ws/stuck/?thread_id=flood&last_seq=0", token
    )
    try:
        # Each resume asks for 4.1 MB more; the client reads none of it.
        for _ in range(6):
            # Once closed 4408 and dropped, the server resets what the client sends.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(
                    sock.sendall, client_frame('{"type":"resume","last_seq":0}')
                )
            await asyncio.sleep(0.5)
        records = await wait_records(server, "stuck")
        assert [(r["code"], r["reason"], r["level"]) for r in records] == [
            (4408, "slow_consumer", "WARNING")
        ]
        assert server.events("ws_slow_consumer")
        assert server.rss_kib() - before < RSS_BOUND_KIB
        await assert_server_fine(server, token)
    finally:
        sock.close()
    assert_no_errors(server)


async def wait_records(server, session_id: str) -> list[dict]:
    """The ws_disconnect records of a session, once there is one (bounded wait)."""
    for _ in range(150):
        records = [
            r
            for r in server.events("ws_disconnect")
            if r.get("session_id") == session_id
        ]
        if records:
            return records
        await asyncio.sleep(0.1)
    return []
