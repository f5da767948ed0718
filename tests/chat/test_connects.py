"""chat.connects: sockets opening at once share one DB round, each its own answer."""

import asyncio
import json

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import connects
from chat.connects import SocketOpen, SocketOpened, socket_open_many
from chat.models import Thread
from chat.services import ThreadForbidden, ThreadQuotaExceeded
from sessions_app.models import ChatSession, ConnectionEvent
from sessions_app.services import SessionForbidden

TIMEOUT = 10


def opening(user, session_id, thread_id="main", after_seq=None) -> SocketOpen:
    return SocketOpen(session_id, user, thread_id, "inst-a", after_seq)


def open_many(*opens: SocketOpen, max_replay: int = 100) -> list:
    return socket_open_many(opens=list(opens), max_replay=max_replay)


def seqs(opened: SocketOpened) -> list[int]:
    return [m.seq for m in opened.replay.messages]


# --- socket_open_many ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_burst_joining_a_new_thread_counts_one_creation(alice, bob, settings):
    settings.THREAD_CREATE_LIMIT = 2
    results = open_many(
        *(opening(alice, f"s{i}", "brand-new") for i in range(30)),
        opening(bob, "b", "brand-new"),
        opening(alice, "other", "second-new"),
        opening(alice, "third", "third-new"),  # alice's third creation: refused
    )
    *joined, third = results
    assert all(isinstance(r, SocketOpened) for r in joined), joined
    assert isinstance(third, ThreadQuotaExceeded)
    assert Thread.objects.get(pk="brand-new").created_by == alice
    assert not Thread.objects.filter(pk="third-new").exists()


@pytest.mark.django_db
def test_mixed_batch_each_socket_its_own_answer(alice, bob, make_thread, post):
    make_thread("secret", private=True, members=[alice])
    open_many(opening(alice, "taken"), opening(alice, "old", "room"))
    post("room", bob, 5)
    with CaptureQueriesContext(connection) as queries:
        results = open_many(
            opening(alice, "n1", "lobby"),
            opening(alice, "n2", "lobby"),
            opening(bob, "taken", "bobs-own"),  # alice's session: refused alone
            opening(bob, "b1", "secret"),  # private, not a member: refused alone
            opening(alice, "a1", "secret"),
            opening(alice, "old", "room", after_seq=2),
            opening(bob, "b2", "room", after_seq=4),
            opening(bob, "b3", "room", after_seq=0),
            max_replay=4,
        )
    n1, n2, taken, secret, member, old, b2, b3 = results
    assert isinstance(taken, SessionForbidden)
    assert isinstance(secret, ThreadForbidden)
    assert (n1.resumed, n2.resumed, member.resumed, old.resumed) == (
        False,
        False,
        False,
        True,
    )
    assert (seqs(old), seqs(b2), seqs(b3)) == ([3, 4, 5], [5], [])
    assert (old.replay.recovered, b2.replay.recovered) == (True, True)
    assert (b3.replay.last_seq, b3.replay.recovered) == (5, False)  # never partial
    assert old.replay.messages[0].user.username == "bob"
    # The new thread was created once, the refused socket's never.
    inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "chat_thread"')]
    assert len(inserts) == 1
    assert Thread.objects.get(pk="lobby").private is False
    assert not Thread.objects.filter(pk="bobs-own").exists()
    assert not ChatSession.objects.filter(pk="b1").exists()
    assert ChatSession.objects.get(pk="taken").connect_count == 1
    recorded = ConnectionEvent.objects.filter(kind="connect").values_list(
        "session_key", flat=True
    )
    assert sorted(recorded) == ["a1", "b2", "b3", "n1", "n2", "old", "old", "taken"]


@pytest.mark.django_db
def test_statements_do_not_grow_with_the_burst(make_user, post):
    users = [make_user(f"u{i}") for i in range(20)]
    open_many(*(opening(u, f"s{i}", f"t{i % 4}") for i, u in enumerate(users)))
    post("t0", users[0], 3)

    def statements(opens) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            results = open_many(*opens)
        assert not [r for r in results if isinstance(r, Exception)]
        # The test's transaction makes the atomic block a savepoint: not counted.
        return [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]]

    one = statements([opening(users[0], "s0", "t0", after_seq=1)])
    burst = [opening(u, f"s{i}", f"t{i % 4}", i % 3) for i, u in enumerate(users)]
    assert statements(burst) == one
    # threads; sessions: insert, lock, update, events; after the commit the
    # messages to replay (the threads' seqs were read with the threads).
    assert one == ["SELECT", "INSERT", "SELECT", "UPDATE", "INSERT", "SELECT"]


