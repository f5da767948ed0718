"""The WebSocket endpoint through the whole ASGI stack (origin, cookies, auth, DB).

Every socket goes through `emergence.asgi.application` with channels'
WebsocketCommunicator, on the real PostgreSQL and the real Redis channel layer.
"""

import asyncio
import json
import logging
import time
from datetime import datetime

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from chat.models import Message, Thread
from realtime.groups import thread_group
from sessions_app.models import ChatSession, ConnectionEvent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

TIMEOUT = 5  # generous: a cold pool or a slow CI box must not fail a test
QUIET = 0.3  # how long "nothing arrives" is watched
RECEIVE_SETTLE = 0.1  # see Socket.close

HELLO_KEYS = {
    "type",
    "session_id",
    "thread_id",
    "user",
    "resumed",
    "last_seq",
    "epoch",
    "replay",
    "recovered",
    "reset",
    "instance",
}


class Communicator(WebsocketCommunicator):
    """channels' WebsocketCommunicator, minus its close_old_connections no-op.

    channels.testing patches `channels.db.close_old_connections` to a no-op while it
    sends or waits (so that a TestCase transaction survives). These tests are
    transactional, like production, and connections come from psycopg's pool: with
    the no-op, every worker thread would keep its pooled connection forever and the
    pool would run dry after a few dozen sockets. So the real clean-up runs here.
    """

    async def send_input(self, message):
        return await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout=1):
        return await ApplicationCommunicator.receive_output(self, timeout)


def is_presence(message: dict) -> bool:
    """A presence frame: these tests are about everything else."""
    if message["type"] != "websocket.send" or "text" not in message:
        return False
    return json.loads(message["text"]).get("type") == "presence"


