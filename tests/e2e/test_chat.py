"""End to end over real Daphne processes: chat, resend, resume, disconnect logs.

Every test starts its own Daphne(s) on loopback (the `daphne` fixture stops them),
talks to them with the `websockets` client, and reads their JSON logs.
"""

import asyncio
import json
import math
import random
import socket
import statistics
import string
import time

import pytest
from websockets.exceptions import InvalidStatus

from chat import protocol
from tests.conftest import assert_no_errors
from tests.e2e.wsclient import (
    append_figure,
    assert_in_order_once,
    hello_of,
    open_ws,
    sql,
    stored_seqs,
    wait_log,
    ws_url,
)

pytestmark = pytest.mark.e2e

LOG_FIELDS = ("session_id", "user", "thread_id", "code", "reason", "duration_s")


def chat_frames(client):
    return client.of_type("chat.message")


async def close_and_check(server, *clients_to_close) -> None:
    """Close sockets normally, wait for their ws_disconnect, then no ERROR anywhere."""
    before = len(server.events("ws_disconnect"))
    for client in clients_to_close:
        await client.close()
    await wait_log(server, "ws_disconnect", count=before + len(clients_to_close))
    assert_no_errors(server)


# --- chat -----------------------------------------------------------------------------


async def test_two_users_chat_in_seq_order(daphne, clients, alice, bob, token_for):
    server = daphne("a")
    a = await clients.open(server, "sess-alice", token_for(alice))
    b = await clients.open(server, "sess-bob", token_for(bob))
    hello = dict(hello_of(a))
    assert protocol.EPOCH_RE.fullmatch(hello.pop("epoch"))
    assert hello == {
        "type": "ws:session_established",
        "session_id": "sess-alice",
        "thread_id": "main",
        "user": "alice",
        "resumed": False,
        "last_seq": 0,
        "replay": 0,
        "recovered": True,
        "reset": False,
        "instance": "a",
    }
    assert hello_of(b)["user"] == "bob"

    for i in range(1, 4):
        ack = await a.chat(f"a-{i}", f"hello {i}")
        assert ack == {"type": "ack", "id": f"a-{i}", "seq": i, "duplicate": False}
    ack = await b.chat("b-1", "hi alice")
    assert ack == {"type": "ack", "id": "b-1", "seq": 4, "duplicate": False}

    for client in (a, b):
        await client.wait_seq(4)
        assert_in_order_once(client.seqs(), 1, 4)
    first = chat_frames(b)[0]
    created_at = first.pop("created_at")
    assert first == {
        "type": "chat.message",
        "thread_id": "main",
        "seq": 1,
        "id": "a-1",
        "user": "alice",
        "text": "hello 1",
    }
    assert created_at.startswith("20") and "T" in created_at
    assert [f["user"] for f in chat_frames(a)] == ["alice"] * 3 + ["bob"]
    # Acks go to the sender only.
    assert set(a.acks()) == {"a-1", "a-2", "a-3"}
    assert set(b.acks()) == {"b-1"}
    assert await stored_seqs("main") == [1, 2, 3, 4]
    await close_and_check(server, a, b)


async def test_chat_across_two_instances(daphne, clients, alice, bob, token_for):
    server_a = daphne("a")
    server_b = daphne("b")
    a = await clients.open(server_a, "sess-alice", token_for(alice))
    b = await clients.open(server_b, "sess-bob", token_for(bob))
    assert hello_of(a)["instance"] == "a"
    assert hello_of(b)["instance"] == "b"

    ack = await a.chat("from-a", "sent on A")
    assert ack["seq"] == 1
    await b.wait_seq(1)
    assert chat_frames(b)[0]["text"] == "sent on A"
    assert chat_frames(b)[0]["user"] == "alice"
    for i in range(2, 9):
        sender = b if i % 2 == 0 else a
        ack = await sender.chat(f"m-{i}")
        assert ack["seq"] == i and ack["duplicate"] is False
    for client in (a, b):
        await client.wait_seq(8)
        assert_in_order_once(client.seqs(), 1, 8)
    assert await stored_seqs("main") == list(range(1, 9))
    await close_and_check(server_a, a)
    await close_and_check(server_b, b)


