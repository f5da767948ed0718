"""Shared, TTL'd state in Redis (or in-process in the embedded single-instance mode)."""

import asyncio
import logging
import weakref
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis unreachable, as redis-py raises it (the channel layer's failures).
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# Redis being away: expected, reported by readiness; logged without a traceback.
REDIS_DOWN = (*REDIS_UNREACHABLE, OSError, TimeoutError)
SHARED_TIMEOUT_S = 2.0
SHARED_POOL_WAIT_S = 5.0
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)
# Each client's registered Lua scripts, by name.
_scripts: "weakref.WeakKeyDictionary[aioredis.Redis, dict[str, Any]]" = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> aioredis.Redis | None:
    """This event loop's Redis client, or None in the embedded mode."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # Blocking pool: in a disconnect storm callers queue for one of a bounded set
        # of connections instead of failing with "Too many connections" (redis-py's
        # default pool refuses past 100).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.SHARED_REDIS_MAX_CONNECTIONS,
            timeout=SHARED_POOL_WAIT_S,
            socket_timeout=SHARED_TIMEOUT_S,
            socket_connect_timeout=SHARED_TIMEOUT_S,
            **settings.REDIS_RETRY_OPTIONS,
        )
        client = aioredis.Redis.from_pool(pool)
        _clients[loop] = client
    return client


def script(name: str, body: str) -> Any:
    """The Lua script `name` of this event loop's client, registered once."""
    client = redis_client()
    scripts = _scripts.setdefault(client, {})
    if name not in scripts:
        scripts[name] = client.register_script(body)
    return scripts[name]


async def run_script_many(name: str, body: str, calls: list) -> list:
    """Each (keys, args) through one script, one pipeline: results or errors."""
    registered = script(name, body)
    # EVALSHA straight away: a pipeline given Script objects first asks Redis
    # whether they are loaded (SCRIPT EXISTS), a round trip per burst. The script
    # is loaded only when Redis says it is not (a restart, SCRIPT FLUSH); a
    # NOSCRIPT call ran nothing and is run again.
    results = await _evalsha_many(registered.sha, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        await redis_client().script_load(body)
        again = await _evalsha_many(registered.sha, [calls[i] for i in missing])
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    return results


async def _evalsha_many(sha: str, calls: list) -> list:
    async with redis_client().pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        # Each script is atomic on its own; one failing must not fail the others.
        return await pipe.execute(raise_on_error=False)


def key(*parts: str) -> str:
    """A namespaced Redis key."""
    return ":".join([settings.SHARED_KEY_PREFIX, *parts])


def warn_shared_failure(
    logger: logging.Logger, exc: BaseException, message: str, *args: Any, extra: dict
) -> None:
    """WARNING for a failed Redis step: error inline, traceback only if unexpected."""
    template = f"{message} error=%s"
    logger.warning(
        template,
        *args,
        exc,
        exc_info=not isinstance(exc, REDIS_DOWN),
        extra=extra,
    )
