"""Writes for chat sessions and connection events."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app.models import ChatSession, ConnectionEvent


class SessionForbidden(Exception):
    """The session id belongs to another user."""


@dataclass(frozen=True)
class SessionOpened:
    """A socket's session, and whether it was seen before (resumed)."""

    session: ChatSession
    resumed: bool


def session_ensure(
    *, session_id: str, user: Any, thread_id: str, instance: str
) -> SessionOpened:
    """Load or create the session for a new socket; SessionForbidden if not the owner.

    Also records the connect event, in the same transaction as the session (the
    caller's, when it has one open), so a retry never half-applies it.
    """
    now = timezone.now()
    # No savepoint inside the caller's transaction: it would cost two statements per
    # connect. So nothing in here raises on purpose: SessionForbidden is raised after
    # the block, when nothing was written, and the caller's transaction stays usable.
    with transaction.atomic(savepoint=False):
        session, created = ChatSession.objects.select_for_update().get_or_create(
            pk=session_id,
            defaults={
                "owner": user,
                "thread_key": thread_id,
                "status": ChatSession.Status.ACTIVE,
                "last_seen_at": now,
                "connect_count": 1,
            },
        )
        owned = session.owner_id == user.pk
        if owned:
            resumed = _connected(session, created=created, thread_id=thread_id, now=now)
            ConnectionEvent.objects.create(
                session=session,
                session_key=session_id,
                user=user,
                thread_key=thread_id,
                kind=ConnectionEvent.Kind.CONNECT,
                instance=instance,
            )
    if not owned:
        raise SessionForbidden(session_id)
    return SessionOpened(session=session, resumed=resumed)


def _connected(
    session: ChatSession, *, created: bool, thread_id: str, now: datetime
) -> bool:
    """Count a connect on an owned, locked session; whether it resumes the session."""
    if created:
        return False
    resumed = session.connect_count > 0
    # The row is locked (FOR UPDATE): plain values are safe, and the saved object
    # needs no refresh (two statements fewer per connect).
    session.thread_key = thread_id
    session.status = ChatSession.Status.ACTIVE
    session.last_seen_at = now
    session.connect_count += 1
    session.resumed_count += 1 if resumed else 0
    session.save(
        update_fields=[
            "thread_key",
            "status",
            "last_seen_at",
            "connect_count",
            "resumed_count",
        ]
    )
    return resumed


@dataclass(frozen=True)
class SocketClosed:
    """One closed socket, as session_detach_many records it."""

    session_id: str
    user: Any
    thread_id: str
    code: int
    reason: str
    duration_s: float
    instance: str


def session_detach_many(closed: list[SocketClosed]) -> None:
    """Record sockets' closes (last seen, ConnectionEvent) in three statements.

    The sessions' status is not touched here: the grace-period cleanup marks one idle
    once no socket of it came back on any instance (sessions_app/cleanup.py).
    """
    now = timezone.now()
    with transaction.atomic():
        wanted = {
            c.session_id for c in closed if getattr(c.user, "is_authenticated", False)
        }
        owners = dict(
            ChatSession.objects.filter(pk__in=wanted).values_list("pk", "owner_id")
        )

        def owned(c: SocketClosed) -> bool:
            user_pk = getattr(c.user, "pk", None)
            return user_pk is not None and owners.get(c.session_id) == user_pk

        ChatSession.objects.filter(
            pk__in={c.session_id for c in closed if owned(c)}
        ).update(last_seen_at=now)
        ConnectionEvent.objects.bulk_create(
            ConnectionEvent(
                session_id=c.session_id if owned(c) else None,
                session_key=c.session_id[:64],
                user=c.user if getattr(c.user, "is_authenticated", False) else None,
                thread_key=c.thread_id[:64],
                kind=ConnectionEvent.Kind.DISCONNECT,
                code=c.code,
                reason=c.reason,
                duration_s=c.duration_s,
                instance=c.instance[:128],
            )
            for c in closed
        )


def session_mark_idle_many(session_ids: list[str]) -> int:
    """Mark active sessions idle after their cleanup, in one statement; how many."""
    return ChatSession.objects.filter(
        pk__in=set(session_ids), status=ChatSession.Status.ACTIVE
    ).update(status=ChatSession.Status.IDLE, last_seen_at=timezone.now())