async def test_resend_after_reconnect_is_a_duplicate(
    daphne, clients, alice, bob, token_for
):
    server = daphne("a")
    a = await clients.open(server, "sess-alice", token_for(alice))
    b = await clients.open(server, "sess-bob", token_for(bob))
    ack = await a.chat("only-once", "stored once")
    assert ack == {"type": "ack", "id": "only-once", "seq": 1, "duplicate": False}
    await b.wait_seq(1)
    await a.close()

    a2 = await clients.open(server, "sess-alice", token_for(alice), last_seq=1)
    hello = hello_of(a2)
    assert hello["resumed"] is True
    assert (hello["last_seq"], hello["replay"]) == (1, 0)
    resend = await a2.chat("only-once", "stored once")
    assert resend == {"type": "ack", "id": "only-once", "seq": 1, "duplicate": True}
    # A later message proves the resend's moment has passed at bob's socket.
    assert (await a2.chat("after"))["seq"] == 2
    await b.wait_seq(2)
    await a2.wait_seq(2)
    assert [(f["seq"], f["id"]) for f in chat_frames(b)] == [
        (1, "only-once"),
        (2, "after"),
    ]
    assert a2.seqs() == [2]
    rows = await sql(
        "SELECT count(*) FROM chat_message WHERE client_id = %s", "only-once"
    )
    assert rows == [(1,)]
    assert await stored_seqs("main") == [1, 2]
    await close_and_check(server, a2, b)


async def test_resume_after_drop_replays_exactly_once_while_live(
    daphne, clients, bob, carol, token_for
):
    """C drops, misses messages, reconnects with last_seq while messages keep coming."""
    server = daphne("a")
    sender = await clients.open(server, "sess-bob", token_for(bob))
    c = await clients.open(server, "sess-carol", token_for(carol), name="carol-1")
    total = 60
    acked: list[int] = []

    async def pump() -> None:
        # ~16 messages/s: under the default per-socket rate limit (20/s).
        for i in range(1, total + 1):
            ack = await sender.chat(f"live-{i}")
            assert ack["duplicate"] is False
            acked.append(ack["seq"])
            await asyncio.sleep(0.05)

    pumping = asyncio.create_task(pump())
    try:
        await c.wait(lambda: len(c.seqs()) >= 10, what="10 live messages")
        c.abort()
        await c.stop_reader()
        first = c.seqs()
        assert first == list(range(1, len(first) + 1)), first
        last_seen = first[-1]
        # Messages are stored while C is away ...
        await sender.wait(
            lambda: len(acked) >= last_seen + 8, what="8 messages while away"
        )
        # ... and keep coming while it reconnects.
        c2 = await clients.open(
            server,
            "sess-carol",
            token_for(carol),
            last_seq=last_seen,
            name="carol-2",
        )
        await asyncio.wait_for(pumping, 30)
    finally:
        if not pumping.done():
            pumping.cancel()
    await c2.wait_seq(total, timeout=15)

    assert_in_order_once(first + c2.seqs(), 1, total)
    hello = hello_of(c2)
    assert hello["resumed"] is True
    assert hello["recovered"] is True
    replay = hello["replay"]
    assert replay == hello["last_seq"] - last_seen, (hello, last_seen)
    assert replay >= 8, hello
    replayed = c2.frames[1 : 1 + replay]
    assert [f.get("type") for f in replayed] == ["chat.message"] * replay
    assert [f["seq"] for f in replayed] == list(
        range(last_seen + 1, hello["last_seq"] + 1)
    )
    assert len(c2.seqs()) > replay, "no live message arrived after the replay"
    assert await stored_seqs("main") == list(range(1, total + 1))
    dropped = await wait_log(server, "ws_disconnect", session_id="sess-carol")
    assert dropped[0]["code"] == 1006
    await close_and_check(server, c2, sender)


