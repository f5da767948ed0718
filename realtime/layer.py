"""channels_redis' pub/sub layer with its Redis commands batched per shard.

Upstream (channels_redis 4.3, `RedisSingleShardConnection`) sends every SUBSCRIBE,
UNSUBSCRIBE and PUBLISH on its own, each under one asyncio.Lock per Redis host.
With a socket timeout set (ours: CHANNEL_LAYER_SOCKET_TIMEOUT), redis-py writes each
command through `asyncio.wait_for`, a task of its own on Python 3.11, so the lock
is held across loop turns and every waiter costs whole loop iterations. A socket's
open subscribes its channel (and its groups), its close unsubscribes: measured in a
2,000-socket reconnect storm, a connect waited 70-140 ms for its channel when calm
and 3.7 s while the dropped sockets' unsubscribes queued on the lock, during which
no connect completed at all.

Here the commands wait in a queue per connection kind and are sent a batch at a
time, under the same lock: consecutive (un)subscribes as one command naming every
channel, publishes as one pipeline. Order is kept: commands go out in the order
they were asked for, on one connection each, as they did under the lock. A
subscribe of a channel subscribed already, with no unsubscribe of it pending,
returns at once: its batch would have sent nothing for it.

Written against channels-redis 4.3 (pinned in requirements.txt), whose private
shard class it extends; tests/realtime/test_layer.py runs it against Redis.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close

Pending = tuple[str, Any, asyncio.Future]
SendBatch = Callable[[list[Pending]], Awaitable[None]]


class BatchedShard(RedisSingleShardConnection):
    """One Redis host's connections; concurrent commands sent as batches."""

    def __init__(self, host: Any, channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._subscriptions: list[Pending] = []  # ("subscribe"|"unsubscribe", name)
        self._publishes: list[Pending] = []  # ("publish", (channel, message))
        self._flushers: set[asyncio.Task] = set()
        # Unsubscribes queued or on the wire, by channel.
        self._leaving: Counter[str] = Counter()

    async def publish(self, channel: str, message: bytes) -> None:
        await self._queue(
            self._publishes, self._publish_batch, "publish", (channel, message)
        )

    async def subscribe(self, channel: str) -> None:
        # Subscribed, and no unsubscribe of it waiting or under way: its batch would
        # send nothing for it. Every socket's group_add of its thread (and of its
        # user) asks this; waiting for a batch cost it the lock and a loop pass.
        if channel in self._subscribed_to and not self._leaving[channel]:
            return
        await self._queue(
            self._subscriptions, self._subscription_batch, "subscribe", channel
        )

    async def unsubscribe(self, channel: str) -> None:
        await self._queue(
            self._subscriptions, self._subscription_batch, "unsubscribe", channel
        )

    async def _queue(
        self, queue: list[Pending], send: SendBatch, op: str, arg: Any
    ) -> None:
        """Add a command to `queue`; return once `send` sent its batch (or failed)."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        if op == "unsubscribe":
            # Counted until its batch has gone out (or failed, or been cancelled).
            self._leaving[arg] += 1
            future.add_done_callback(lambda _: self._left(arg))
        queue.append((op, arg, future))
        if len(queue) == 1:
            # The first of a batch starts its sender; the others ride along.
            task = asyncio.ensure_future(self._send(queue, send))
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        # Shielded: a caller cancelled while waiting (a closing consumer) leaves its
        # command to go out with the batch, as it would have once under the lock.
        await asyncio.shield(future)

    def _left(self, channel: str) -> None:
        self._leaving[channel] -= 1
        if self._leaving[channel] <= 0:
            del self._leaving[channel]

    async def _send(self, queue: list[Pending], send: SendBatch) -> None:
        async with self._lock:
            while queue:
                batch = queue[:]
                del queue[:]
                try:
                    await send(batch)
                except BaseException as exc:
                    _settle(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    _settle(batch, None)

    async def _publish_batch(self, batch: list[Pending]) -> None:
        self._ensure_redis()
        if len(batch) == 1:
            await self._redis.publish(*batch[0][1])
            return
        pipe = self._redis.pipeline(transaction=False)
        for _, (channel, message), _ in batch:
            pipe.publish(channel, message)
        await pipe.execute()

    async def _subscription_batch(self, batch: list[Pending]) -> None:
        # Runs of the same command become one command naming all their channels;
        # the set of subscribed channels is kept as upstream keeps it.
        for op, run in itertools.groupby(batch, key=lambda pending: pending[0]):
            names = list(dict.fromkeys(arg for _, arg, _ in run))
            if op == "subscribe":
                names = [n for n in names if n not in self._subscribed_to]
            else:
                names = [n for n in names if n in self._subscribed_to]
            if not names:
                continue
            self._ensure_redis()
            self._ensure_receiver()
            if op == "subscribe":
                await self._pubsub.subscribe(*names)
                self._subscribed_to.update(names)
            else:
                await self._pubsub.unsubscribe(*names)
                self._subscribed_to.difference_update(names)

    async def flush(self) -> None:
        for task in list(self._flushers):
            task.cancel()
        _settle([*self._subscriptions, *self._publishes], asyncio.CancelledError())
        self._subscriptions.clear()
        self._publishes.clear()
        await super().flush()


def _settle(batch: list[Pending], exc: BaseException | None) -> None:
    for _, _, future in batch:
        if future.done():
            continue
        if exc is None:
            future.set_result(None)
        elif isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)


def _retrieved(future: asyncio.Future) -> None:
    # A caller cancelled while it waited no longer reads its future's error; read
    # here, so that asyncio does not log it as never retrieved.
    if not future.cancelled():
        future.exception()


class BatchedLoopLayer(RedisPubSubLoopLayer):
    """The per-event-loop layer, on BatchedShard connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [BatchedShard(shard.host, self) for shard in self._shards]


class BatchedPubSubChannelLayer(RedisPubSubChannelLayer):
    """RedisPubSubChannelLayer (same CONFIG) whose commands are batched per shard."""

    def _get_layer(self) -> BatchedLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = BatchedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
