"""Grace-period cleanup after a disconnect, scheduled on the event loop.

Not a sleep inside disconnect() (Daphne cancels the app after
--application-close-timeout) and not a thread: a loop timer per detach, cheap enough
for thousands pending. The decision is made from shared markers (presence.py), so a
reconnect on any instance cancels it.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from channels.layers import get_channel_layer
from django.conf import settings

from ops import metrics
from ops import redis_client as shared
from ops.batching import Coalescer
from ops.db import DatabaseUnavailable, db_call
from realtime import presence
from realtime.groups import thread_group
from realtime.presence import store
from sessions_app.services import (
    SocketClosed,
    session_detach_many,
    session_mark_idle_many,
)

logger = logging.getLogger(__name__)

_pending: set[asyncio.TimerHandle] = set()
_running: set[asyncio.Task] = set()


@dataclass(frozen=True)
class Detach:
    """One closed socket whose cleanup waits for the grace period."""

    session_id: str
    user: str
    thread_id: str
    marker: str

    def fields(self, event: str) -> dict:
        return {
            "event": event,
            "session_id": self.session_id,
            "user": self.user,
            "thread_id": self.thread_id,
            "instance": settings.INSTANCE_ID,
        }


def schedule(detach: Detach) -> None:
    """Log user_detach_delay_start and fire the cleanup after the grace period."""
    grace = settings.WS_CLEANUP_GRACE_SECONDS
    logger.info(
        "user_detach_delay_start session_id=%s user=%s thread_id=%s grace_s=%s",
        detach.session_id,
        detach.user,
        detach.thread_id,
        grace,
        extra={**detach.fields("user_detach_delay_start"), "grace_s": grace},
    )
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def fire() -> None:
        _pending.discard(handle)
        task = loop.create_task(run(detach))
        _running.add(task)
        task.add_done_callback(_running.discard)

    handle = loop.call_later(grace, fire)
    _pending.add(handle)


def pending_count() -> int:
    """Cleanups waiting for their grace period in this process."""
    return len(_pending) + len(_running)


metrics.PENDING_CLEANUPS.set_function(pending_count)


async def run(detach: Detach) -> None:
    """Decide from the shared markers: cancelled, or execute (idle, leave)."""
    try:
        outcome = await _finishes.submit(
            (detach.thread_id, detach.user, detach.session_id, detach.marker)
        )
    except Exception as exc:
        # Redis away: the reaper finishes this once presence has expired.
        shared.warn_shared_failure(
            logger,
            exc,
            "user_detach_deferred session_id=%s (shared state unavailable)",
            detach.session_id,
            extra=detach.fields("user_detach_deferred"),
        )
        return
    if outcome.session_executed:
        logger.info(
            "user_detach_executing session_id=%s user=%s thread_id=%s left=%s",
            detach.session_id,
            detach.user,
            detach.thread_id,
            outcome.user_left,
            extra={**detach.fields("user_detach_executing"), "left": outcome.user_left},
        )
        metrics.CLEANUPS.labels(result="executed").inc()
        # On DatabaseUnavailable (logged by the retry helper) the reaper marks it idle.
        with contextlib.suppress(DatabaseUnavailable):
            await _idles.submit(detach.session_id)
    else:
        logger.info(
            "user_detach_cancelled session_id=%s user=%s thread_id=%s",
            detach.session_id,
            detach.user,
            detach.thread_id,
            extra={
                **detach.fields("user_detach_cancelled"),
                "left": outcome.user_left,
            },
        )
        metrics.CLEANUPS.labels(result="cancelled").inc()
    if outcome.user_left:
        await broadcast_presence(detach.thread_id, leaves=[detach.user])


async def broadcast_presence(
    thread_id: str,
    *,
    joins: list[str] | None = None,
    leaves: list[str] | None = None,
    origin: str = "",
) -> None:
    """Send a presence frame to every socket of the thread, on every instance.

    `origin` is the joining socket's channel: it gets the full list instead.
    """
    try:
        await get_channel_layer().group_send(
            thread_group(thread_id),
            {
                "type": "presence",
                "thread_id": thread_id,
                "joins": joins or [],
                "leaves": leaves or [],
                "origin": origin,
            },
        )
    except Exception as exc:
        shared.warn_shared_failure(
            logger,
            exc,
            "presence_broadcast_failed thread_id=%s",
            thread_id,
            extra={"event": "presence_broadcast_failed", "thread_id": thread_id},
        )


async def socket_attached(
    *, thread_id: str, user: str, session_id: str, channel: str
) -> list[str]:
    """Enter presence; announce the user's first socket; return who is here."""
    presence.register_local(
        channel,
        presence.LocalSocket(thread_id=thread_id, user=user, session_id=session_id),
    )
    try:
        attached = await store().attach(thread_id, user, session_id, channel)
    except Exception as exc:
        # Redis away: chat still works; presence catches up on the next attach.
        shared.warn_shared_failure(
            logger,
            exc,
            "presence_attach_failed thread_id=%s user=%s",
            thread_id,
            user,
            extra={"event": "presence_attach_failed", "thread_id": thread_id},
        )
        return [user]
    if attached.joined:
        await broadcast_presence(thread_id, joins=[user], origin=channel)
    return attached.present


async def socket_detached(
    *,
    thread_id: str,
    user: str,
    session_id: str,
    channel: str,
    local_timer: bool = True,
) -> None:
    """Leave presence now and let the grace period decide (marker in Redis).

    Without a local timer (this process is shutting down) the marker alone remains:
    another instance's sweep, or `reap_sessions`, finishes the cleanup.
    """
    presence.unregister_local(channel)
    detach = Detach(session_id, user, thread_id, presence.new_marker())
    try:
        await _starts.submit((thread_id, user, session_id, channel, detach.marker))
    except Exception as exc:
        shared.warn_shared_failure(
            logger,
            exc,
            "presence_detach_failed session_id=%s (the reaper finishes it)",
            session_id,
            extra=detach.fields("presence_detach_failed"),
        )
        return
    if local_timer:
        schedule(detach)


async def record_close(closed: SocketClosed) -> None:
    """Record a socket's close in the DB (session_detach_many), batched by burst."""
    await _closes.submit(closed)


# --- one round trip per burst (a disconnect storm, a grace expiry) ------------------
# Every item keeps its own result, error and log line; only the trips are shared.


async def _start_many(items: list[tuple]) -> list:
    return await store().detach_start_many(items)


async def _finish_many(items: list[tuple]) -> list:
    return await store().detach_finish_many(items)


async def _close_many(items: list[SocketClosed]) -> list[None]:
    await db_call(session_detach_many, items, op="session_detach")
    return [None] * len(items)


async def _idle_many(session_ids: list[str]) -> list[None]:
    await db_call(session_mark_idle_many, session_ids, op="session_mark_idle")
    return [None] * len(session_ids)


_starts = Coalescer(_start_many)
_finishes = Coalescer(_finish_many)
_closes = Coalescer(_close_many)
_idles = Coalescer(_idle_many)
