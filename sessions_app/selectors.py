"""Reads for chat sessions and connection events."""

from sessions_app.models import ChatSession


def active_session_ids(*, limit: int = 100_000) -> list[str]:
    """Ids of sessions marked active (candidates for the reaper)."""
    return list(
        ChatSession.objects.filter(status=ChatSession.Status.ACTIVE)
        .order_by("last_seen_at")
        .values_list("id", flat=True)[:limit]
    )
