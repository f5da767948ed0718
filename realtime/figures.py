"""Disconnect figures shared by every instance (/ws-metrics, `ws_metrics`).

They live in Redis with TTLs and capped sorted sets, so /ws-metrics answers the same
on every instance and stays bounded in memory.
"""

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from ops import redis_client as shared
from ops.batching import Coalescer

logger = logging.getLogger(__name__)

TOP_N = 10
TRACKED_USERS_CAP = 10_000
METRICS_TTL_S = 7 * 24 * 3600

# Embedded mode only (no REDIS_URL): one process, so these dicts are the whole truth.
_local_reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_local_last: dict[str, float] = {}
_local_abnormal: dict[str, list[float]] = defaultdict(list)

_SHARED_ERRORS = (aioredis.RedisError, *shared.REDIS_DOWN)


def _k(*parts: str) -> str:
    return shared.key("m", *parts)


async def record_disconnect(username: str, reason: str, *, abnormal: bool) -> int:
    """Count a close of the user; return abnormal closes in the window (0 if not)."""
    now = time.time()
    window = settings.WS_FREQUENT_WINDOW_SECONDS
    if shared.redis_client() is None:
        _local_reasons[username][reason] += 1
        _local_last[username] = now
        if not abnormal:
            return 0
        times = [t for t in _local_abnormal[username] if t > now - window] + [now]
        _local_abnormal[username] = times
        return len(times)
    try:
        return await _disconnects.submit((username, reason, abnormal, now))
    except _SHARED_ERRORS:
        # Shared counters are best effort; readiness reports Redis being down.
        logger.debug("record_disconnect: shared state unavailable", exc_info=True)
        return 0


async def _record_disconnects(closes: list[tuple[str, str, bool, float]]) -> list[int]:
    """Count many closes in one transaction; each one's abnormal count (0 if not)."""
    client = shared.redis_client()
    window = settings.WS_FREQUENT_WINDOW_SECONDS
    positions: list[int | None] = []
    async with client.pipeline(transaction=True) as pipe:
        for username, reason, abnormal, now in closes:
            pipe.hincrby(_k("reasons", username), reason, 1)
            pipe.expire(_k("reasons", username), METRICS_TTL_S)
            pipe.zincrby(_k("total"), 1, username)
            pipe.zadd(_k("last"), {username: now})
            if abnormal:
                ak = _k("abnormal", username)
                pipe.zadd(ak, {f"{now:.6f}": now})
                pipe.zremrangebyscore(ak, 0, now - window)
                pipe.zcard(ak)
                positions.append(len(pipe) - 1)
                pipe.expire(ak, int(window) + 1)
            else:
                positions.append(None)
        # Bounded: keep the most active / most recent users only (once per batch).
        pipe.zremrangebyrank(_k("total"), 0, -TRACKED_USERS_CAP - 1)
        pipe.zremrangebyrank(_k("last"), 0, -TRACKED_USERS_CAP - 1)
        results = await asyncio.wait_for(pipe.execute(), shared.SHARED_TIMEOUT_S)
    counts = [0 if at is None else int(results[at]) for at in positions]
    frequent = {
        username: now
        for (username, _, _, now), count in zip(closes, counts, strict=True)
        if count >= settings.WS_FREQUENT_DISCONNECTS
    }
    if frequent:
        await client.zadd(_k("frequent"), frequent)
    return counts


# A storm's closes share one MULTI/EXEC instead of one each (ops/batching.py).
_disconnects = Coalescer(_record_disconnects)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


@dataclass
class _Figures:
    totals: dict[str, int]
    reasons: dict[str, dict[str, int]]
    last: dict[str, float]
    frequent: list[str]

    def only(self, user: str) -> "_Figures":
        """The same figures restricted to one user."""
        return _Figures(
            totals={u: c for u, c in self.totals.items() if u == user},
            reasons={u: r for u, r in self.reasons.items() if u == user},
            last={u: t for u, t in self.last.items() if u == user},
            frequent=[u for u in self.frequent if u == user],
        )


def _local_figures(now: float, window: float, threshold: int) -> _Figures:
    """Embedded mode: this process's dicts."""
    return _Figures(
        totals={u: sum(r.values()) for u, r in _local_reasons.items()},
        reasons={u: dict(r) for u, r in _local_reasons.items()},
        last=dict(_local_last),
        frequent=[
            u
            for u, times in _local_abnormal.items()
            if sum(1 for t in times if t > now - window) >= threshold
        ],
    )


async def _shared_figures(
    client: aioredis.Redis, user: str | None, now: float, window: float, threshold: int
) -> _Figures:
    """The figures every instance shares, read from Redis."""
    total_pairs = await client.zrevrange(_k("total"), 0, -1, withscores=True)
    totals = {u.decode(): int(s) for u, s in total_pairs}
    names = [user] if user else list(totals)
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(_k("reasons", name))
        raw_reasons = await pipe.execute()
    reasons = {
        name: {k.decode(): int(v) for k, v in r.items()}
        for name, r in zip(names, raw_reasons, strict=True)
        if r
    }
    last = {
        u.decode(): s
        for u, s in await client.zrange(_k("last"), 0, -1, withscores=True)
    }
    frequent = []
    for raw in await client.zrangebyscore(_k("frequent"), now - window, "+inf"):
        name = raw.decode()
        count = await client.zcount(_k("abnormal", name), now - window, "+inf")
        if count >= threshold:
            frequent.append(name)
    await client.zremrangebyscore(_k("frequent"), 0, now - window)
    return _Figures(totals=totals, reasons=reasons, last=last, frequent=frequent)


async def ws_metrics(*, user: str | None = None) -> dict[str, Any]:
    """The /ws-metrics figures, identical whichever instance computes them."""
    now = time.time()
    window = settings.WS_FREQUENT_WINDOW_SECONDS
    threshold = settings.WS_FREQUENT_DISCONNECTS
    client = shared.redis_client()
    if client is None:
        found = _local_figures(now, window, threshold)
    else:
        found = await _shared_figures(client, user, now, window, threshold)
    if user:
        found = found.only(user)
    top = sorted(found.totals.items(), key=lambda item: (-item[1], item[0]))[:TOP_N]
    return {
        "total_users_tracked": len(found.totals),
        "top_disconnects": [[u, c] for u, c in top],
        "all_reasons": dict(sorted(found.reasons.items())),
        "last_disconnect": {u: _iso(t) for u, t in sorted(found.last.items())},
        "frequent_disconnectors": sorted(found.frequent),
    }


async def ws_metrics_reset() -> None:
    """Forget every shared disconnect figure."""
    client = shared.redis_client()
    if client is None:
        _local_reasons.clear()
        _local_last.clear()
        _local_abnormal.clear()
        return
    keys = [k async for k in client.scan_iter(match=_k("*"), count=1000)]
    if keys:
        await client.delete(*keys)
