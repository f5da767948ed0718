"""Readiness probes: each bounded by a timeout, run concurrently."""

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection

from sessions_app.db import db_ping
from sessions_app.shared import redis_client

PROBE_TIMEOUT_S = 1.5


def _db_probe() -> None:
    try:
        db_ping()
    finally:
        # A throwaway worker thread: give the connection back (to the pool) now.
        connection.close()


def _cache_probe() -> None:
    cache.set("readiness-probe", "1", timeout=10)
    if cache.get("readiness-probe") != "1":
        raise RuntimeError("cache did not return what was stored")


async def _channel_layer_probe() -> None:
    layer = get_channel_layer()
    client = redis_client()
    if client is not None:
        await client.ping()
    elif layer is None:
        raise RuntimeError("no channel layer configured")


async def _timed(probe) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
        status, error = "up", None
    except Exception as exc:  # a probe reports any failure; it never raises
        status, error = "down", f"{type(exc).__name__}: {exc}"[:200]
    result: dict[str, Any] = {
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if error:
        result["error"] = error
    return result


async def readiness() -> dict[str, Any]:
    """Probe database, channel layer and cache at once; at most PROBE_TIMEOUT_S."""
    # thread_sensitive=False: a hung probe must not hold the shared DB thread.
    db = sync_to_async(_db_probe, thread_sensitive=False)
    cache_probe = sync_to_async(_cache_probe, thread_sensitive=False)
    database, layer, cache_result = await asyncio.gather(
        _timed(db), _timed(_channel_layer_probe), _timed(cache_probe)
    )
    components = {"database": database, "channel_layer": layer, "cache": cache_result}
    overall = "up" if all(c["status"] == "up" for c in components.values()) else "down"
    return {"overall": overall, "components": components}