class Socket:
    """One communicator, with helpers that skip `presence` frames."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.opened_at = time.monotonic()
        self.connected: bool | None = None
        self.subprotocol = None

    async def send(self, frame: dict) -> None:
        await self.comm.send_to(text_data=json.dumps(frame))

    async def send_text(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.comm.send_to(bytes_data=data)

    async def output(self, timeout: float = TIMEOUT) -> dict:
        """The next ASGI message from the app, presence frames skipped."""
        while True:
            message = await self.comm.receive_output(timeout)
            if not is_presence(message):
                return message

    async def recv(self, timeout: float = TIMEOUT) -> dict:
        message = await self.output(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def recv_many(self, n: int) -> list[dict]:
        return [await self.recv() for _ in range(n)]

    async def closed_with(self, timeout: float = TIMEOUT) -> int:
        """The close code the server sent next (fails on any other frame)."""
        message = await self.output(timeout)
        assert message["type"] == "websocket.close", message
        return message["code"]

    async def silent(self, timeout: float = QUIET) -> None:
        """Nothing but presence arrives for a while."""
        while not await self.comm.receive_nothing(timeout):
            message = await self.comm.receive_output()
            assert is_presence(message), f"unexpected output: {message}"

    async def close(self, code: int = 1000) -> None:
        # A consumer's channel-layer receive() that is cancelled in its first
        # milliseconds can swallow the cancellation (Python 3.11's asyncio.wait_for,
        # used by redis-py's reads, returns a result that arrived together with the
        # cancel) and then block on BZPOPMIN for ever. A refused socket closes that
        # fast, so give its receive() a moment to be waiting before we hang up.
        young = RECEIVE_SETTLE - (time.monotonic() - self.opened_at)
        if young > 0:
            await asyncio.sleep(young)
        await self.comm.disconnect(code, timeout=TIMEOUT)


@pytest.fixture
async def open_socket(fresh_channel_layer):
    """Open sockets through the full ASGI app; every one is disconnected after."""
    from emergence.asgi import application  # Django's handler: at test time

    opened: list[Socket] = []

    async def open_(
        path: str = "/ws/s1/?thread_id=main",
        *,
        subprotocols: list[str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Socket:
        comm = Communicator(
            application, path, headers=headers, subprotocols=subprotocols
        )
        socket = Socket(comm)
        opened.append(socket)
        socket.connected, socket.subprotocol = await comm.connect(TIMEOUT)
        socket.opened_at = time.monotonic()
        return socket

    yield open_
    for socket in opened:
        await socket.close()


@pytest.fixture
def join(open_socket, token_for):
    """Open an authenticated (JWT) socket and read its ws:session_established."""

    async def join_(
        user,
        session_id: str = "s1",
        thread_id: str = "main",
        last_seq: int | None = None,
        epoch: str | None = None,
    ) -> tuple[Socket, dict]:
        query = f"thread_id={thread_id}"
        if last_seq is not None:
            query += f"&last_seq={last_seq}"
        if epoch is not None:
            query += f"&epoch={epoch}"
        socket = await open_socket(
            f"/ws/{session_id}/?{query}", subprotocols=["jwt", token_for(user)]
        )
        assert socket.connected is True
        assert socket.subprotocol == "jwt"
        hello = await socket.recv()
        assert hello["type"] == "ws:session_established", hello
        return socket, hello

    return join_


@pytest.fixture
def stored():
    """Write n messages to a thread directly (no broadcast), as another user did."""
    from chat.services import message_create, thread_join

    @database_sync_to_async
    def write(thread_id: str, user, n: int, prefix: str = "old") -> None:
        thread_join(thread_id=thread_id, user=user)
        for i in range(1, n + 1):
            message_create(
                thread_id=thread_id,
                user=user,
                client_id=f"{prefix}{i}",
                text=f"{prefix} {i}",
            )

    return write


@pytest.fixture
def session_cookie(alice):
    """A logged-in browser's cookie header (Django's own login machinery)."""
    client = Client()
    client.force_login(alice)
    value = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={value}".encode())


@pytest.fixture
def logged_out_cookie(alice):
    """The cookie of a browser session that has since logged out."""
    client = Client()
    client.force_login(alice)
    name = django_settings.SESSION_COOKIE_NAME
    value = client.cookies[name].value
    client.logout()
    return (b"cookie", f"{name}={value}".encode())


def disconnect_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "ws_disconnect"]


@database_sync_to_async
def db_read(fn):
    return fn()


def chat(client_id: str, text: str = "hello") -> dict:
    return {"type": "chat.message", "id": client_id, "text": text}


# --- connect ----------------------------------------------------------------------


async def test_session_established(join, alice):
    socket, hello = await join(alice, session_id="sess-1", thread_id="lobby")
    assert set(hello) == HELLO_KEYS
    thread = await db_read(lambda: Thread.objects.get(pk="lobby"))
    assert hello == {
        "type": "ws:session_established",
        "session_id": "sess-1",
        "thread_id": "lobby",
        "user": "alice",
        "resumed": False,
        "last_seq": 0,
        "epoch": thread.epoch,
        "replay": 0,
        "recovered": True,
        "reset": False,
        "instance": django_settings.INSTANCE_ID,
    }
    assert thread.private is False  # created as public on first connect
    session = await db_read(lambda: ChatSession.objects.get(pk="sess-1"))
    assert session.owner_id == alice.pk
    assert session.status == ChatSession.Status.ACTIVE


async def test_reconnect_is_resumed(join, alice):
    first, hello = await join(alice, session_id="again")
    assert hello["resumed"] is False
    await first.close()
    _, hello = await join(alice, session_id="again")
    assert hello["resumed"] is True
    # A second tab on the same session is a resume too.
    _, hello = await join(alice, session_id="again")
    assert hello["resumed"] is True


async def test_thread_id_defaults_to_main(open_socket, alice, token_for):
    socket = await open_socket("/ws/s9", subprotocols=["jwt", token_for(alice)])
    assert socket.connected is True
    hello = await socket.recv()
    assert (hello["session_id"], hello["thread_id"]) == ("s9", "main")


async def test_hello_reports_the_threads_last_seq(join, stored, alice):
    await stored("busy", alice, 4)
    _, hello = await join(alice, thread_id="busy")
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (4, 0, True)


async def test_session_cookie_auth(open_socket, session_cookie):
    socket = await open_socket(
        "/ws/cookie-s/?thread_id=main",
        headers=[session_cookie, (b"origin", b"http://localhost:8000")],
    )
    assert socket.connected is True
    assert socket.subprotocol is None
    hello = await socket.recv()
    assert hello["type"] == "ws:session_established"
    assert hello["user"] == "alice"
    await socket.send({"type": "ping", "ts": 1})
    assert await socket.recv() == {"type": "pong", "ts": 1}


async def test_cookie_of_a_logged_out_session_closes_4401(
    open_socket, logged_out_cookie
):
    socket = await open_socket("/ws/s1/", headers=[logged_out_cookie])
    assert socket.connected is True
    assert await socket.closed_with() == 4401


async def test_unknown_session_cookie_closes_4401(open_socket):
    name = django_settings.SESSION_COOKIE_NAME
    socket = await open_socket(
        "/ws/s1/", headers=[(b"cookie", f"{name}=bogus".encode())]
    )
    assert await socket.closed_with() == 4401


async def test_missing_origin_is_accepted(join, alice):
    socket, hello = await join(alice)
    assert hello["user"] == "alice"


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"https://localhost.evil.example", b"null"]
)
async def test_foreign_origin_is_refused_at_the_handshake(
    open_socket, alice, token_for, origin
):
    socket = await open_socket(
        "/ws/s1/", subprotocols=["jwt", token_for(alice)], headers=[(b"origin", origin)]
    )
    assert socket.connected is False
    assert not await db_read(lambda: ChatSession.objects.exists())


@pytest.mark.parametrize(
    "origin", [b"http://localhost:8000", b"http://127.0.0.1", b"https://localhost"]
)
async def test_allowed_origin_is_accepted(open_socket, alice, token_for, origin):
    socket = await open_socket(
        "/ws/s1/", subprotocols=["jwt", token_for(alice)], headers=[(b"origin", origin)]
    )
    assert socket.connected is True
    assert (await socket.recv())["type"] == "ws:session_established"


# --- chat messages ----------------------------------------------------------------


async def test_message_is_acked_and_broadcast_to_the_thread_only(join, alice, bob):
    sender, _ = await join(alice, session_id="a1", thread_id="room")
    peer, _ = await join(bob, session_id="b1", thread_id="room")
    elsewhere, _ = await join(bob, session_id="b2", thread_id="other")

    await sender.send(chat("c1", "hello room"))
    frames = {f["type"]: f for f in await sender.recv_many(2)}
    assert frames["ack"] == {"type": "ack", "id": "c1", "seq": 1, "duplicate": False}
    received = await peer.recv()
    assert received == frames["chat.message"]  # the sender's own copy is the same
    assert set(received) == {
        "type",
        "thread_id",
        "seq",
        "id",
        "user",
        "text",
        "created_at",
    }
    assert received["type"] == "chat.message"
    assert received["thread_id"] == "room"
    assert (received["seq"], received["id"]) == (1, "c1")
    assert (received["user"], received["text"]) == ("alice", "hello room")
    assert datetime.fromisoformat(received["created_at"]).tzinfo is not None
    await elsewhere.silent()
    await peer.silent()
    stored = await db_read(lambda: list(Message.objects.values_list("seq", "text")))
    assert stored == [(1, "hello room")]


async def test_seqs_increase_by_one(join, alice, bob):
    a, _ = await join(alice, session_id="a1", thread_id="room")
    b, _ = await join(bob, session_id="b1", thread_id="room")
    for i in range(1, 4):
        sender = a if i % 2 else b
        await sender.send(chat(f"m{i}", f"text {i}"))
    seen_a = [f["seq"] for f in await a.recv_many(5) if f["type"] == "chat.message"]
    seen_b = [f["seq"] for f in await b.recv_many(4) if f["type"] == "chat.message"]
    assert seen_a == [1, 2, 3]
    assert seen_b == [1, 2, 3]


async def test_duplicate_resend_is_acked_and_not_broadcast_again(join, alice, bob):
    sender, _ = await join(alice, session_id="a1", thread_id="room")
    peer, _ = await join(bob, session_id="b1", thread_id="room")
    await sender.send(chat("c1", "once"))
    await sender.recv_many(2)
    assert (await peer.recv())["seq"] == 1

    await sender.send(chat("c1", "once"))
    assert await sender.recv() == {
        "type": "ack",
        "id": "c1",
        "seq": 1,
        "duplicate": True,
    }
    await sender.silent()
    await peer.silent()
    assert await db_read(lambda: Message.objects.count()) == 1


async def test_resend_after_reconnect_gets_the_original_seq(join, alice):
    first, _ = await join(alice, session_id="a1", thread_id="room")
    await first.send(chat("c1"))
    await first.send(chat("c2"))
    await first.recv_many(4)
    await first.close(1006)
    again, hello = await join(alice, session_id="a1", thread_id="room", last_seq=2)
    assert (hello["last_seq"], hello["replay"]) == (2, 0)
    await again.send(chat("c1"))
    ack = await again.recv()
    assert (ack["seq"], ack["duplicate"]) == (1, True)


async def test_live_gap_is_filled_from_the_database(join, stored, alice, bob):
    listener, _ = await join(bob, session_id="b1", thread_id="room")
    # Three messages committed without a broadcast reaching this socket...
    await stored("room", alice, 3)
    sender, _ = await join(alice, session_id="a1", thread_id="room")
    # ...then seq 4 arrives live: 1-3 are read from the database and sent first.
    await sender.send(chat("live"))
    frames = await listener.recv_many(4)
    assert [f["seq"] for f in frames] == [1, 2, 3, 4]
    assert [f["text"] for f in frames] == ["old 1", "old 2", "old 3", "hello"]
    await listener.silent()


async def test_stale_group_message_is_dropped(join, alice, fresh_channel_layer):
    socket, _ = await join(alice, session_id="a1", thread_id="room")
    await socket.send(chat("c1"))
    frames = await socket.recv_many(2)
    message = next(f for f in frames if f["type"] == "chat.message")
    # The layer delivers seq 1 again (a retry somewhere): nobody sees it twice.
    await fresh_channel_layer.group_send(thread_group("room"), message)
    await socket.silent()


# --- ping, resume, replay ---------------------------------------------------------


@pytest.mark.parametrize("ts", [0, 123, 1.5, -7, 1700000000123])
async def test_ping_pong(join, alice, ts):
    socket, _ = await join(alice)
    await socket.send({"type": "ping", "ts": ts})
    assert await socket.recv() == {"type": "pong", "ts": ts}


async def test_last_seq_in_query_replays_in_order(join, stored, alice, bob):
    await stored("room", bob, 5)
    socket, hello = await join(alice, thread_id="room", last_seq=2)
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (5, 3, True)
    replayed = await socket.recv_many(3)
    assert [f["type"] for f in replayed] == ["chat.message"] * 3
    assert [f["seq"] for f in replayed] == [3, 4, 5]
    assert [(f["id"], f["user"], f["text"]) for f in replayed][0] == (
        "old3",
        "bob",
        "old 3",
    )
    # Live messages continue the sequence, with no repeat of the replay.
    await socket.send(chat("new"))
    frames = await socket.recv_many(2)
    assert sorted(f.get("seq") for f in frames) == [6, 6]
    await socket.silent()


async def test_last_seq_zero_replays_everything(join, stored, alice):
    await stored("room", alice, 3)
    socket, hello = await join(alice, thread_id="room", last_seq=0)
    assert (hello["replay"], hello["recovered"]) == (3, True)
    assert [f["seq"] for f in await socket.recv_many(3)] == [1, 2, 3]
    await socket.silent()


async def test_last_seq_ahead_of_the_thread(join, stored, alice):
    await stored("room", alice, 2)
    socket, hello = await join(alice, thread_id="room", last_seq=9)
    # The client holds a history the database does not: it drops it and reloads.
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (2, 0, False)
    assert hello["reset"] is True
    await socket.silent()


async def test_replay_of_exactly_the_maximum(join, stored, alice, settings):
    settings.WS_MAX_REPLAY = 3
    await stored("room", alice, 5)
    socket, hello = await join(alice, thread_id="room", last_seq=2)
    assert (hello["replay"], hello["recovered"]) == (3, True)
    assert [f["seq"] for f in await socket.recv_many(3)] == [3, 4, 5]


async def test_replay_over_the_maximum_is_not_sent(join, stored, alice, settings):
    settings.WS_MAX_REPLAY = 3
    await stored("room", alice, 5)
    socket, hello = await join(alice, thread_id="room", last_seq=1)
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (5, 0, False)
    await socket.silent()
    # The socket is live from the thread's newest seq on.
    await socket.send(chat("next"))
    frames = await socket.recv_many(2)
    assert {f["seq"] for f in frames} == {6}


async def test_resume_frame_replays(join, stored, alice):
    await stored("room", alice, 5)
    socket, hello = await join(alice, thread_id="room")
    assert (hello["last_seq"], hello["replay"]) == (5, 0)
    await socket.send({"type": "resume", "last_seq": 2})
    assert await socket.recv() == {
        "type": "resumed",
        "replay": 3,
        "recovered": True,
        "reset": False,
    }
    frames = await socket.recv_many(3)
    assert [(f["type"], f["seq"]) for f in frames] == [
        ("chat.message", 3),
        ("chat.message", 4),
        ("chat.message", 5),
    ]
    await socket.silent()  # no new ws:session_established


async def test_resume_when_up_to_date(join, stored, alice):
    await stored("room", alice, 2)
    socket, _ = await join(alice, thread_id="room")
    await socket.send({"type": "resume", "last_seq": 2})
    assert await socket.recv() == {
        "type": "resumed",
        "replay": 0,
        "recovered": True,
        "reset": False,
    }
    await socket.silent()


async def test_resume_over_the_maximum(join, stored, alice, settings):
    settings.WS_MAX_REPLAY = 2
    await stored("room", alice, 5)
    socket, _ = await join(alice, thread_id="room")
    await socket.send({"type": "resume", "last_seq": 0})
    assert await socket.recv() == {
        "type": "resumed",
        "replay": 0,
        "recovered": False,
        "reset": False,
    }
    await socket.silent()


# --- error frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("{", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"ping"', "bad_frame"),
        ('{"type": "chat.message", "id": "x"}', "bad_frame"),
        ('{"type": "chat.message", "id": 5, "text": "t"}', "bad_frame"),
        ('{"type": "chat.message", "id": "x", "text": ""}', "bad_frame"),
        ('{"type": "ping", "ts": true}', "bad_frame"),
        ('{"type": "resume", "last_seq": "1"}', "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ('{"type": "subscribe"}', "unknown_type"),
        (json.dumps(chat("x", "a" * 4001)), "too_long"),
        (json.dumps(chat("i" * 65, "t")), "bad_frame"),
        # Text PostgreSQL cannot store: refused up front, not a 1011 at INSERT.
        (json.dumps(chat("x", "nul \x00 byte")), "bad_frame"),
        (json.dumps(chat("x\x00", "t")), "bad_frame"),
        (r'{"type": "chat.message", "id": "x", "text": "\ud800"}', "bad_frame"),
        ('{"type": "ping", "ts": NaN}', "bad_frame"),
    ],
)
async def test_error_frames_keep_the_socket_open(join, alice, text, code):
    socket, _ = await join(alice)
    await socket.send_text(text)
    error = await socket.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["detail"], str) and error["detail"]
    await socket.send({"type": "ping", "ts": 1})
    assert await socket.recv() == {"type": "pong", "ts": 1}
    assert await db_read(lambda: Message.objects.count()) == 0


async def test_text_of_4000_characters_is_stored(join, alice):
    socket, _ = await join(alice)
    await socket.send(chat("long", "a" * 4000))
    frames = {f["type"]: f for f in await socket.recv_many(2)}
    assert frames["ack"]["seq"] == 1
    assert len(frames["chat.message"]["text"]) == 4000


async def test_binary_frame_is_bad_frame(join, alice):
    socket, _ = await join(alice)
    await socket.send_bytes(b'{"type": "ping", "ts": 1}')
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "bad_frame")
    await socket.send({"type": "ping", "ts": 2})
    assert await socket.recv() == {"type": "pong", "ts": 2}


async def test_rate_limited_frames_are_not_processed(join, alice, settings):
    settings.WS_RATE_LIMIT = 1  # one frame a second, a burst of two
    socket, _ = await join(alice)
    await socket.send({"type": "ping", "ts": 1})
    await socket.send({"type": "ping", "ts": 2})
    await socket.send(chat("over"))
    assert await socket.recv() == {"type": "pong", "ts": 1}
    assert await socket.recv() == {"type": "pong", "ts": 2}
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    await socket.silent()
    assert await db_read(lambda: Message.objects.count()) == 0


async def test_rate_limit_closes_with_1008(join, alice, settings):
    settings.WS_RATE_LIMIT = 0.01  # the bucket never holds a whole token
    settings.WS_RATE_LIMIT_CLOSE_AFTER = 3
    socket, _ = await join(alice)
    for i in range(4):
        await socket.send({"type": "ping", "ts": i})
    for _ in range(3):
        assert (await socket.recv())["code"] == "rate_limited"
    assert await socket.closed_with() == 1008


# --- close codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ws/bad.id/",
        "/ws/" + "s" * 65 + "/",
        "/ws/",
        "/ws//",
        "/elsewhere",
        "/ws/s1/?thread_id=a.b",
        "/ws/s1/?thread_id=",
        "/ws/s1/?thread_id=x&thread_id=y",
        "/ws/s1/?last_seq=-1",
        "/ws/s1/?last_seq=abc",
        "/ws/s1/?last_seq=",
        "/ws/s1/?epoch=",
        "/ws/s1/?epoch=a.b",
        "/ws/s1/?epoch=" + "e" * 33,
        "/ws/s1/?epoch=a&epoch=b",
    ],
)
async def test_malformed_parameters_close_4400(open_socket, alice, token_for, path):
    socket = await open_socket(path, subprotocols=["jwt", token_for(alice)])
    assert socket.connected is True  # accepted, so that the client reads the code
    assert socket.subprotocol == "jwt"
    assert await socket.closed_with() == 4400


async def test_no_credentials_close_4401(open_socket):
    socket = await open_socket("/ws/s1/")
    assert socket.connected is True
    assert await socket.closed_with() == 4401


@pytest.mark.parametrize(
    "subprotocols",
    [
        ["jwt"],
        ["jwt", ""],
        ["jwt", "garbage"],
        ["jwt", "a.b.c"],
    ],
)
async def test_bad_token_closes_4401(open_socket, subprotocols):
    socket = await open_socket("/ws/s1/", subprotocols=subprotocols)
    assert socket.connected is True
    assert socket.subprotocol == "jwt"
    assert await socket.closed_with() == 4401


async def test_expired_token_closes_4401(open_socket, alice, token_for):
    socket = await open_socket(
        "/ws/s1/", subprotocols=["jwt", token_for(alice, ttl_seconds=-5)]
    )
    assert socket.subprotocol == "jwt"
    assert await socket.closed_with() == 4401
    assert not await db_read(lambda: ChatSession.objects.exists())


async def test_token_of_an_inactive_user_closes_4401(open_socket, alice, token_for):
    token = token_for(alice)
    alice.is_active = False
    await database_sync_to_async(alice.save)()
    socket = await open_socket("/ws/s1/", subprotocols=["jwt", token])
    assert await socket.closed_with() == 4401


async def test_token_of_a_deleted_user_closes_4401(open_socket, make_user, token_for):
    ghost = await database_sync_to_async(make_user)("ghost")
    token = token_for(ghost)
    await database_sync_to_async(ghost.delete)()
    socket = await open_socket("/ws/s1/", subprotocols=["jwt", token])
    assert await socket.closed_with() == 4401


async def test_session_of_another_user_closes_4403(
    join, open_socket, alice, bob, token_for
):
    first, _ = await join(alice, session_id="mine")
    await first.close()
    socket = await open_socket("/ws/mine/", subprotocols=["jwt", token_for(bob)])
    assert socket.connected is True
    assert await socket.closed_with() == 4403
    session = await db_read(lambda: ChatSession.objects.get(pk="mine"))
    assert session.owner_id == alice.pk


async def test_private_thread_non_member_closes_4403(
    join, open_socket, alice, bob, make_thread, token_for
):
    await database_sync_to_async(make_thread)("secret", private=True, members=[alice])
    socket = await open_socket(
        "/ws/b1/?thread_id=secret", subprotocols=["jwt", token_for(bob)]
    )
    assert await socket.closed_with() == 4403
    member, hello = await join(alice, session_id="a1", thread_id="secret")
    assert hello["thread_id"] == "secret"


async def test_frame_over_max_bytes_closes_1009(join, alice, settings):
    settings.WS_MAX_MESSAGE_BYTES = 100
    socket, _ = await join(alice)
    at_limit = json.dumps(chat("x", "a" * (100 - len(json.dumps(chat("x", ""))))))
    assert len(at_limit.encode()) == 100
    await socket.send_text(at_limit)
    assert (await socket.recv())["type"] in ("ack", "chat.message")
    await socket.recv()
    # 60 characters, but 120 bytes in UTF-8: the limit is in bytes.
    await socket.send_text("é" * 60)
    assert await socket.closed_with() == 1009


async def test_binary_frame_over_max_bytes_closes_1009(join, alice, settings):
    settings.WS_MAX_MESSAGE_BYTES = 100
    socket, _ = await join(alice)
    await socket.send_bytes(b"x" * 101)
    assert await socket.closed_with() == 1009


async def test_database_down_at_connect_closes_1013(
    open_socket, alice, token_for, db_outage, caplog
):
    caplog.set_level(logging.INFO)
    token = token_for(alice)
    db_outage.start()
    socket = await open_socket("/ws/s1/", subprotocols=["jwt", token])
    assert socket.connected is True
    error = await socket.recv()  # the error frame first, then the close
    assert (error["type"], error["code"]) == ("error", "db_unavailable")
    assert isinstance(error["detail"], str) and error["detail"]
    assert await socket.closed_with() == 1013
    await socket.close()
    db_outage.end()
    gave_up = [r for r in caplog.records if getattr(r, "event", "") == "db_unavailable"]
    assert gave_up and all(r.levelno == logging.ERROR for r in gave_up)
    assert gave_up[0].attempt == django_settings.DB_MAX_RETRIES + 1
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason, record.levelno) == (
        1013,
        "try_again_later",
        logging.WARNING,
    )


async def test_database_down_mid_session_closes_1013(join, alice, db_outage):
    socket, _ = await join(alice)
    db_outage.start()
    await socket.send(chat("lost"))
    error = await socket.recv()
    assert (error["type"], error["code"]) == ("error", "db_unavailable")
    assert await socket.closed_with() == 1013
    db_outage.end()
    assert await db_read(lambda: Message.objects.count()) == 0


async def test_unexpected_exception_closes_1011_and_logs_a_traceback(
    join, alice, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)

    def broken(**kwargs):
        raise RuntimeError("boom in the service")

    socket, _ = await join(alice, session_id="s-err")
    monkeypatch.setattr("chat.commits.message_create_many", broken)
    await socket.send(chat("c1"))
    assert await socket.closed_with() == 1011
    await socket.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    with_traceback = [r for r in errors if r.exc_info]
    assert with_traceback, errors
    assert with_traceback[0].exc_info[0] is RuntimeError
    assert "boom in the service" in str(with_traceback[0].exc_info[1])
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason, record.levelno) == (
        1011,
        "server_error",
        logging.ERROR,
    )
    assert record.session_id == "s-err"
    event = await db_read(
        lambda: ConnectionEvent.objects.get(kind=ConnectionEvent.Kind.DISCONNECT)
    )
    assert (event.code, event.reason) == (1011, "server_error")


async def test_frames_and_closes_make_no_thread_hop(join, alice, monkeypatch):
    """Why dispatch and websocket_disconnect are overridden (channels' own hop)."""
    hops = []

    async def hop():
        hops.append(1)

    monkeypatch.setattr("channels.consumer.aclose_old_connections", hop)
    monkeypatch.setattr("channels.generic.websocket.aclose_old_connections", hop)
    socket, _ = await join(alice)
    await socket.send({"type": "ping", "ts": 1})
    assert await socket.recv() == {"type": "pong", "ts": 1}
    await socket.send(chat("c1"))
    await socket.recv_many(2)
    await socket.close()
    assert hops == []


# --- ws_disconnect records --------------------------------------------------------


async def test_normal_close_is_logged_at_info(join, alice, caplog):
    caplog.set_level(logging.INFO)
    socket, _ = await join(alice, session_id="s-log", thread_id="room")
    await socket.close(1000)
    (record,) = disconnect_records(caplog)
    assert record.levelno == logging.INFO
    assert record.session_id == "s-log"
    assert record.user == "alice"
    assert record.thread_id == "room"
    assert record.code == 1000
    assert record.reason == "normal_closure"
    assert isinstance(record.duration_s, float) and 0 <= record.duration_s < 60
    assert record.instance == django_settings.INSTANCE_ID
    session = await db_read(lambda: ChatSession.objects.get(pk="s-log"))
    # Still active: the grace-period cleanup decides (tests/e2e/test_cluster.py).
    assert session.status == ChatSession.Status.ACTIVE
    event = await db_read(
        lambda: ConnectionEvent.objects.get(kind=ConnectionEvent.Kind.DISCONNECT)
    )
    assert (event.code, event.reason, event.thread_key) == (
        1000,
        "normal_closure",
        "room",
    )


@pytest.mark.parametrize(
    ("code", "reason"), [(1001, "going_away"), (1006, "abnormal_closure")]
)
async def test_client_closes_are_logged_at_info(join, alice, caplog, code, reason):
    caplog.set_level(logging.INFO)
    socket, _ = await join(alice)
    await socket.close(code)
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason, record.levelno) == (code, reason, logging.INFO)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_frequent_abnormal_closes_are_logged_at_warning(
    join, alice, caplog, settings
):
    settings.WS_FREQUENT_DISCONNECTS = 3
    caplog.set_level(logging.INFO)
    for _ in range(3):
        socket, _ = await join(alice)
        await socket.close(1006)
    levels = [r.levelno for r in disconnect_records(caplog)]
    assert levels == [logging.INFO, logging.INFO, logging.WARNING]
    assert disconnect_records(caplog)[-1].frequent_disconnector is True


