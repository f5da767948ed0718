"""Writes for chat sessions and connection events."""

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from chat.selectors import Replay, replay_window
from chat.services import thread_join
from sessions_app.models import ChatSession, ConnectionEvent


class SessionForbidden(Exception):
    """The session id belongs to another user."""


@dataclass(frozen=True)
class SessionOpened:
    """The result of a socket's session setup (and its replay, see session_open)."""

    session: ChatSession
    resumed: bool
    replay: Replay | None = None


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
            defaults={
                "owner": user,
                "thread": thread,
                "status": ChatSession.Status.ACTIVE,
                "last_seen_at": now,
                "connect_count": 1,
            },
        )
        if session.owner_id != user.pk:
            raise SessionForbidden(session_id)
        resumed = not created and session.connect_count > 0
        if not created:
            # The row is locked (FOR UPDATE): plain values are safe, and the saved
            # object needs no refresh (two statements fewer per connect, issue 6).
            session.thread = thread
            session.status = ChatSession.Status.ACTIVE
            session.last_seen_at = now
            session.connect_count += 1
            session.resumed_count += 1 if resumed else 0
            session.save(
                update_fields=[
                    "thread",
                    "status",
                    "last_seen_at",
                    "connect_count",
                    "resumed_count",
                ]
            )
        ConnectionEvent.objects.create(
            session=session,
            session_key=session_id,
            user=user,
            thread_key=thread_id,
            kind=ConnectionEvent.Kind.CONNECT,
            instance=instance,
        )
    return SessionOpened(session=session, resumed=resumed)


def session_open(
    *,
    session_id: str,
    user: Any,
    thread_id: str,
    instance: str,
    after_seq: int | None,
    max_replay: int,
) -> SessionOpened:
    """session_ensure, then the replay window: a socket's whole DB work at connect.

    One db_call (one thread hop, one pooled connection) instead of two. The replay
    is read after the session commits; the caller joined the thread's group before,
    so nothing committed in between is missed (seq dedups the overlap).
    """
    opened = session_ensure(
        session_id=session_id, user=user, thread_id=thread_id, instance=instance
    )
    replay = replay_window(
        thread_id=thread_id, after_seq=after_seq, max_replay=max_replay
    )
    return SessionOpened(session=opened.session, resumed=opened.resumed, replay=replay)


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
    session_detach_many(
        [
            SocketClosed(
                session_id=session_id,
                user=user,
                thread_id=thread_id,
                code=code,
                reason=reason,
                duration_s=duration_s,
                instance=instance,
            )
        ]
    )


@dataclass(frozen=True)
class SocketClosed:
    """One closed socket, as session_detach records it."""

    session_id: str
    user: Any
    thread_id: str
    code: int
    reason: str
    duration_s: float
    instance: str


def session_detach_many(closed: list[SocketClosed]) -> None:
    """session_detach for many sockets in one transaction of three statements."""
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


def session_mark_idle(*, session_id: str) -> bool:
    """Mark an active session idle once its cleanup has run; True if it changed."""
    changed = ChatSession.objects.filter(
        pk=session_id, status=ChatSession.Status.ACTIVE
    ).update(status=ChatSession.Status.IDLE, last_seen_at=timezone.now())
    return bool(changed)


def session_mark_idle_many(session_ids: list[str]) -> int:
    """session_mark_idle for many sessions in one statement; how many changed."""
    return ChatSession.objects.filter(
        pk__in=set(session_ids), status=ChatSession.Status.ACTIVE
    ).update(status=ChatSession.Status.IDLE, last_seen_at=timezone.now())
