"""A socket's share of its user's limits (PROTOCOL.md §2, limits per user)."""

import contextlib
import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache

from ops.redis_client import REDIS_DOWN
from realtime import limits

logger = logging.getLogger(__name__)


class UserLimits:
    """Counts one socket against its user's open sockets and shared frame rate."""

    def __init__(self) -> None:
        self.user = ""
        self.channel = ""

    async def open(self, user: str, channel: str) -> bool:
        """Count this socket; False when the user holds the maximum already."""
        if not await limits.socket_open(user, channel):
            return False
        self.user, self.channel = user, channel
        return True

    async def close(self) -> None:
        """Stop counting this socket (once; an entry Redis misses lapses by TTL)."""
        if not self.user:
            return
        user, self.user = self.user, ""
        with contextlib.suppress(*REDIS_DOWN):
            await limits.socket_closed(user, self.channel)

    async def frame_allowed(self) -> bool:
        """One of the user's frame tokens, shared by all of their sockets."""
        return not self.user or await limits.frame_allowed(self.user)


# New threads per user: a fixed window of an hour in the Django cache (Redis, shared
# by the instances; local memory in the embedded mode).
THREAD_WINDOW_S = 3600


def _thread_key(user: Any, window: int) -> str:
    return f"threads-created:{user.pk}:{window}"


def thread_quota_take(user: Any) -> int:
    """Count a new thread of `user`: 0, or seconds until they may create one."""
    now = time.time()
    window = int(now // THREAD_WINDOW_S)
    key = _thread_key(user, window)
    try:
        cache.add(key, 0, THREAD_WINDOW_S)
        count = cache.incr(key)
    except Exception as exc:  # the cache away: never refuse for it (readiness says)
        logger.warning(
            "thread_quota_unavailable error=%s",
            exc,
            extra={"event": "thread_quota_unavailable"},
        )
        return 0
    if count <= settings.THREAD_CREATE_LIMIT:
        return 0
    return max(1, int(THREAD_WINDOW_S - now % THREAD_WINDOW_S))


def thread_quota_refund(user: Any) -> None:
    """Give back a count taken for a thread that was not created after all."""
    key = _thread_key(user, int(time.time() // THREAD_WINDOW_S))
    with contextlib.suppress(Exception):
        cache.decr(key)
