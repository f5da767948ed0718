"""Typing indicators: throttled per user and thread, forwarded, never stored."""

import logging
import time

from channels.layers import BaseChannelLayer

from ops.redis_client import REDIS_DOWN, key, redis_client, warn_shared_failure
from realtime.groups import thread_group

logger = logging.getLogger(__name__)

TYPING_EVENT = "chat.typing"  # a channel-layer event, handled by ChatConsumer
THROTTLE_MS = 2000  # at most one forwarded per user per thread in this window
_local: dict[tuple[str, str], float] = {}  # embedded mode only: the whole truth


def _local_claim(thread_id: str, username: str, now: float) -> bool:
    """The process-local throttle (no Redis): whether this one may pass."""
    if len(_local) > 10_000:  # drop expired entries so the dict stays small
        for stale in [k for k, until in _local.items() if until <= now]:
            del _local[stale]
    until = _local.get((thread_id, username), 0.0)
    if until > now:
        return False
    _local[(thread_id, username)] = now + THROTTLE_MS / 1000
    return True


async def typing_claim(*, thread_id: str, username: str) -> bool:
    """Whether this typing frame opens its window (shared across instances)."""
    client = redis_client()
    if client is None:
        return _local_claim(thread_id, username, time.monotonic())
    name = key("typing", thread_id, username)
    try:
        return bool(await client.set(name, "1", nx=True, px=THROTTLE_MS))
    except REDIS_DOWN as exc:
        # An indicator is best effort: drop it, the socket stays open.
        warn_shared_failure(
            logger, exc, "typing_throttle_failed", extra={"event": "typing_failed"}
        )
        return False


async def typing_forward(
    *, layer: BaseChannelLayer, thread_id: str, username: str
) -> bool:
    """Send the user's typing to the thread's sockets unless throttled; whether sent."""
    if not await typing_claim(thread_id=thread_id, username=username):
        return False
    event = {"type": TYPING_EVENT, "thread_id": thread_id, "user": username}
    await layer.group_send(thread_group(thread_id), event)
    return True


def typing_frame(event: dict) -> dict:
    """The `typing` frame a socket sends for a forwarded event."""
    return {"type": "typing", "thread_id": event["thread_id"], "user": event["user"]}
