"""Readiness probes: each bounded by a timeout, run concurrently."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection

from ops.db import db_ping
from ops.redis_client import redis_client

PROBE_TIMEOUT_S = 1.5
# Blocking probes run in pools of their own, not through sync_to_async: asgiref
# waits for the thread even after a cancellation, so a hung dependency would hold
# the answer for as long as its socket timeout (or for ever). A plain executor future
# is abandoned at the timeout, and a hung probe ties up only its own dependency's
# pool, never db_call's threads or the other probe.
_DB_PROBES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness-db")
_CACHE_PROBES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness-cache")
# Set once by the graceful shutdown (emergence/drain.py) and never cleared: it
# describes this process, which is on its way out, so a process-wide flag is right.
_draining = False


def start_draining() -> None:
    """From now on readiness answers 503 "draining" (the process is shutting down)."""
    global _draining
    _draining = True


def is_draining() -> bool:
    """True once this process has started its graceful shutdown."""
    return _draining


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


def _in_thread(fn, executor: ThreadPoolExecutor):
    """An async probe running the blocking `fn` in `executor`."""

    async def probe() -> None:
        await asyncio.get_running_loop().run_in_executor(executor, fn)

    return probe


async def readiness() -> dict[str, Any]:
    """Probe database, channel layer and cache at once; at most PROBE_TIMEOUT_S."""
    db = _in_thread(_db_probe, _DB_PROBES)
    cache_probe = _in_thread(_cache_probe, _CACHE_PROBES)
    database, layer, cache_result = await asyncio.gather(
        _timed(db), _timed(_channel_layer_probe), _timed(cache_probe)
    )
    components = {"database": database, "channel_layer": layer, "cache": cache_result}
    overall = "up" if all(c["status"] == "up" for c in components.values()) else "down"
    if is_draining():
        overall = "draining"  # 503 whatever the components say: take no new traffic
    return {"overall": overall, "components": components}
