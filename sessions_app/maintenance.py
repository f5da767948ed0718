"""Housekeeping of chat sessions and connection events (purge_sessions, prune_events).

Deletes run in batches, each its own short transaction through the retry helper, so
a large backlog neither holds locks for long nor restarts from zero after a blip.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q, QuerySet

from ops.db import db_call_sync
from sessions_app.models import ChatSession, ConnectionEvent

BATCH_SIZE = 1000
PURGEABLE_STATUSES = (ChatSession.Status.IDLE, ChatSession.Status.CLOSED)


@dataclass(frozen=True)
class PurgeCount:
    """Sessions and connection events deleted (or that a dry run would delete)."""

    sessions: int
    events: int


def purgeable_sessions(*, idle_before: datetime) -> QuerySet[ChatSession]:
    """Idle or closed sessions last seen before the cutoff; active ones never."""
    return ChatSession.objects.filter(
        status__in=PURGEABLE_STATUSES, last_seen_at__lt=idle_before
    )


def _events_of(session_ids) -> QuerySet[ConnectionEvent]:
    # session_key names the session even where the FK is empty (refused sockets).
    return ConnectionEvent.objects.filter(
        Q(session_id__in=session_ids) | Q(session_key__in=session_ids)
    )


def session_purge_count(*, idle_before: datetime) -> PurgeCount:
    """What session_purge would delete now (the dry run)."""
    ids = purgeable_sessions(idle_before=idle_before).values("pk")
    return PurgeCount(
        sessions=purgeable_sessions(idle_before=idle_before).count(),
        events=_events_of(ids).count(),
    )


def _purge_batch(*, idle_before: datetime, batch_size: int) -> PurgeCount:
    with transaction.atomic():
        # Locked, so a reconnect cannot revive a session between the read and the
        # delete; rows another transaction holds are left for the next run.
        ids = list(
            purgeable_sessions(idle_before=idle_before)
            .select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return PurgeCount(sessions=0, events=0)
        events, _ = _events_of(ids).delete()
        _, per_model = ChatSession.objects.filter(pk__in=ids).delete()
    return PurgeCount(sessions=per_model.get(ChatSession._meta.label, 0), events=events)


def session_purge(*, idle_before: datetime, batch_size: int = BATCH_SIZE) -> PurgeCount:
    """Delete idle/closed sessions last seen before the cutoff, and their events."""
    sessions = events = 0
    while True:
        batch = db_call_sync(
            _purge_batch,
            idle_before=idle_before,
            batch_size=batch_size,
            op="session_purge",
        )
        sessions += batch.sessions
        events += batch.events
        if batch.sessions < batch_size:
            return PurgeCount(sessions=sessions, events=events)


def connection_event_prune_count(*, created_before: datetime) -> int:
    """How many connection events connection_event_prune would delete now."""
    return ConnectionEvent.objects.filter(created_at__lt=created_before).count()


def _prune_batch(*, created_before: datetime, batch_size: int) -> int:
    ids = list(
        ConnectionEvent.objects.filter(created_at__lt=created_before)
        .order_by("pk")
        .values_list("pk", flat=True)[:batch_size]
    )
    if not ids:
        return 0
    deleted, _ = ConnectionEvent.objects.filter(pk__in=ids).delete()
    return deleted


def connection_event_prune(
    *, created_before: datetime, batch_size: int = BATCH_SIZE
) -> int:
    """Delete connection events created before the cutoff; return how many."""
    total = 0
    while True:
        deleted = db_call_sync(
            _prune_batch,
            created_before=created_before,
            batch_size=batch_size,
            op="connection_event_prune",
        )
        total += deleted
        if deleted < batch_size:
            return total