async def test_resume_frame_at_any_time(daphne, clients, alice, bob, token_for):
    server = daphne("a", WS_MAX_REPLAY="5")
    a = await clients.open(server, "sess-alice", token_for(alice))
    b = await clients.open(server, "sess-bob", token_for(bob))

    # Right after connect, before anything was said.
    mark = len(a.frames)
    await a.send(type="resume", last_seq=0)
    assert await a.wait_frame("resumed", start=mark) == {
        "type": "resumed",
        "replay": 0,
        "recovered": True,
        "reset": False,
    }

    for i in range(1, 5):
        await b.chat(f"b-{i}")
    await a.wait_seq(4)

    # Behind: the missed frames follow the answer at once, in order.
    mark = len(a.frames)

    def answer() -> list[dict]:
        # The client's own heartbeat pongs may come in between: not the answer.
        return [f for f in a.frames[mark:] if f["type"] != "pong"]

    await a.send(type="resume", last_seq=1)
    await a.wait(lambda: len(answer()) >= 4, what="resumed + 3 frames")
    assert answer()[0] == {
        "type": "resumed",
        "replay": 3,
        "recovered": True,
        "reset": False,
    }
    assert [(f["type"], f["seq"]) for f in answer()[1:4]] == [
        ("chat.message", 2),
        ("chat.message", 3),
        ("chat.message", 4),
    ]
    assert len(a.of_type("ws:session_established")) == 1

    # Live delivery goes on afterwards, each new seq once.
    await b.chat("b-5")
    await a.wait_seq(5)
    assert a.seqs() == [1, 2, 3, 4, 2, 3, 4, 5]

    # Up to date: nothing to replay.
    mark = len(a.frames)
    await a.send(type="resume", last_seq=5)
    assert await a.wait_frame("resumed", start=mark) == {
        "type": "resumed",
        "replay": 0,
        "recovered": True,
        "reset": False,
    }

    # More missed than WS_MAX_REPLAY: never partial, the client fetches over HTTP.
    for i in range(6, 8):
        await b.chat(f"b-{i}")
    await a.wait_seq(7)
    mark = len(a.frames)
    await a.send(type="resume", last_seq=0)
    await a.send(type="ping", ts=42)
    # The replay runs beside the frame loop: the pong may overtake `resumed`.
    resumed = await a.wait_frame("resumed", start=mark)
    await a.wait_frame("pong", start=mark)
    assert resumed == {
        "type": "resumed",
        "replay": 0,
        "recovered": False,
        "reset": False,
    }
    after = a.frames[mark:]
    assert not [f for f in after if f["type"] == "chat.message"], after

    # A malformed resume is an error frame; the socket stays open.
    mark = len(a.frames)
    await a.send(type="resume", last_seq=-1)
    error = await a.wait_frame("error", start=mark)
    assert error["code"] == "bad_frame"
    await a.send(type="ping", ts=43)
    assert (await a.wait_frame("pong", start=mark))["ts"] == 43

    # The same limit applies to last_seq on connect.
    late = await clients.open(server, "sess-late", token_for(alice), last_seq=0)
    assert hello_of(late)["replay"] == 0
    assert hello_of(late)["recovered"] is False
    assert hello_of(late)["last_seq"] == 7
    await close_and_check(server, a, b, late)


async def test_idle_socket_survives_silence(daphne, clients, alice, bob, token_for):
    """A socket whose channel gets nothing for longer than the channel layer's
    blocking read (5 s) stays open and keeps receiving."""
    server = daphne("a")
    a = await clients.open(server, "sess-alice", token_for(alice))
    await asyncio.sleep(6.5)
    assert not a.closed, a.close_code
    b = await clients.open(server, "sess-bob", token_for(bob))
    assert (await b.chat("after-silence"))["seq"] == 1
    await a.wait_seq(1)
    await close_and_check(server, a, b)


