"""realtime.layer: the pub/sub layer's commands batched per shard, on real Redis."""

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from realtime.layer import BatchedPubSubChannelLayer, BatchedShard

RECEIVE_S = 5.0


@pytest.fixture
async def layer():
    """A layer of its own on the test Redis, flushed (connections closed) after."""
    prefix = f"{settings.CHANNEL_LAYER_PREFIX}-layer-{uuid.uuid4().hex[:8]}"
    made = BatchedPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix)
    yield made
    await made.flush()


def shard_of(layer: BatchedPubSubChannelLayer) -> BatchedShard:
    shards = layer._get_layer()._shards
    assert len(shards) == 1 and isinstance(shards[0], BatchedShard)
    return shards[0]


async def redis_subscriptions(pattern: str) -> set[str]:
    """What Redis itself says is subscribed (PUBSUB CHANNELS)."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        return {name.decode() for name in await client.pubsub_channels(pattern)}
    finally:
        await client.aclose()


async def test_settings_use_the_batched_layer():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == (
        "realtime.layer.BatchedPubSubChannelLayer"
    )


async def test_concurrent_new_channels_go_out_as_one_subscribe(layer, monkeypatch):
    shard = shard_of(layer)
    await layer.new_channel()  # connects the shard
    sent = []
    original = shard._pubsub.subscribe

    async def counting(*names):
        sent.append(names)
        await original(*names)

    monkeypatch.setattr(shard._pubsub, "subscribe", counting)
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(200)))

    assert sum(len(names) for names in sent) == 200
    assert len(sent) <= 3, "one SUBSCRIBE per batch, not one per channel"
    assert shard._subscribed_to >= set(channels)
    assert set(channels) <= await redis_subscriptions(f"{layer.prefix}*")


async def test_every_channel_gets_its_own_message(layer):
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(50)))
    await asyncio.gather(*(layer.send(c, {"type": "m", "to": c}) for c in channels))
    for channel in channels:
        message = await asyncio.wait_for(layer.receive(channel), RECEIVE_S)
        assert message == {"type": "m", "to": channel}


async def test_publishes_keep_their_order_in_one_pipeline(layer, monkeypatch):
    channel = await layer.new_channel()
    shard = shard_of(layer)
    executed = []
    original = shard._redis.pipeline

    def recording(*args, **kwargs):
        pipe = original(*args, **kwargs)
        executed.append(pipe)
        return pipe

    monkeypatch.setattr(shard._redis, "pipeline", recording)
    await asyncio.gather(
        *(layer.send(channel, {"type": "m", "n": n}) for n in range(100))
    )

    got = [
        (await asyncio.wait_for(layer.receive(channel), RECEIVE_S))["n"]
        for _ in range(100)
    ]
    assert got == list(range(100))
    assert 1 <= len(executed) <= 3


async def test_group_discard_then_add_in_one_batch_stays_subscribed(layer):
    """Unsubscribe and subscribe of one name in one batch go out in order."""
    channel = await layer.new_channel()
    other = await layer.new_channel()
    await layer.group_add("g", channel)
    await asyncio.gather(layer.group_discard("g", channel), layer.group_add("g", other))

    group = layer._get_layer()._get_group_channel_name("g")
    assert group in shard_of(layer)._subscribed_to
    assert group in await redis_subscriptions(group)
    await layer.group_send("g", {"type": "m", "text": "after"})
    message = await asyncio.wait_for(layer.receive(other), RECEIVE_S)
    assert message == {"type": "m", "text": "after"}


async def test_last_group_discard_unsubscribes_in_redis(layer):
    channels = await asyncio.gather(*(layer.new_channel() for _ in range(20)))
    await asyncio.gather(*(layer.group_add("room", c) for c in channels))
    group = layer._get_layer()._get_group_channel_name("room")
    assert group in await redis_subscriptions(group)

    await asyncio.gather(*(layer.group_discard("room", c) for c in channels))
    assert group not in shard_of(layer)._subscribed_to
    assert group not in await redis_subscriptions(group)


async def test_a_cancelled_receive_still_unsubscribes(layer):
    channel = await layer.new_channel()
    waiter = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(50):  # the batch goes out on its own task
        if channel not in await redis_subscriptions(channel):
            break
        await asyncio.sleep(0.02)
    assert channel not in await redis_subscriptions(channel)
    assert channel not in shard_of(layer)._subscribed_to


async def test_a_failed_batch_fails_every_caller_and_the_next_one_works(
    layer, monkeypatch
):
    await layer.new_channel()
    shard = shard_of(layer)
    original = shard._pubsub.subscribe

    async def broken(*names):
        raise ConnectionError("redis went away")

    monkeypatch.setattr(shard._pubsub, "subscribe", broken)
    results = await asyncio.gather(
        *(layer.new_channel() for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)

    monkeypatch.setattr(shard._pubsub, "subscribe", original)
    channel = await layer.new_channel()
    assert channel in shard._subscribed_to
    await layer.send(channel, {"type": "m"})
    assert await asyncio.wait_for(layer.receive(channel), RECEIVE_S) == {"type": "m"}


async def test_a_group_subscribed_already_is_joined_without_a_batch(layer):
    first, second = await asyncio.gather(layer.new_channel(), layer.new_channel())
    await layer.group_add("room", first)
    shard = shard_of(layer)
    async with shard._lock:  # no batch can go out meanwhile
        await asyncio.wait_for(layer.group_add("room", second), RECEIVE_S)
    await layer.group_send("room", {"type": "m"})
    assert await asyncio.wait_for(layer.receive(second), RECEIVE_S) == {"type": "m"}


async def test_a_join_behind_the_groups_unsubscribe_waits_and_stays_subscribed(layer):
    first, second = await asyncio.gather(layer.new_channel(), layer.new_channel())
    await layer.group_add("room", first)
    shard = shard_of(layer)
    group = layer._get_layer()._get_group_channel_name("room")
    async with shard._lock:  # the last member's unsubscribe queues behind this
        leaving = asyncio.ensure_future(layer.group_discard("room", first))
        await asyncio.sleep(0)
        joining = asyncio.ensure_future(layer.group_add("room", second))
        await asyncio.sleep(0.05)
        assert not joining.done(), "it must not return before the unsubscribe"
    await asyncio.wait_for(asyncio.gather(leaving, joining), RECEIVE_S)
    assert group in shard._subscribed_to and not shard._leaving
    assert group in await redis_subscriptions(group)
    await layer.group_send("room", {"type": "m"})
    assert await asyncio.wait_for(layer.receive(second), RECEIVE_S) == {"type": "m"}
