"""Group commit through the whole ASGI stack: acks, broadcasts, batch events.

The sockets are the ones of test_consumers.py (channels' WebsocketCommunicator on
the real PostgreSQL and Redis channel layer).
"""

import asyncio
import logging
import time

import pytest
from channels.db import database_sync_to_async

from chat import protocol
from chat.models import Message
from chat.services import message_create, message_create_many, thread_join
from realtime.groups import thread_group
from tests.chat.test_consumers import (
    TIMEOUT,
    Communicator,
    Socket,
    chat,
    db_read,
    disconnect_records,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@pytest.fixture
async def join(fresh_channel_layer, token_for):
    """Open a JWT socket, past its ws:session_established; all closed after."""
    from emergence.asgi import application  # Django's handler: at test time

    opened: list[Socket] = []

    async def join_(user, session_id: str, thread_id: str) -> Socket:
        path = f"/ws/{session_id}/?thread_id={thread_id}"
        comm = Communicator(application, path, subprotocols=["jwt", token_for(user)])
        socket = Socket(comm)
        opened.append(socket)
        socket.connected, _ = await comm.connect(TIMEOUT)
        socket.opened_at = time.monotonic()
        assert socket.connected is True
        assert (await socket.recv())["type"] == "ws:session_established"
        return socket

    yield join_
    for socket in opened:
        await socket.close()


@database_sync_to_async
def users(make_user, *names: str) -> list:
    return [make_user(name) for name in names]


@database_sync_to_async
def write(thread_id: str, user, n: int) -> None:
    """Commit n messages without a broadcast, as another instance might have."""
    thread_join(thread_id=thread_id, user=user)
    for i in range(1, n + 1):
        message_create(thread_id=thread_id, user=user, client_id=f"w{i}", text="w")


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The size of every message_create_many call the sockets' commits make."""
    sizes: list[int] = []

    def counted(*, items):
        sizes.append(len(items))
        return message_create_many(items=items)

    monkeypatch.setattr("chat.commits.message_create_many", counted)
    return sizes


async def test_concurrent_senders_get_their_seqs_and_everyone_everything(
    join, make_user, batch_sizes
):
    senders, per_sender, thread = 6, 8, "busy"
    people = await users(make_user, *(f"user{i}" for i in range(senders)))
    sockets = [await join(u, f"s{i}", thread) for i, u in enumerate(people)]
    quiet = await users(make_user, "listener0", "listener1")
    listeners = [await join(u, f"l{i}", thread) for i, u in enumerate(quiet)]
    for n in range(per_sender):  # every socket's frames go out at once
        for i, socket in enumerate(sockets):
            await socket.send(chat(f"u{i}-{n}", f"text {i} {n}"))
    total = senders * per_sender
    received = await asyncio.gather(
        *(s.recv_many(total + per_sender) for s in sockets),
        *(s.recv_many(total) for s in listeners),
    )
    broadcast = received[-1]
    assert [f["seq"] for f in broadcast] == list(range(1, total + 1))
    seq_of = {(f["user"], f["id"]): f["seq"] for f in broadcast}
    for socket_frames in received:
        messages = [f for f in socket_frames if f["type"] == "chat.message"]
        assert messages == broadcast  # every message once, in seq order
    for i, socket_frames in enumerate(received[:senders]):
        acks = [f for f in socket_frames if f["type"] == "ack"]
        assert [a["id"] for a in acks] == [f"u{i}-{n}" for n in range(per_sender)]
        assert not any(a["duplicate"] for a in acks)
        seqs = [a["seq"] for a in acks]
        assert seqs == [seq_of[(f"user{i}", a["id"])] for a in acks]
        assert seqs == sorted(seqs)
    for socket in (*sockets, *listeners):
        await socket.silent()
    assert sum(batch_sizes) == total
    assert max(batch_sizes) > 1, batch_sizes  # several sockets shared a commit


async def test_resends_racing_on_two_sockets_are_stored_once(join, alice, bob):
    tabs = [await join(alice, f"tab{i}", "t") for i in "ab"]
    peer = await join(bob, "peer", "t")
    for n in range(5):
        for tab in tabs:  # both tabs of alice send the same ids at once
            await tab.send(chat(f"m{n}", f"text {n}"))
    acks = []
    for tab in tabs:
        frames = await tab.recv_many(10)
        acks.append({f["id"]: f for f in frames if f["type"] == "ack"})
        messages = [f["seq"] for f in frames if f["type"] == "chat.message"]
        assert messages == [1, 2, 3, 4, 5]
    for n in range(5):
        pair = [tab_acks[f"m{n}"] for tab_acks in acks]
        assert {a["seq"] for a in pair} == {n + 1}  # the same, original seq
        assert sorted(a["duplicate"] for a in pair) == [False, True]
    assert [f["seq"] for f in await peer.recv_many(5)] == [1, 2, 3, 4, 5]
    await peer.silent()
    assert await db_read(lambda: Message.objects.count()) == 5


async def test_a_batch_event_is_delivered_once_in_order_gaps_filled(
    join, alice, bob, fresh_channel_layer
):
    listener = await join(bob, "b1", "room")
    await write("room", alice, 5)  # committed without a broadcast

    def frames() -> list[dict]:
        rows = Message.objects.select_related("user").filter(thread_id="room")
        return [protocol.message_frame(m) for m in rows.order_by("seq")]

    sent = await db_read(frames)
    group = thread_group("room")
    # Seqs 3-4 first: 1-2 are read from the database and sent before them.
    event = protocol.messages_event("room", sent[2:4])
    await fresh_channel_layer.group_send(group, event)
    # An overlapping event and a plain one: only seq 5 is new.
    event = protocol.messages_event("room", sent[1:5])
    await fresh_channel_layer.group_send(group, event)
    await fresh_channel_layer.group_send(group, sent[4])
    assert await listener.recv_many(5) == sent
    await listener.silent()


async def test_an_unexpected_error_in_the_commit_closes_1011(
    join, alice, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)

    def broken(**kwargs):
        raise RuntimeError("boom in the batch")

    socket = await join(alice, "s-err", "main")
    monkeypatch.setattr("chat.commits.message_create_many", broken)
    await socket.send(chat("c1"))
    assert await socket.closed_with() == 1011
    await socket.close()
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert with_traceback and with_traceback[0].exc_info[0] is RuntimeError
    (record,) = disconnect_records(caplog)
    assert (record.code, record.reason) == (1011, "server_error")
