"""realtime.limits: a user's open sockets counted in Redis, a burst in one pipeline."""

import asyncio
import uuid

import pytest

from ops import redis_client as shared
from realtime import limits


@pytest.fixture
def user() -> str:
    return f"limits-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def round_trips(monkeypatch) -> list[str]:
    """Each checkout of a connection from the shared client's pool (a round trip)."""
    taken: list[str] = []
    pool = shared.redis_client().connection_pool
    real = pool.get_connection

    async def counting(*args, **kwargs):
        taken.append(args[0] if args else "")
        return await real(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counting)
    return taken


async def held(user: str) -> int:
    return await shared.redis_client().zcard(limits.sockets_key(user))


async def test_a_burst_of_opens_is_one_pipeline_and_holds_the_limit(
    user, round_trips, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 150
    opened = await asyncio.gather(
        *(limits.socket_open(user, f"c{i}") for i in range(200))
    )
    assert opened == [True] * 150 + [False] * 50, "the first 150 in order"
    assert await held(user) == 150
    # One pipeline per burst (and a script check), not one call per socket.
    assert len(round_trips) <= 6, round_trips


async def test_a_burst_of_closes_is_one_pipeline(user, round_trips):
    await asyncio.gather(*(limits.socket_open(user, f"c{i}") for i in range(100)))
    round_trips.clear()
    await asyncio.gather(*(limits.socket_closed(user, f"c{i}") for i in range(100)))
    assert await held(user) == 0
    assert len(round_trips) <= 6, round_trips


async def test_the_same_socket_counts_once_and_a_closed_one_frees_its_place(
    user, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    assert await limits.socket_open(user, "a")
    assert await limits.socket_open(user, "a")
    assert await limits.socket_open(user, "b")
    assert not await limits.socket_open(user, "c")
    await limits.socket_closed(user, "a")
    assert await limits.socket_open(user, "c")
    assert await held(user) == 2
