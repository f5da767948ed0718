"""ops.redis_client: a burst of Lua script calls in one round trip."""

import uuid

import pytest
from redis.asyncio.client import Pipeline

from ops import redis_client as shared

COUNT = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
def key() -> str:
    return shared.key("test-scripts", uuid.uuid4().hex)


@pytest.fixture
def asked(monkeypatch) -> list[str]:
    """Commands a pipeline sends on its own before its batch (a round trip each)."""
    sent: list[str] = []
    real = Pipeline.immediate_execute_command

    async def recording(self, *args, **options):
        sent.append(str(args[0]))
        return await real(self, *args, **options)

    monkeypatch.setattr(Pipeline, "immediate_execute_command", recording)
    return sent


async def test_a_burst_runs_the_loaded_script_without_asking_for_it(key, asked):
    await shared.run_script_many("count", COUNT, [([key], [])])
    results = await shared.run_script_many("count", COUNT, [([key], [])] * 50)
    assert results == list(range(2, 52))
    assert asked == []  # no SCRIPT EXISTS before each batch
    await shared.redis_client().delete(key)


async def test_a_script_redis_lost_is_loaded_again_and_nothing_runs_twice(key, asked):
    await shared.run_script_many("count", COUNT, [([key], [])])
    await shared.redis_client().script_flush()  # as a Redis restart leaves it
    results = await shared.run_script_many("count", COUNT, [([key], [])] * 5)
    assert results == [2, 3, 4, 5, 6]
    assert int(await shared.redis_client().get(key)) == 6
    await shared.redis_client().delete(key)