# --- disconnect records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "code", "reason"),
    [
        ("abort", 1006, "abnormal_closure"),
        ("close-1000", 1000, "normal_closure"),
        ("close-1001", 1001, "going_away"),
    ],
)
async def test_disconnect_record(daphne, clients, alice, token_for, how, code, reason):
    server = daphne("a")
    session_id = f"sess-{how}"
    a = await clients.open(server, session_id, token_for(alice), thread_id="room-7")
    await a.chat("before-close")
    await asyncio.sleep(0.2)
    if how == "abort":
        a.abort()
    else:
        await a.close(code=code)

    records = await wait_log(server, "ws_disconnect", session_id=session_id)
    assert len(records) == 1, records
    record = records[0]
    for field in (*LOG_FIELDS, "instance"):
        assert field in record, (field, record)
    assert record["level"] == "INFO"
    assert record["code"] == code
    assert record["reason"] == reason
    assert record["user"] == "alice"
    assert record["thread_id"] == "room-7"
    assert record["instance"] == "a"
    assert isinstance(record["duration_s"], int | float)
    assert 0.2 <= record["duration_s"] < 30

    # The close is also recorded in the database (the detach ran to its end).
    async def stored_event():
        return await sql(
            "SELECT code, reason, instance FROM sessions_app_connectionevent "
            "WHERE kind = 'disconnect' AND session_key = %s",
            session_id,
        )

    deadline = time.monotonic() + 10
    while not (rows := await stored_event()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert rows == [(code, reason, "a")]
    assert_no_errors(server)


async def test_abort_while_the_server_is_sending(
    daphne, clients, alice, bob, token_for
):
    """A reader that vanishes mid-stream is a 1006 at INFO, never an ERROR.

    Four drops stay under WS_FREQUENT_DISCONNECTS (5); the fifth makes bob a frequent
    disconnector, whose abnormal close is logged at WARNING (PROTOCOL.md §3).
    """
    server = daphne("a", WS_RATE_LIMIT="1000", WS_USER_RATE_LIMIT="1000")
    a = await clients.open(server, "sess-alice", token_for(alice))
    readers = [
        await clients.open(server, f"sess-bob-{i}", token_for(bob)) for i in range(4)
    ]
    for i in range(1, 101):
        await a.say(f"burst-{i}", "x" * 2000)
        if i == 20:
            for reader in readers:
                reader.abort()
    await a.wait_ack("burst-100", timeout=20)
    for i in range(4):
        records = await wait_log(server, "ws_disconnect", session_id=f"sess-bob-{i}")
        assert [(r["code"], r["level"]) for r in records] == [(1006, "INFO")]

    fifth = await clients.open(server, "sess-bob-4", token_for(bob))
    fifth.abort()
    records = await wait_log(server, "ws_disconnect", session_id="sess-bob-4")
    assert [(r["code"], r["level"], r["frequent_disconnector"]) for r in records] == [
        (1006, "WARNING", True)
    ]
    await close_and_check(server, a)


async def test_close_while_the_server_is_still_sending(
    daphne, clients, alice, bob, token_for
):
    """A client that stops reading and then closes: the server is left in the
    closing handshake with frames still to send. Sends that fail then are the
    client's doing (never ERROR); the close is logged once, with its own record."""
    server = daphne("a", WS_RATE_LIMIT="1000", WS_USER_RATE_LIMIT="1000")
    a = await clients.open(server, "sess-alice", token_for(alice))
    # A tiny receive buffer and no reading: the server's writes back up quickly.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", server.port))
        stalled = await open_ws(
            ws_url(server, "sess-stalled", thread_id="main"),
            token_for(bob),
            sock=sock,
            compression=None,
            max_queue=1,
            close_timeout=3,
        )
    except BaseException:
        sock.close()
        raise
    try:
        text = "".join(random.choices(string.ascii_letters, k=4000))
        for i in range(1, 501):
            await a.say(f"fill-{i}", text)
        await a.wait_ack("fill-500", timeout=30)
        closing = asyncio.create_task(stalled.close(code=1000))
        await asyncio.sleep(0.3)  # the close frame reaches the server
        for i in range(1, 21):
            await a.say(f"more-{i}", text)
        await a.wait_ack("more-20", timeout=20)
        await asyncio.wait_for(closing, 10)
    finally:
        stalled.transport.abort()
    records = await wait_log(server, "ws_disconnect", session_id="sess-stalled")
    assert [(r["code"], r["reason"], r["level"]) for r in records] == [
        (1000, "normal_closure", "INFO")
    ]
    await close_and_check(server, a)


# --- refusals -------------------------------------------------------------------------


@pytest.fixture
def secret_room(alice):
    """A private thread with alice as its only member."""
    from chat.models import Thread

    room = Thread.objects.create(id="secret", private=True, created_by=alice)
    room.members.add(alice)
    return room


async def test_refusals_over_the_real_server(
    daphne, clients, alice, bob, token_for, secret_room
):
    server = daphne("a")
    owned = await clients.open(server, "sess-owned", token_for(alice))
    await owned.close()

    cases = [
        ("bad session id", "bad.id", token_for(alice), {}, 4400),
        ("bad last_seq", "sess-x", token_for(alice), {"last_seq": "abc"}, 4400),
        ("bad thread id", "sess-y", token_for(alice), {"thread_id": "no way"}, 4400),
        ("no auth", "sess-z", None, {}, 4401),
        ("bad token", "sess-z", "not-a-jwt", {}, 4401),
        ("expired token", "sess-z", token_for(alice, ttl_seconds=-10), {}, 4401),
        ("other owner", "sess-owned", token_for(bob), {}, 4403),
        ("not a member", "sess-p", token_for(bob), {"thread_id": "secret"}, 4403),
    ]
    for label, session_id, token, query, expected in cases:
        client = await clients.open(
            server,
            session_id,
            token,
            established=False,
            name=label,
            **{"thread_id": "main", **query},
        )
        assert await client.wait_closed() == expected, label
        assert client.frames == [], (label, client.frames)

    url = ws_url(server, "sess-origin")
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(url, token_for(alice), origin="http://evil.example.com")
    assert refused.value.response.status_code == 403
    # The same origin as the server is welcome.
    ok = await clients.open(
        server,
        "sess-origin",
        token_for(alice),
        origin=f"http://127.0.0.1:{server.port}",
    )
    await ok.close()

    reasons = {4400: "bad_request", 4401: "unauthenticated", 4403: "forbidden"}
    for code, reason in reasons.items():
        count = sum(1 for *_, expected in cases if expected == code)
        records = await wait_log(server, "ws_disconnect", count=count, code=code)
        assert len(records) == count, records
        for record in records:
            assert record["level"] == "WARNING", record
            assert record["reason"] == reason, record
            assert record["instance"] == "a", record
    forbidden = await wait_log(server, "ws_disconnect", code=4403)
    assert forbidden[0]["user"] == "bob"
    assert forbidden[0]["session_id"] == "sess-owned"
    assert_no_errors(server)


async def test_policy_closes_reach_the_client(daphne, clients, alice, token_for):
    """1009 and 1008 are sent for real through Daphne, logged at WARNING."""
    server = daphne("a", WS_RATE_LIMIT="5", WS_RATE_LIMIT_CLOSE_AFTER="5")
    big = await clients.open(server, "sess-big", token_for(alice))
    await big.send(type="chat.message", id="big", text="z" * 70_000)
    assert await big.wait_closed() == 1009
    assert not big.of_type("ack")

    flood = await clients.open(server, "sess-flood", token_for(alice))
    for ts in range(40):
        if flood.closed:
            break
        await flood.send(type="ping", ts=ts)
    assert await flood.wait_closed() == 1008
    refused = [f for f in flood.of_type("error") if f["code"] == "rate_limited"]
    assert len(refused) == 5, flood.frames

    expected = {
        "sess-big": (1009, "message_too_big"),
        "sess-flood": (1008, "policy_violation"),
    }
    for session_id, (code, reason) in expected.items():
        records = await wait_log(server, "ws_disconnect", session_id=session_id)
        assert [(r["code"], r["reason"], r["level"]) for r in records] == [
            (code, reason, "WARNING")
        ]
    assert_no_errors(server)


# --- figures --------------------------------------------------------------------------


async def test_connect_latency(daphne, alice, token_for):
    server = daphne("a")
    token = token_for(alice)

    async def connect_once(session_id: str) -> float:
        started = time.perf_counter()
        ws = await open_ws(ws_url(server, session_id, thread_id="main"), token)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            elapsed = time.perf_counter() - started
            assert first["type"] == "ws:session_established", first
        finally:
            await ws.close()
        return elapsed

    await connect_once("warm-up")
    samples = [await connect_once(f"lat-{i}") for i in range(50)]
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1] * 1000
    append_figure(
        f"connect latency, 50 sequential JWT connects to ws:session_established "
        f"(1 Daphne, loopback, after 1 warm-up): p50={p50:.1f} ms "
        f"p95={p95:.1f} ms max={ordered[-1] * 1000:.1f} ms"
    )
    await wait_log(server, "ws_disconnect", count=51)
    assert_no_errors(server)