@pytest.mark.django_db
def test_a_thread_made_private_meanwhile_refuses_and_leaves_nothing(
    alice, bob, make_thread, monkeypatch
):
    """POST /api/threads won the race between the read and the insert."""
    make_thread("race", private=True, members=[alice])
    real = connects.thread_join_many

    def first_read_misses(*, joins, create=True):
        joined = real(joins=joins, create=create)
        if create:
            return joined
        return [
            None if t == "race" else j for (t, _), j in zip(joins, joined, strict=True)
        ]

    monkeypatch.setattr(connects, "thread_join_many", first_read_misses)
    bobs, alices, other = open_many(
        opening(bob, "b-race", "race"),
        opening(alice, "a-race", "race"),
        opening(bob, "b-main", "main"),
    )
    assert isinstance(bobs, ThreadForbidden)
    assert isinstance(alices, SocketOpened) and isinstance(other, SocketOpened)
    assert not ChatSession.objects.filter(pk="b-race").exists()
    assert ChatSession.objects.filter(pk="a-race").exists()
    assert not ConnectionEvent.objects.filter(session_key="b-race").exists()


# --- through the consumer, many sockets at once -------------------------------------


class Communicator(WebsocketCommunicator):
    """Without channels' close_old_connections no-op (see tests/chat/test_consumers)."""

    async def send_input(self, message):
        return await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout=1):
        return await ApplicationCommunicator.receive_output(self, timeout)


async def _open(application, path: str, token: str) -> tuple:
    """Connect; the frames up to presence, or the close code."""
    comm = Communicator(application, path, subprotocols=["jwt", token])
    connected, _ = await comm.connect(TIMEOUT)
    assert connected
    frames = []
    while True:
        message = await comm.receive_output(TIMEOUT)
        if message["type"] == "websocket.close":
            return comm, frames, message["code"]
        frame = json.loads(message["text"])
        frames.append(frame)
        if frame["type"] == "presence":
            return comm, frames, None


@pytest.fixture
def batch_sizes(monkeypatch):
    """The size of every socket_open_many call (one per DB round)."""
    sizes: list[int] = []
    real = connects.socket_open_many

    def counting(*, opens, max_replay):
        sizes.append(len(opens))
        return real(opens=opens, max_replay=max_replay)

    monkeypatch.setattr(connects, "socket_open_many", counting)
    return sizes


def _check(expected: dict | int, frames: list[dict], code: int | None) -> None:
    """A socket got its refusal code, or its hello, its whole replay and presence."""
    if isinstance(expected, int):
        assert (frames, code) == ([], expected)
        return
    assert code is None, (expected, frames, code)
    hello, *replayed, presence = frames
    assert hello["type"] == "ws:session_established"
    assert {k: hello[k] for k in expected if k != "seqs"} == {
        k: v for k, v in expected.items() if k != "seqs"
    }
    assert [f["seq"] for f in replayed] == expected.get("seqs", [])
    assert presence["type"] == "presence"


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
async def test_many_sockets_at_once(
    fresh_channel_layer, alice, bob, token_for, make_thread, post, batch_sizes, settings
):
    from emergence.asgi import application

    settings.WS_MAX_SOCKETS_PER_USER = 1000  # one user opens them all

    @database_sync_to_async
    def prepare() -> None:
        make_thread("secret", private=True, members=[alice])
        make_thread("busy")
        post("busy", bob, 6)
        open_many(opening(alice, "mine"), opening(alice, "r0", "busy"))

    await prepare()
    a, b = token_for(alice), token_for(bob)
    plan: list[tuple[str, str, dict | int]] = [
        (
            f"fresh{i}/?thread_id=t{i % 3}",
            a,
            {"session_id": f"fresh{i}", "resumed": False},
        )
        for i in range(16)
    ]
    plan += [
        (
            f"r{i}/?thread_id=busy&last_seq={i}",
            a,
            {
                "resumed": i == 0,
                "last_seq": 6,
                "replay": 6 - i,
                "seqs": list(range(i + 1, 7)),
            },
        )
        for i in range(6)
    ]
    plan += [
        ("mine/?thread_id=main", b, 4403),  # alice's session
        ("bob-s/?thread_id=secret", b, 4403),  # private, not a member
        ("mine/?thread_id=main", a, {"user": "alice", "resumed": True}),
    ]
    opened = await asyncio.gather(
        *(_open(application, f"/ws/{p}", t) for p, t, _ in plan)
    )
    try:
        for (_, _, expected), (_, frames, code) in zip(plan, opened, strict=True):
            _check(expected, frames, code)
        # Coalesced: fewer DB rounds than sockets, every socket in exactly one.
        assert sum(batch_sizes) == len(plan) and max(batch_sizes) > 1, batch_sizes
    finally:
        for comm, _, _ in opened:
            await comm.disconnect(1000, timeout=TIMEOUT)
