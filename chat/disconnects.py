"""The ws_disconnect record (PROTOCOL.md §3): one per closed socket."""

import logging

from django.conf import settings

from chat.protocol import ABNORMAL

logger = logging.getLogger(__name__)


def log_disconnect(
    *,
    session_id: str,
    user: str,
    thread_id: str,
    code: int,
    reason: str,
    level: int,
    duration_s: float,
    frequent: bool = False,
    by_server: bool = False,
) -> None:
    """Log the close: `reason` and `level` from the table, adjusted for who closed."""
    if code == ABNORMAL and frequent:
        level = logging.WARNING
    if level >= logging.ERROR and not by_server:
        # A client sending 1011 (websockets does when its handler raises) is the
        # client's fault, never ours: PROTOCOL.md §3 says no ERROR for client closes.
        level = logging.WARNING
    logger.log(
        level,
        "ws_disconnect session_id=%s user=%s thread_id=%s code=%s reason=%s "
        "duration_s=%.3f",
        session_id,
        user,
        thread_id,
        code,
        reason,
        duration_s,
        extra={
            "event": "ws_disconnect",
            "session_id": session_id,
            "user": user,
            "thread_id": thread_id,
            "code": code,
            "reason": reason,
            "duration_s": round(duration_s, 3),
            "instance": settings.INSTANCE_ID,
            "frequent_disconnector": frequent,
            "by_server": by_server,
        },
    )
