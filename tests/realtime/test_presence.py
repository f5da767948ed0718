"""Presence and detach markers in real Redis (and the embedded local store)."""

import asyncio
import time

import pytest
import redis

from ops import redis_client as shared
from realtime import presence
from realtime.presence import LocalPresence, RedisPresence, new_marker


@pytest.fixture(params=["redis", "local"])
def store(request):
    return RedisPresence() if request.param == "redis" else LocalPresence()


async def detach_start(store, *detach) -> None:
    """One (thread, user, session, channel, marker) detach through the batch call."""
    assert await store.detach_start_many([detach]) == [None]


async def detach_finish(store, *detach):
    """One (thread, user, session, marker) decision through the batch call."""
    [outcome] = await store.detach_finish_many([detach])
    return outcome


async def reapable(store, session_id: str, *, dry_run: bool = False) -> bool:
    """One session's reap check through the batch call."""
    [answer] = await store.sessions_reapable([session_id], dry_run=dry_run)
    return answer


async def test_first_socket_joins_second_does_not(store):
    first = await store.attach("t", "alice", "s1", "c1")
    second = await store.attach("t", "alice", "s2", "c2")
    other = await store.attach("t", "bob", "s3", "c3")
    assert first.joined and not second.joined and other.joined
    assert other.present == ["alice", "bob"]


async def test_reconnect_of_the_session_cancels_and_keeps_presence(store):
    await store.attach("t", "alice", "s1", "c1")
    marker = new_marker()
    await detach_start(store, "t", "alice", "s1", "c1", marker)
    again = await store.attach("t", "alice", "s1", "c2")
    assert not again.joined  # within the grace: never left, no new join
    outcome = await detach_finish(store, "t", "alice", "s1", marker)
    assert not outcome.session_executed and not outcome.user_left
    assert await store.present("t") == ["alice"]


async def test_stay_away_executes_and_leaves_once(store):
    await store.attach("t", "alice", "s1", "c1")
    marker = new_marker()
    await detach_start(store, "t", "alice", "s1", "c1", marker)
    outcome = await detach_finish(store, "t", "alice", "s1", marker)
    assert outcome.session_executed and outcome.user_left
    again = await detach_finish(store, "t", "alice", "s1", marker)
    assert not again.session_executed and not again.user_left
    assert await store.present("t") == []


async def test_later_detach_supersedes_earlier_one(store):
    await store.attach("t", "alice", "s1", "c1")
    first = new_marker()
    await detach_start(store, "t", "alice", "s1", "c1", first)
    await store.attach("t", "alice", "s1", "c2")
    second = new_marker()
    await detach_start(store, "t", "alice", "s1", "c2", second)
    early = await detach_finish(store, "t", "alice", "s1", first)
    assert not early.session_executed and not early.user_left
    late = await detach_finish(store, "t", "alice", "s1", second)
    assert late.session_executed and late.user_left


async def test_two_tabs_one_leave(store):
    await store.attach("t", "alice", "s1", "c1")
    await store.attach("t", "alice", "s2", "c2")
    m1 = new_marker()
    await detach_start(store, "t", "alice", "s1", "c1", m1)
    out1 = await detach_finish(store, "t", "alice", "s1", m1)
    assert out1.session_executed and not out1.user_left  # tab 2 still open
    m2 = new_marker()
    await detach_start(store, "t", "alice", "s2", "c2", m2)
    out2 = await detach_finish(store, "t", "alice", "s2", m2)
    assert out2.session_executed and out2.user_left


async def test_dead_instance_entries_expire_and_are_reaped(settings):
    """Sockets whose process stopped refreshing them vanish after the TTL."""
    settings.PRESENCE_TTL_SECONDS = 1
    store = RedisPresence()
    await store.attach("t", "alice", "s1", "c1")
    assert await store.reap_users(dry_run=True) == []
    assert not await reapable(store, "s1", dry_run=True)
    await asyncio.sleep(1.2)
    assert await store.reap_users(dry_run=True) == [("t", "alice")]
    assert await store.present("t") == ["alice"]  # dry run changed nothing
    assert await store.reap_users() == [("t", "alice")]
    assert await store.present("t") == []
    assert await reapable(store, "s1")


async def test_pending_detach_is_not_reaped_before_its_deadline(settings):
    store = RedisPresence()
    await store.attach("t", "alice", "s1", "c1")
    await detach_start(store, "t", "alice", "s1", "c1", new_marker())
    assert await store.reap_users() == []
    assert not await reapable(store, "s1")
    overdue = f"x|{time.time() - 1:.3f}"
    await detach_start(store, "t", "alice", "s1", "c1", overdue)
    assert await store.reap_users() == [("t", "alice")]
    assert await reapable(store, "s1")


async def test_refresh_keeps_entries_alive(settings):
    settings.PRESENCE_TTL_SECONDS = 1
    store = RedisPresence()
    await store.attach("t", "alice", "s1", "c1")
    sockets = {"c1": presence.LocalSocket("t", "alice", "s1")}
    for _ in range(3):
        await asyncio.sleep(0.5)
        await store.refresh(sockets)
    assert await store.reap_users(dry_run=True) == []
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.ttl(shared.key("pt", "t", "alice")) > 0
    client.close()


async def test_refresh_restores_presence_lost_with_redis(settings):
    """A Redis restart loses the present set; the next heartbeat puts users back."""
    store = RedisPresence()
    await store.attach("t", "alice", "s1", "c1")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(shared.key("pu", "t"))
    client.close()
    assert await store.present("t") == []
    await store.refresh({"c1": presence.LocalSocket("t", "alice", "s1")})
    assert await store.present("t") == ["alice"]
