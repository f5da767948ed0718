"""Shared, TTL'd state in Redis (or in-process in the embedded single-instance mode)."""

import asyncio
import logging
import time
import weakref
from collections import defaultdict

import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

SHARED_TIMEOUT_S = 1.0
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)
# Embedded mode only (no REDIS_URL): one process, so a dict is the whole truth.
_local_abnormal: dict[str, list[float]] = defaultdict(list)


def redis_client() -> aioredis.Redis | None:
    """This event loop's Redis client, or None in the embedded mode."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=SHARED_TIMEOUT_S,
            socket_connect_timeout=SHARED_TIMEOUT_S,
        )
        _clients[loop] = client
    return client


def key(*parts: str) -> str:
    """A namespaced Redis key."""
    return ":".join([settings.SHARED_KEY_PREFIX, *parts])


async def abnormal_close_count(username: str) -> int:
    """Record an abnormal close of the user; return how many fell within the window."""
    window = settings.WS_FREQUENT_WINDOW_SECONDS
    now = time.time()
    client = redis_client()
    if client is None:
        times = [t for t in _local_abnormal[username] if t > now - window] + [now]
        _local_abnormal[username] = times
        return len(times)
    k = key("abnormal", username)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.zadd(k, {f"{now:.6f}": now})
            pipe.zremrangebyscore(k, 0, now - window)
            pipe.zcard(k)
            pipe.expire(k, int(window) + 1)
            results = await asyncio.wait_for(pipe.execute(), SHARED_TIMEOUT_S)
        return int(results[2])
    except (TimeoutError, aioredis.RedisError, OSError):
        # Shared counters are best effort; readiness reports Redis being down.
        logger.debug("abnormal_close_count unavailable", exc_info=True)
        return 0
