"""Finish the cleanups of instances that died: active sessions, stale presence."""

import asyncio
import logging
from dataclasses import dataclass, field

from django.conf import settings

from ops.db import db_call
from ops.redis_client import warn_shared_failure
from realtime.presence import store
from sessions_app.cleanup import broadcast_presence
from sessions_app.selectors import active_session_ids
from sessions_app.services import session_mark_idle_many

logger = logging.getLogger(__name__)

REAP_CHUNK = 500


@dataclass
class ReapResult:
    """What a sweep did (or, with dry_run, would do)."""

    sessions_idled: list[str] = field(default_factory=list)
    presence_left: list[tuple[str, str]] = field(default_factory=list)


async def reap(*, dry_run: bool = False) -> ReapResult:
    """Mark active sessions idle whose sockets are gone; broadcast leaves owed."""
    result = ReapResult()
    presence = store()
    result.presence_left = await presence.reap_users(dry_run=dry_run)
    for thread_id, user in result.presence_left:
        if not dry_run:
            await broadcast_presence(thread_id, leaves=[user])
    session_ids = await db_call(active_session_ids, op="active_session_ids")
    # In chunks: every active session (live sockets' too) is checked on each sweep,
    # so a trip per session would be thousands of round trips every interval.
    for at in range(0, len(session_ids), REAP_CHUNK):
        chunk = session_ids[at : at + REAP_CHUNK]
        reapable = await presence.sessions_reapable(chunk, dry_run=dry_run)
        idled = [s for s, ok in zip(chunk, reapable, strict=True) if ok]
        result.sessions_idled.extend(idled)
        if idled and not dry_run:
            await db_call(session_mark_idle_many, idled, op="reap_idle")
    if not dry_run and (result.sessions_idled or result.presence_left):
        logger.info(
            "sessions_reaped sessions=%d presence_leaves=%d",
            len(result.sessions_idled),
            len(result.presence_left),
            extra={
                "event": "sessions_reaped",
                "sessions": len(result.sessions_idled),
                "presence_leaves": len(result.presence_left),
            },
        )
    return result


_sweeper: "asyncio.Task | None" = None


def ensure_sweeper() -> None:
    """Start this process's periodic sweep if REAPER_INTERVAL_SECONDS is set."""
    global _sweeper
    interval = settings.REAPER_INTERVAL_SECONDS
    if interval <= 0 or (_sweeper is not None and not _sweeper.done()):
        return
    _sweeper = asyncio.get_running_loop().create_task(_sweep_forever(interval))


async def _sweep_forever(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await reap()
        except Exception as exc:
            warn_shared_failure(
                logger,
                exc,
                "reaper_sweep_failed",
                extra={"event": "reaper_sweep_failed"},
            )
