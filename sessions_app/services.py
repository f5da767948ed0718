"""Writes for chat sessions and connection events."""

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.services import thread_join
from sessions_app.models import ChatSession, ConnectionEvent


class SessionForbidden(Exception):
    """The session id belongs to another user."""


@dataclass(frozen=True)
class SessionOpened:
    """The result of a socket's session setup."""

    session: ChatSession
    resumed: bool


def session_ensure(
    *, session_id: str, user: Any, thread_id: str, instance: str
) -> SessionOpened:
    """Load or create the session for a new socket; SessionForbidden if not the owner.

    Also joins the thread (ThreadForbidden for a private thread) and records the
    connect event, all in one transaction so a retry never half-applies it.
    """
    now = timezone.now()
    with transaction.atomic():
        thread = thread_join(thread_id=thread_id, user=user)
        session, created = ChatSession.objects.select_for_update().get_or_create(
            pk=session_id,
            defaults={"owner": user, "thread": thread, "last_seen_at": now},
        )
        if session.owner_id != user.pk:
            raise SessionForbidden(session_id)
        resumed = not created and session.connect_count > 0
        ChatSession.objects.filter(pk=session_id).update(
            thread=thread,
            status=ChatSession.Status.ACTIVE,
            last_seen_at=now,
            connect_count=F("connect_count") + 1,
            resumed_count=F("resumed_count") + (1 if resumed else 0),
        )
        session.refresh_from_db()
        ConnectionEvent.objects.create(
            session=session,
            session_key=session_id,
            user=user,
            thread_key=thread_id,
            kind=ConnectionEvent.Kind.CONNECT,
            instance=instance,
        )
    return SessionOpened(session=session, resumed=resumed)


def session_detach(
    *,
    session_id: str,
    user: Any,
    thread_id: str,
    code: int,
    reason: str,
    duration_s: float,
    instance: str,
) -> None:
    """Record a socket's close (last seen, ConnectionEvent).

    The session's status is not touched here: the grace-period cleanup marks it idle
    once no socket of it came back on any instance (sessions_app/cleanup.py).
    """
    authenticated = getattr(user, "is_authenticated", False)
    owned = (
        ChatSession.objects.filter(pk=session_id, owner=user)
        if authenticated
        else ChatSession.objects.none()
    )
    with transaction.atomic():
        owned.update(last_seen_at=timezone.now())
        ConnectionEvent.objects.create(
            session=owned.first(),
            session_key=session_id[:64],
            user=user if authenticated else None,
            thread_key=thread_id[:64],
            kind=ConnectionEvent.Kind.DISCONNECT,
            code=code,
            reason=reason,
            duration_s=duration_s,
            instance=instance[:128],
        )


def session_mark_idle(*, session_id: str) -> bool:
    """Mark an active session idle once its cleanup has run; True if it changed."""
    changed = ChatSession.objects.filter(
        pk=session_id, status=ChatSession.Status.ACTIVE
    ).update(status=ChatSession.Status.IDLE, last_seen_at=timezone.now())
    return bool(changed)