async def test_refusal_is_logged_at_warning(
    join, open_socket, alice, bob, caplog, token_for
):
    caplog.set_level(logging.INFO)
    first, _ = await join(alice, session_id="taken", thread_id="room")
    await first.close()
    caplog.clear()
    socket = await open_socket(
        "/ws/taken/?thread_id=room", subprotocols=["jwt", token_for(bob)]
    )
    assert await socket.closed_with() == 4403
    await socket.close()
    (record,) = disconnect_records(caplog)
    assert record.levelno == logging.WARNING
    assert (record.code, record.reason) == (4403, "forbidden")
    assert (record.session_id, record.user, record.thread_id) == (
        "taken",
        "bob",
        "room",
    )
    assert record.instance == django_settings.INSTANCE_ID
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    event = await db_read(
        lambda: ConnectionEvent.objects.filter(
            kind=ConnectionEvent.Kind.DISCONNECT, code=4403
        ).get()
    )
    assert (event.user_id, event.session_id, event.session_key) == (
        bob.pk,
        None,
        "taken",
    )


@pytest.mark.parametrize(
    ("path", "subprotocols", "code", "reason"),
    [
        ("/ws/bad.id/", None, 4400, "bad_request"),
        ("/ws/s1/", None, 4401, "unauthenticated"),
    ],
)
async def test_other_refusals_are_logged_at_warning(
    open_socket, caplog, path, subprotocols, code, reason
):
    caplog.set_level(logging.INFO)
    socket = await open_socket(path, subprotocols=subprotocols)
    assert await socket.closed_with() == code
    await socket.close()
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason, record.levelno) == (
        code,
        reason,
        logging.WARNING,
    )
