"""Typing indicators over real sockets: other users see them, the sender never."""

import asyncio

import pytest

from chat import typing as typing_service
from tests.chat import test_consumers as base

TIMEOUT = base.TIMEOUT
open_socket = base.open_socket  # the socket fixtures, shared with those tests
join = base.join

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


async def test_typing_reaches_other_users_not_the_senders_sockets(join, alice, bob):
    mine, _ = await join(alice, "a1")
    mine_too, _ = await join(alice, "a2")
    theirs, _ = await join(bob, "b1")
    await mine.send({"type": "typing"})
    frame = await theirs.recv()
    assert frame == {"type": "typing", "thread_id": "main", "user": "alice"}
    await mine.silent()
    await mine_too.silent()


async def test_typing_is_throttled_per_user_and_thread(join, alice, bob):
    mine, _ = await join(alice, "a1")
    other_tab, _ = await join(alice, "a2")
    theirs, _ = await join(bob, "b1")
    await mine.send({"type": "typing"})
    assert (await theirs.recv())["user"] == "alice"
    # Within the window, from any of alice's sockets: dropped, no error frame.
    await mine.send({"type": "typing"})
    await other_tab.send({"type": "typing"})
    await theirs.silent()
    await mine.silent()
    # bob has a window of his own.
    await theirs.send({"type": "typing"})
    assert (await mine.recv())["user"] == "bob"
    await asyncio.sleep(typing_service.THROTTLE_MS / 1000 + 0.2)
    await mine.send({"type": "typing"})
    assert (await theirs.recv(TIMEOUT))["user"] == "alice"


async def test_typing_is_never_stored_or_replayed(join, alice, bob):
    mine, _ = await join(alice, "a1")
    await mine.send({"type": "typing"})
    await mine.send({"type": "ping", "ts": 1})
    assert (await mine.recv())["type"] == "pong"
    _, hello = await join(bob, "b1", last_seq=0)
    assert hello["last_seq"] == 0 and hello["replay"] == 0


def test_local_throttle_without_redis():
    typing_service._local.clear()
    assert typing_service._local_claim("t", "alice", 100.0)
    assert not typing_service._local_claim("t", "alice", 101.9)
    assert typing_service._local_claim("t", "bob", 101.9)
    assert typing_service._local_claim("t", "alice", 102.1)
    typing_service._local.clear()


async def test_the_throttle_is_a_shared_redis_key(settings):
    """One key per user and thread with a TTL: every instance sees the same window."""
    assert settings.REDIS_URL
    assert await typing_service.typing_claim(thread_id="t", username="alice")
    assert not await typing_service.typing_claim(thread_id="t", username="alice")
    assert await typing_service.typing_claim(thread_id="u", username="alice")
    client = typing_service.redis_client()
    ttl = await client.pttl(typing_service.key("typing", "t", "alice"))
    assert 0 < ttl <= typing_service.THROTTLE_MS
    assert typing_service._local == {}  # no instance-local truth with Redis


async def test_the_throttle_without_redis_is_process_local(settings):
    settings.REDIS_URL = ""
    typing_service._local.clear()
    assert await typing_service.typing_claim(thread_id="t", username="bob")
    assert not await typing_service.typing_claim(thread_id="t", username="bob")
    typing_service._local.clear()
